import { chownSync, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort, waitFor } from './net.js';

// A real PostgreSQL server per test file: a fresh cluster (initdb, or a copy of the run's initdb'd
// template) in a temporary directory, listening on a free loopback port. The server refuses to run
// as root, so as root it runs as the postgres user.

function postgresBinDir(): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) if (existsSync(join(base, v, 'bin', 'initdb'))) return join(base, v, 'bin');
  throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: run `npm run setup` (installs the postgresql package)');
}

export const pgBin = postgresBinDir();
const asRoot = process.getuid?.() === 0;
const asServerUser = (file: string, args: string[]) => (asRoot ? { file: 'runuser', args: ['-u', 'postgres', '--', file, ...args] } : { file, args });

export interface TestPostgres {
  host: string;
  port: number;
  /** libpq variables that point a client at this server as the superuser `postgres`. */
  env: Record<string, string>;
  psql(sql: string, database?: string): Promise<string>;
  stop(): Promise<void>;
}

/** An initdb'd data directory scripts/test.sh makes once for the run (run-services.ts); each file's server starts from a copy of it. */
export const PG_TEMPLATE_ENV = 'IMMICH_BACKUP_TEST_PG_TEMPLATE';

/** A temporary directory the server's user owns (its socket goes there too). */
async function serverOwnedTempDir(): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), 'immich-backup-pg-'));
  if (asRoot) {
    const id = async (flag: string) => Number((await execa('id', [flag, 'postgres'])).stdout);
    chownSync(base, await id('-u'), await id('-g'));
  }
  return base;
}

async function initdb(data: string): Promise<void> {
  const init = asServerUser(join(pgBin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  await execa(init.file, init.args);
}

/** Runs initdb once into a new directory and returns its data directory, for startPostgres to copy. */
export async function makePostgresTemplate(): Promise<string> {
  const data = join(await serverOwnedTempDir(), 'data');
  await initdb(data);
  return data;
}

export async function startPostgres(): Promise<TestPostgres> {
  const base = await serverOwnedTempDir();
  const data = join(base, 'data');
  // A copy of the run's template is the same fresh cluster initdb would make, in a tenth of the time;
  // each file still gets a cluster of its own. cp -a keeps the server user's ownership and modes.
  const template = process.env[PG_TEMPLATE_ENV];
  if (template) await execa('cp', ['-a', template, data]);
  else await initdb(data);
  const port = await freePort();
  const run = asServerUser(join(pgBin, 'postgres'), ['-D', data, '-p', String(port), '-k', base, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'full_page_writes=off']);
  const server: ResultPromise = execa(run.file, run.args, { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', reject: false });
  const env = { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres' };
  await waitFor('PostgreSQL to accept connections', async () => {
    const r = await execa(join(pgBin, 'pg_isready'), ['-q'], { env, reject: false });
    return r.exitCode === 0 ? true : undefined;
  });
  return {
    host: '127.0.0.1',
    port,
    env,
    async psql(sql, database = 'postgres') {
      const r = await execa(join(pgBin, 'psql'), ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', database], { env, input: sql });
      return r.stdout.trim();
    },
    async stop() {
      // Signal the postmaster itself: as root the child is runuser, which does not pass SIGINT on.
      const pid = Number((await readFile(join(data, 'postmaster.pid'), 'utf8')).split('\n')[0]);
      process.kill(pid, 'SIGINT'); // fast shutdown
      await server;
      await rm(base, { recursive: true, force: true });
    },
  };
}

export const IMMICH_TABLES = ['users', 'assets', 'exif', 'asset_faces', 'smart_search'] as const;

/** Loads test/fixtures/immich-like.sql: an `immich` database owned by an `immich` role; the same arguments give the same data. */
export async function loadImmichLike(pg: TestPostgres, assets = 2000, dims = 64, seed = 0): Promise<void> {
  const { fixture } = await import('./paths.js');
  await execa(join(pgBin, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', `assets=${assets}`, '-v', `dims=${dims}`, '-v', `seed=${seed}`, '-d', 'postgres', '-f', fixture('immich-like.sql')], { env: pg.env });
}

/** Row count per Immich table, e.g. { users: 4, assets: 2000, ... }. */
export async function rowCounts(pg: TestPostgres): Promise<Record<string, number>> {
  const out = await pg.psql(IMMICH_TABLES.map((t) => `SELECT '${t}', count(*) FROM ${t};`).join('\n'), 'immich');
  return Object.fromEntries(out.split('\n').map((line) => {
    const [table, count] = line.split('|');
    return [table!, Number(count)];
  }));
}

/**
 * Holds an ACCESS EXCLUSIVE lock on a table from another session, so a pg_dump of it waits: a
 * real way to keep a dump in flight. release() ends that session's backend (and so the lock).
 */
export async function holdLock(pg: TestPostgres, table: string, database = 'immich'): Promise<{ release(): Promise<void> }> {
  const tag = `immich-backup-lock-${process.pid}-${Date.now()}`;
  const session = execa(join(pgBin, 'psql'), ['-X', '-d', database, '-c', `BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);`], {
    env: { ...pg.env, PGAPPNAME: tag },
    reject: false,
  });
  await waitFor('the lock', async () => ((await pg.psql(`SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '${tag}' AND l.mode = 'AccessExclusiveLock' AND l.granted`)) === '1' ? true : undefined));
  return {
    async release() {
      await pg.psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '${tag}'`);
      await session;
    },
  };
}

/** True once some backend waits for a lock (a pg_dump stuck behind holdLock). */
export async function someoneWaitsForLock(pg: TestPostgres): Promise<true | undefined> {
  return (await pg.psql('SELECT count(*) FROM pg_locks WHERE NOT granted')) !== '0' ? true : undefined;
}
