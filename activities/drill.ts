import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../config/config.js';
import { partialFileName, RESTORE_POINTS_DIR, rowCountsFileName } from '../core/dump-names.js';
import { CommandNotFoundError, ConfigError, DigestsMissingError, DumpNotFoundError, ThrowawayFailedError } from '../core/errors.js';
import { corruptDump, privateCopy } from '../adapters/files/checksums.js';
import { isCorruptStreamError } from '../adapters/commands/compression.js';
import { createContainerActivities } from './container.js';
import { postgresCommand } from '../adapters/postgres/command.js';
import type { ActivityDeps } from './deps.js';
import { writeFileAtomic } from '../adapters/files/fs-safe.js';
import { readKey, tagRows } from '../adapters/files/provenance.js';
import { authenticDumps, authenticRows, latestUsable, shrinkOf } from '../adapters/files/trusted-dumps.js';
import { LOADING_DIR, loadDump } from './restore.js';
import { awaitCommand, probeCommand, runCommand, startCommand, stderrTail, stopCommand, throwIfCancelled, withHeartbeats, type Subprocess } from '../adapters/commands/run-command.js';
import type { DumpKind, PostgresTarget } from '../core/types.js';
import { compareRowCounts, CONTENT_DIGESTS_MISSING, CONTENT_NOT_COMPARED, MAX_CONTENT_DIFFERENCES, type DrillResult, type RowCounts, type TableDigests } from '../core/reports.js';
import { formatBytes } from '../core/format.js';
import { compareDigests, digestsFileName, readDigestsFile, removeDigestsFile, TableDigester } from '../adapters/postgres/table-digests.js';

// The restore drill: proof that the newest dump restores. NightlyDbBackup records each table's
// row count beside the dump, and a digest of each table's data taken from the dump's own stream;
// RestoreDrill loads the dump into a throwaway cluster (initdb from the host's PostgreSQL
// binaries, on a Unix socket only, never the live server), counts again, re-dumps it through the
// same digester, compares table by table, and removes the cluster.

export interface RecordedRowCounts {
  file: string;
  recordedAt: string;
  tables: RowCounts;
  /** The Immich version the database was at (its version_history), when it has one. */
  immichVersion?: string;
  /** Set when the counts dropped sharply against the previous dump: the dump is kept but never "latest". */
  shrink?: string;
  /** Each table's data digest, from the dump's own stream as it was written (activities/table-digests.ts). */
  digests?: TableDigests;
  /** Always true now: the dump activity took digests, so a record without them is a loss, not an old dump. */
  digestsExpected: true;
}

const IMMICH_VERSION_FORMAT = /^\d+\.\d+\.\d+$/;

// Immich records every version it ran in its own database.
const IMMICH_VERSION = 'SELECT version FROM version_history ORDER BY "createdAt" DESC LIMIT 1';

/** The newest version in Immich's version_history, without a leading v; undefined where there is none. */
export async function immichVersion(psql: Psql, database: string): Promise<string | undefined> {
  const out = await psql(database, IMMICH_VERSION).catch(() => '');
  const version = out.trim().replace(/^v/, '');
  return IMMICH_VERSION_FORMAT.test(version) ? version : undefined;
}

/** Load errors kept in the report (it lives in workflow history); all are counted. */
const MAX_LOAD_ERRORS = 20;

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

type Psql = (database: string, sql: string) => Promise<string>;

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

const psqlQueryArgs = (user: string, database: string, sql: string) => ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', database, '-c', sql];

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
  /** psql reading SQL from stdin into the `postgres` database, without ON_ERROR_STOP. */
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
 * initdb from the host's binaries into a private temporary directory; as root, everything (server,
 * psql, pg_isready) runs as drill.runAs. The server listens on no TCP port at all: only on a Unix
 * socket inside that directory (mode 0700, owned by runAs), so no other local user can reach the
 * restored photo database, and what a dump could run on the server runs as an unprivileged user.
 */
export async function hostThrowaway(config: Config, bin: string): Promise<Throwaway> {
  const user = config.postgres.user;
  const runAs = process.getuid?.() === 0 ? config.drill.runAs : undefined;
  const ids = runAs ? await Promise.all(['-u', '-g'].map(async (flag) => Number((await runCommand('id', [flag, runAs], { label: `id ${flag} (drill.runAs)`, progress: false })).stdout))) : undefined;
  if (ids && ids[0] === 0) throw new ConfigError(`drill.runAs ${runAs} is root: the throwaway PostgreSQL must run as an unprivileged user`);
  const owner = ids ? { uid: ids[0]!, gid: ids[1]! } : {};
  const base = await mkdtemp(join(config.drill.workDir ?? tmpdir(), 'immich-backup-drill-'));
  // As root, a client runs as runAs too: `runuser -u runAs -- psql …` (the socket directory admits only it).
  const as = (file: string, args: string[]) => (runAs ? { file: 'runuser', args: ['-u', runAs, '--', file, ...args] } : { file, args });
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
    await runCommand(join(bin, 'initdb'), ['-D', data, '-U', user, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { label: 'initdb (drill)', ...owner, cwd: base, progress: false });
    const settings = ["listen_addresses=", 'unix_socket_permissions=0700', 'fsync=off', 'full_page_writes=off', 'synchronous_commit=off'].flatMap((c) => ['-c', c]);
    server = startCommand(join(bin, 'postgres'), ['-D', data, '-p', '5432', '-k', base, ...settings], { label: 'postgres (drill)', ...owner, cwd: base, stdout: 'ignore', server: true });
    const running = server;
    const env = { PGHOST: base, PGPORT: '5432', PGUSER: user };
    const where = `Unix socket in ${base} only (no TCP), running as ${runAs ?? 'this user'}, initdb from ${bin}`;
    await waitUntilReady(
      async () => {
        const ready = as(join(bin, 'pg_isready'), ['-q', '-h', base, '-p', '5432']);
        return (await probeCommand(ready.file, ready.args, { label: 'pg_isready (drill)', env, cwd: base })).exitCode === 0;
      },
      async () => (running.exitCode !== null ? stderrTail((await running).stderr) : undefined),
      where,
    );
    const loader = as(join(bin, 'psql'), ['-X', '-q', '-h', base, '-p', '5432', '-U', user, '-d', 'postgres']);
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

/** A container of the live database's image (or drill.image), reached only through `docker exec`; nothing published. */
async function containerThrowaway(config: Config, live: () => Promise<PostgresTarget>, name: string): Promise<Throwaway> {
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
  // The image's init server listens on its socket only; the real one also on 127.0.0.1 inside the container.
  await runCommand(docker, ['run', '-d', '--rm', '--name', name, '-e', `POSTGRES_USER=${user}`, '-e', 'POSTGRES_HOST_AUTH_METHOD=trust', image], { label: `${docker} run` });
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
      loader: command(['-X', '-q', '-U', user, '-d', 'postgres']),
      dumper: postgresCommand(local, target, 'pg_dumpall', ['-h', '127.0.0.1', '-U', user]),
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}

/** The throwaway's whole cluster through pg_dumpall and the dump's digester: each table's data digest and row count. */
async function redumpDigests(server: Throwaway): Promise<{ digests: TableDigests; rows: RowCounts }> {
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

export function createDrillActivities({ config, logger }: ActivityDeps) {
  /** Why `tables` looks like lost data against the newest earlier dump with authentic row counts. */
  async function shrinkAgainstPrevious(where: string, file: string, tables: RowCounts, key: Buffer): Promise<string | undefined> {
    const { dumps } = await authenticDumps(where, key);
    for (const earlier of dumps.filter((d) => d.file < file).reverse()) {
      const rows = await authenticRows(where, earlier.file, key);
      if (rows) {
        const why = shrinkOf(rows.tables, tables, config.backup.assetDropAlarm);
        return why ? `against ${earlier.file}: ${why}` : undefined;
      }
    }
    return undefined;
  }

  const dir = config.backup.dir;
  const user = config.postgres.user;

  /** drill.engine auto: the host's binaries where they exist, else a container of the live database's image. */
  async function throwaway(stamp: string): Promise<Throwaway> {
    const engine = config.drill.engine;
    const bin = engine === 'container' ? undefined : hostPostgresBinDir(config);
    if (bin) return hostThrowaway(config, bin);
    if (engine === 'host') throw new CommandNotFoundError('no PostgreSQL server binaries (initdb, postgres, psql) on this host: install the postgresql package, set drill.binDir, or use drill.engine container');
    if (config.postgres.runtime !== 'docker' && !config.drill.image) {
      throw new CommandNotFoundError('no PostgreSQL server binaries on this host and no container to take an image from: install the postgresql package or set drill.image');
    }
    // Only the container engine needs the live container (for its image): the drill never touches it otherwise.
    return containerThrowaway(config, () => createContainerActivities({ config, logger }).discoverPostgresContainer(), `immich-backup-drill-${stamp}`);
  }

  /** Queries the live database (in its container, or on this host). */
  const livePsql = (target: PostgresTarget, label: string): Psql => async (database, sql) => {
    const cmd = postgresCommand(config, target, 'psql', psqlQueryArgs(user, database, sql));
    return (await runCommand(cmd.file, cmd.args, { label, env: cmd.env })).stdout;
  };

  return {
    /** NightlyDbBackup's extra step: each table's row count, written beside the dump (atomically, 0600). */
    async recordRowCounts({ target, file, kind = 'backup' }: { target: PostgresTarget; file: string; kind?: DumpKind }): Promise<{ tables: number; rows: number; immichVersion?: string; shrink?: string }> {
      const psql = livePsql(target, 'psql (row counts)');
      const tables = await countRows(psql);
      const version = await immichVersion(psql, config.immich.database);
      const where = kind === 'restore-point' ? join(dir, RESTORE_POINTS_DIR) : dir;
      const key = await readKey(config.security.keyFile);
      // Compared with the dump before it: a database that lost its data still dumps "fine".
      const shrink = kind === 'backup' ? await shrinkAgainstPrevious(where, file, tables, key) : undefined;
      // The digests the dump activity took from the dump's stream; on a retry after they were
      // moved in here, the ones already in the authentic .rows.json.
      const digests = (await readDigestsFile(key, where, file)) ?? (await authenticRows(where, file, key))?.digests;
      const record: RecordedRowCounts = {
        file,
        recordedAt: new Date().toISOString(),
        tables,
        ...(version ? { immichVersion: version } : {}),
        ...(shrink ? { shrink } : {}),
        ...(digests ? { digests } : {}),
        digestsExpected: true,
      };
      const text = JSON.stringify(record, null, 1) + '\n';
      await writeFileAtomic(join(where, rowCountsFileName(file)), join(where, partialFileName(rowCountsFileName(file))), text);
      await tagRows(key, where, file, text);
      await removeDigestsFile(where, file);
      if (shrink) logger.error({ file, shrink }, 'dump flagged: its row counts dropped sharply against the previous dump; kept, not used as the latest');
      // Every dump this version writes gets digests (dumpDatabase writes them before the dump
      // appears): none now means they were removed or altered since. The counts stay recorded
      // (with digestsExpected, so the drill fails on this dump instead of calling it old), and the run alarms.
      if (!digests) {
        logger.error({ file, digestsFile: digestsFileName(file) }, 'table digests of the dump missing or altered: its data cannot be compared');
        throw new DigestsMissingError(
          `the table digests taken while ${file} was written are missing or do not verify (${join(where, digestsFileName(file))} was removed or altered before its row counts were recorded): its row counts are recorded, but no drill can compare its data and the drill will fail on it. Find what else writes in ${where}, then run immich-backup backup db`,
        );
      }
      const rows = Object.values(tables).reduce((a, b) => a + b, 0);
      logger.info({ file, tables: Object.keys(tables).length, rows, immichVersion: version, tablesDigested: digests ? Object.keys(digests).length : 0 }, 'row counts recorded');
      return { tables: Object.keys(tables).length, rows, ...(version ? { immichVersion: version } : {}), ...(shrink ? { shrink } : {}) };
    },

    /** The Immich version the live database says it runs (undefined: no version_history there). */
    async runningImmichVersion({ target }: { target: PostgresTarget }): Promise<string | undefined> {
      return immichVersion(livePsql(target, 'psql (Immich version)'), config.immich.database);
    },

    /**
     * Restores the newest dump that has recorded row counts into a throwaway PostgreSQL, counts
     * every table, re-dumps it and digests each table's data (when the dump recorded digests),
     * compares both with what was recorded at dump time, and removes the throwaway whatever happened.
     */
    async restoreDrill({ stamp }: { stamp: string }): Promise<DrillResult> {
      const started = Date.now();
      const key = await readKey(config.security.keyFile);
      // Only a dump whose tag verifies, with authentic row counts, not from the future, not flagged.
      const latest = await latestUsable(dir, key, Date.now(), config.backup.maxFutureMinutes, true);
      for (const p of latest.passedOver) logger.warn({ file: p.file, reason: p.reason }, 'drill: passed over');
      const dump = latest.dump;
      if (!dump?.rows) throw new DumpNotFoundError(`no authenticated dump with recorded row counts in ${dir}: run a backup first (\`immich-backup backup db\`)`);
      const recorded = dump.rows.tables;
      // Loaded from a private copy whose bytes hashed to the recorded sha256 as they were copied
      // (made while the throwaway starts). The load streams it through the strict filter: a line
      // that would run a program is refused before psql reads it, and the throwaway, which ran
      // only lines the filter had passed, is removed. (A restore of the live database filters the
      // whole dump before anything stops; a throwaway half-loaded costs nothing.)
      const copying = privateCopy(join(dir, dump.file), dump.file, join(dir, LOADING_DIR), dump.sha256, `drill: copying ${dump.file} aside`, { sync: false });
      const starting = throwaway(stamp);
      const [copyDone, serverDone] = await withHeartbeats(Promise.allSettled([copying, starting]), () => ({ step: `drill: copying ${dump.file} aside while a throwaway PostgreSQL starts` }));
      if (copyDone.status === 'rejected' || serverDone.status === 'rejected') {
        if (copyDone.status === 'fulfilled') await rm(copyDone.value, { force: true });
        if (serverDone.status === 'fulfilled') await serverDone.value.remove();
        throw copyDone.status === 'rejected' ? copyDone.reason : (serverDone as PromiseRejectedResult).reason;
      }
      const path = copyDone.value;
      const server = serverDone.value;
      try {
        const postgresVersion = (await server.query('postgres', 'SHOW server_version')).trim();
        const loadStarted = Date.now();
        // Without ON_ERROR_STOP: a statement that fails (a constraint the data breaks, an extension
        // the server lacks) is reported with the tables it leaves short, not instead of them.
        const { stderr } = await loadDump({ file: dump.file, path }, user, server.loader, `drill: restoring ${dump.file} into ${server.where}`).catch((err: unknown) => {
          throw isCorruptStreamError(err) ? corruptDump(dump.file, err, 'the drill could not load it') : err;
        });
        // A table that could not be created turns its COPY data into one error per row: keep a few.
        const allErrors = stderr.split('\n').flatMap((line) => {
          const m = /ERROR:\s+(.*)$/.exec(line);
          return m ? [m[1]!.trim()] : [];
        });
        const loadErrors = allErrors.slice(0, MAX_LOAD_ERRORS);
        const loadMs = Date.now() - loadStarted;
        const missingExtension = server.engine === 'host' && loadErrors.some((e) => /extension ".*" is not available|could not open extension control file/.test(e));
        const recordedDigests = dump.rows.digests;
        // Taken at dump time but not in the record: a loss to report, not a dump from before digests.
        const digestsMissing = !recordedDigests && dump.rows.digestsExpected === true;
        // With digests, one re-dump gives both each table's digest and its row count; without, count(*) every table.
        const redumpStarted = Date.now();
        const redump = recordedDigests ? await redumpDigests(server) : undefined;
        const redumpMs = Date.now() - redumpStarted;
        const changed = redump ? compareDigests(recordedDigests!, redump.digests) : [];
        const restored = await withHeartbeats(redump ? countRowsFromDump(server.query, redump.rows) : countRows(server.query), () => ({ step: 'drill: counting rows' }));
        const differences = compareRowCounts(recorded, restored);
        const result: DrillResult = {
          dump: dump.file,
          engine: server.engine,
          server: server.where,
          postgresVersion,
          tables: Object.keys(restored).length,
          rows: Object.values(restored).reduce((a, b) => a + b, 0),
          differences,
          loadErrors,
          loadErrorCount: allErrors.length,
          contentCompared: recordedDigests ? Object.keys(recordedDigests).length : 0,
          contentDifferences: changed.slice(0, MAX_CONTENT_DIFFERENCES),
          contentDifferenceCount: changed.length,
          ...(recordedDigests ? {} : { contentNote: digestsMissing ? CONTENT_DIGESTS_MISSING : CONTENT_NOT_COMPARED }),
          passed: differences.length === 0 && allErrors.length === 0 && changed.length === 0 && !digestsMissing,
          ...(missingExtension ? { hint: "the host's PostgreSQL lacks an extension the dump uses (Immich's vector extensions): set drill.engine: container" } : {}),
          loadMs,
          ...(recordedDigests ? { redumpMs } : {}),
          durationMs: Date.now() - started,
        };
        if (digestsMissing) logger.error({ dump: dump.file }, `drill: ${CONTENT_DIGESTS_MISSING}: the dump's row counts say digests were taken`);
        else if (!recordedDigests) logger.warn({ dump: dump.file }, `drill: ${CONTENT_NOT_COMPARED}; row counts only`);
        if (changed.length) logger.error({ dump: dump.file, tables: changed.slice(0, MAX_CONTENT_DIFFERENCES), count: changed.length }, 'drill: tables restore with other data than the dump recorded');
        logger.info({ dump: dump.file, engine: server.engine, passed: result.passed, differences: differences.length, contentDifferences: changed.length, contentCompared: result.contentCompared, loadErrors: allErrors.length, tables: result.tables }, 'restore drill done');
        return result;
      } finally {
        await server.remove();
        await rm(path, { force: true });
      }
    },
  };
}
