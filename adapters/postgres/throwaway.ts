import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../../config/config.js';
import { ConfigError, ThrowawayFailedError } from '../../core/errors.js';
import { postgresCommand } from './command.js';
import { awaitCommand, probeCommand, runCommand, startCommand, stderrTail, stopCommand, throwIfCancelled, withHeartbeats, type Subprocess } from '../commands/run-command.js';
import type { PostgresTarget } from '../../core/types.js';
import { type DrillResult, type RowCounts, type TableDigests } from '../../core/reports.js';
import { formatBytes } from '../../core/format.js';
import { TableDigester } from './table-digests.js';

// The drill's throwaway PostgreSQL (initdb from the host's binaries on a Unix socket only, in a
// network namespace with no network when root; or a container without network reached only
// through `docker exec`), and the queries that count and re-dump what it holds.

const IMMICH_VERSION_FORMAT = /^\d+\.\d+\.\d+$/;

// Immich records every version it ran in its own database.
const IMMICH_VERSION = 'SELECT version FROM version_history ORDER BY "createdAt" DESC LIMIT 1';

/** The newest version in Immich's version_history, without a leading v; undefined where there is none. */
export async function immichVersion(psql: Psql, database: string): Promise<string | undefined> {
  const out = await psql(database, IMMICH_VERSION).catch(() => '');
  const version = out.trim().replace(/^v/, '');
  return IMMICH_VERSION_FORMAT.test(version) ? version : undefined;
}

const DATABASES = 'SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1';
// Ordinary tables outside the catalogs, named "schema.table" with quote_ident's quoting.
const TABLES = `FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1`;
// Each one's name, and whether it belongs to an extension (its data is the extension's to dump, in part or not at all).
const TABLE_NAMES = `SELECT format('%I.%I', n.nspname, c.relname),
  EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
${TABLES}`;
// Exact counts (statistics are estimates), one query per database.
const TABLE_COUNTS = `SELECT format('%I.%I', n.nspname, c.relname),
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
${TABLES}`;

export type Psql = (database: string, sql: string) => Promise<string>;

const databasesOf = async (psql: Psql) => (await psql('postgres', DATABASES)).split('\n').map((l) => l.trim()).filter(Boolean);

/** Each table's exact row count (count(*)) in one database, into `counts`. */
async function countTables(psql: Psql, db: string, counts: RowCounts): Promise<void> {
  for (const line of (await psql(db, TABLE_COUNTS)).split('\n')) {
    const [table, count] = line.split('\t');
    if (table && count !== undefined) counts[`${db}: ${table}`] = Number(count);
  }
}

/** Every table's exact row count in every database that accepts connections. */
export async function countRows(psql: Psql): Promise<RowCounts> {
  const counts: RowCounts = {};
  for (const db of await databasesOf(psql)) await countTables(psql, db, counts);
  return counts;
}

/**
 * Every table's row count, as countRows gives it, taken from a pg_dumpall of the same cluster
 * (`dumped`: TableDigester's counts, each table's COPY lines) where the dump holds every table of
 * a database; a database with a table that belongs to an extension (whose data pg_dump leaves out,
 * or dumps in part: pg_extension_config_dump's filter) or one the dump lacks is counted with
 * count(*). Otherwise only the catalog is read: no table is scanned a second time.
 */
export async function countRowsFromDump(psql: Psql, dumped: RowCounts): Promise<RowCounts> {
  const counts: RowCounts = {};
  for (const db of await databasesOf(psql)) {
    const rows = (await psql(db, TABLE_NAMES)).split('\n').filter(Boolean).map((line) => line.split('\t'));
    const tables = rows.map(([name]) => `${db}: ${name}`);
    if (rows.every(([, extension]) => extension === 'f') && tables.every((t) => t in dumped)) for (const t of tables) counts[t] = dumped[t]!;
    else await countTables(psql, db, counts);
  }
  return counts;
}

export const psqlQueryArgs = (user: string, database: string, sql: string) => ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', database, '-c', sql];

/** The host's PostgreSQL server binaries: drill.binDir, postgres.binDir, the newest Debian /usr/lib/postgresql/N/bin, else PATH. */
export function hostPostgresBinDir(config: Config): string | undefined {
  const candidates = [config.drill.binDir, config.postgres.binDir];
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    for (const v of readdirSync(base).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a))) candidates.push(join(base, v, 'bin'));
  }
  for (const dir of (process.env.PATH ?? '').split(':')) candidates.push(dir);
  return candidates.find((dir): dir is string => !!dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres')) && existsSync(join(dir, 'psql')));
}

/** A PostgreSQL server that exists for one drill: queried, loaded, then removed. */
export interface Throwaway {
  engine: DrillResult['engine'];
  /** Where it runs, for messages: "127.0.0.1:PORT, initdb from BINDIR" or "container NAME (IMAGE)". */
  where: string;
  query: (database: string, sql: string) => Promise<string>;
  /** psql reading SQL from stdin into the `postgres` database, with ON_ERROR_STOP (see loadDump's `reportStop`). */
  loader: { file: string; args: string[]; env: Record<string, string> };
  /** pg_dumpall of the whole throwaway cluster to stdout. */
  dumper: { file: string; args: string[]; env: Record<string, string> };
  remove(): Promise<void>;
}

async function waitUntilReady(probe: () => Promise<boolean>, gone: () => Promise<string | undefined>, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const exited = await gone();
    if (exited !== undefined) throw new ThrowawayFailedError(`the throwaway PostgreSQL (${what}) stopped before it accepted connections (its log: ${exited}): fix what the log names (drill.binDir, drill.runAs, space in drill.workDir), then run the drill again`);
    if (await probe()) return;
    if (Date.now() > deadline) throw new ThrowawayFailedError(`the throwaway PostgreSQL (${what}) did not accept connections within 120 s: expected pg_isready to answer; check the host's load and the drill's work directory`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * initdb from the host's binaries into a private temporary directory; as root, everything (initdb,
 * the server, psql, pg_isready, pg_dumpall) runs as drill.runAs, each in a network namespace of its
 * own with no network (not even a loopback that is up). The server listens on no TCP port at all:
 * only on a Unix socket inside that directory (mode 0700, owned by runAs), which its clients reach
 * across namespaces through the file system. So no other local user can reach the restored photo
 * database, and what a dump could run on the server runs as an unprivileged user that reaches
 * neither Temporal, the NAS nor the internet.
 */
export async function hostThrowaway(config: Config, bin: string): Promise<Throwaway> {
  const user = config.postgres.user;
  const runAs = process.getuid?.() === 0 ? config.drill.runAs : undefined;
  const ids = runAs ? await Promise.all(['-u', '-g'].map(async (flag) => Number((await runCommand('id', [flag, runAs], { label: `id ${flag} (drill.runAs)`, progress: false })).stdout))) : undefined;
  if (ids && ids[0] === 0) throw new ConfigError(`drill.runAs ${runAs} is root: the throwaway PostgreSQL must run as an unprivileged user`);
  const base = await mkdtemp(join(config.drill.workDir ?? tmpdir(), 'immich-backup-drill-'));
  // As root, every process of the throwaway: `unshare --net -- setpriv --reuid … -- postgres …`. Neither
  // forks (each execs the next), so the pid started is the program's own and a signal reaches it.
  // A client runs so too: the socket directory admits only runAs, and the socket works across namespaces.
  const as = (file: string, args: string[]) =>
    ids ? { file: 'unshare', args: ['--net', '--', 'setpriv', `--reuid=${ids[0]!}`, `--regid=${ids[1]!}`, '--clear-groups', '--', file, ...args] } : { file, args };
  let server: Subprocess | undefined;
  const remove = async () => {
    if (server && server.exitCode === null) {
      const running = server;
      stopCommand(running, 'SIGINT'); // fast shutdown
      const timer = setTimeout(() => stopCommand(running, 'SIGKILL'), 30_000);
      await server;
      clearTimeout(timer);
    }
    await rm(base, { recursive: true, force: true });
  };
  try {
    await chmod(base, 0o700);
    if (ids) await chown(base, ids[0]!, ids[1]!);
    const data = join(base, 'data');
    const initdb = as(join(bin, 'initdb'), ['-D', data, '-U', user, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
    await runCommand(initdb.file, initdb.args, { label: 'initdb (drill)', cwd: base, progress: false });
    const settings = ["listen_addresses=", 'unix_socket_permissions=0700', 'fsync=off', 'full_page_writes=off', 'synchronous_commit=off'].flatMap((c) => ['-c', c]);
    const postgres = as(join(bin, 'postgres'), ['-D', data, '-p', '5432', '-k', base, ...settings]);
    server = startCommand(postgres.file, postgres.args, { label: 'postgres (drill)', cwd: base, stdout: 'ignore', server: true });
    const running = server;
    const env = { PGHOST: base, PGPORT: '5432', PGUSER: user };
    const where = `Unix socket in ${base} only (no TCP), running as ${runAs ? `${runAs} with no network` : 'this user'}, initdb from ${bin}`;
    await waitUntilReady(
      async () => {
        const ready = as(join(bin, 'pg_isready'), ['-q', '-h', base, '-p', '5432']);
        return (await probeCommand(ready.file, ready.args, { label: 'pg_isready (drill)', env, cwd: base })).exitCode === 0;
      },
      async () => (running.exitCode !== null ? stderrTail((await running).stderr) : undefined),
      where,
    );
    const loader = as(join(bin, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', base, '-p', '5432', '-U', user, '-d', 'postgres']);
    const dumper = as(join(bin, 'pg_dumpall'), ['-h', base, '-p', '5432', '-U', user]);
    return {
      engine: 'host',
      where,
      query: async (database, sql) => {
        const q = as(join(bin, 'psql'), ['-h', base, '-p', '5432', ...psqlQueryArgs(user, database, sql)]);
        return (await runCommand(q.file, q.args, { label: 'psql (drill)', env })).stdout;
      },
      loader: { ...loader, env },
      dumper: { ...dumper, env },
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}

/** A container of the live database's image (or drill.image), reached only through `docker exec`; nothing published, no network. */
export async function containerThrowaway(config: Config, live: () => Promise<PostgresTarget>, name: string): Promise<Throwaway> {
  const docker = config.docker.command;
  const user = config.postgres.user;
  let image = config.drill.image;
  if (!image) {
    const target = await live();
    if (target.runtime !== 'docker') throw new ConfigError('drill.engine container needs drill.image when postgres.runtime is none');
    image = (await runCommand(docker, ['inspect', '--format', '{{.Config.Image}}', target.container], { label: `${docker} inspect` })).stdout.trim();
  }
  // A retry after a lost worker finds its predecessor's throwaway under the same name: remove it first.
  await runCommand(docker, ['rm', '-f', name], { label: `${docker} rm` }).catch(() => undefined);
  // The image's init server listens on its socket only; the real one also on 127.0.0.1 inside the
  // container, whose own loopback is all --network none leaves it: what a dump runs reaches no network.
  await runCommand(docker, ['run', '-d', '--rm', '--name', name, '--network', 'none', '-e', `POSTGRES_USER=${user}`, '-e', 'POSTGRES_HOST_AUTH_METHOD=trust', image], { label: `${docker} run` });
  const remove = async () => {
    await runCommand(docker, ['rm', '-f', name], { label: `${docker} rm` }).catch(() => undefined);
  };
  const where = `container ${name} (${image})`;
  const target: PostgresTarget = { runtime: 'docker', container: name };
  const local = { ...config, postgres: { ...config.postgres, password: undefined } };
  const command = (args: string[]) => postgresCommand(local, target, 'psql', ['-h', '127.0.0.1', ...args]);
  try {
    await waitUntilReady(
      async () => {
        const ready = postgresCommand(local, target, 'pg_isready', ['-q', '-h', '127.0.0.1', '-U', user]);
        return (await probeCommand(ready.file, ready.args, { label: 'pg_isready (drill)', env: ready.env })).exitCode === 0;
      },
      async () => {
        const r = await probeCommand(docker, ['inspect', '--format', '{{.State.Running}}', name], { label: `${docker} inspect` });
        return r.exitCode === 0 && r.stdout.trim() === 'true' ? undefined : r.stderr.trim() || 'the container is not running';
      },
      where,
    );
    return {
      engine: 'container',
      where,
      query: async (database, sql) => {
        const c = command(psqlQueryArgs(user, database, sql));
        return (await runCommand(c.file, c.args, { label: 'psql (drill)', env: c.env })).stdout;
      },
      loader: command(['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', 'postgres']),
      dumper: postgresCommand(local, target, 'pg_dumpall', ['-h', '127.0.0.1', '-U', user]),
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}

/** The throwaway's whole cluster through pg_dumpall and the dump's digester: each table's data digest and row count. */
export async function redumpDigests(server: Throwaway): Promise<{ digests: TableDigests; rows: RowCounts }> {
  const label = 'pg_dumpall (drill re-dump)';
  const digester = new TableDigester();
  const child = startCommand(server.dumper.file, server.dumper.args, { label, env: server.dumper.env, stdout: 'stream' });
  const step = () => ({ step: "drill: re-dumping the throwaway to compare each table's data", read: formatBytes(digester.bytes) });
  const [dumped, digested] = await withHeartbeats(Promise.allSettled([awaitCommand(child, label), pipeline(child.stdout!, digester)]), step);
  throwIfCancelled();
  if (dumped.status === 'rejected' || digested.status === 'rejected') {
    stopCommand(child);
    throw dumped.status === 'rejected' ? dumped.reason : (digested as PromiseRejectedResult).reason;
  }
  return { digests: digester.digests(), rows: digester.rowCounts() };
}

