import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { execa } from 'execa';
import type { NightlyDbBackupReport, RestoreDatabaseReport } from '../../workflows/index.js';
import { cli } from '../helpers/cli.js';
import { freePort, waitFor } from '../helpers/net.js';
import { startPingServer } from '../helpers/ping.js';
import { loadImmichLike, pgBin, rowCounts, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { startTestTemporal } from '../helpers/temporal.js';
import { parseConfig } from '../../src/config.js';
import { recordFault } from '../helpers/fault-matrix.js';

// RestoreDatabase end to end: a real PostgreSQL with Immich-like data, real pg_dumpall/psql,
// a real Temporal dev server, a real sshd as the NAS, and a real HTTP server answering Immich's
// ping. The fixture docker stands in for the Docker CLI and records every stop and start.

let temporal: Awaited<ReturnType<typeof startTestTemporal>>;
let pg: TestPostgres;
let sshd: TestSshd;
let ping: Awaited<ReturnType<typeof startPingServer>>;
let connection: Connection;
let client: Client;
let dockerLog = '';

before(async () => {
  [temporal, pg, sshd, ping] = await Promise.all([startTestTemporal(), startPostgres(), startSshd(), startPingServer()]);
  await loadImmichLike(pg, 800);
  dockerLog = join(await tempDir('docker-log'), 'docker.log');
  Object.assign(process.env, fixtureEnv(pg, { FIXTURE_DOCKER_LOG: dockerLog }));
  connection = await Connection.connect({ address: temporal.address });
  client = new Client({ connection });
});
after(async () => {
  await connection?.close();
  await Promise.all([temporal?.stop(), pg?.stop(), sshd?.stop(), ping?.stop()]);
});

async function world(extra: Record<string, Record<string, unknown>> = {}) {
  const root = await tempDir('restore');
  const backupDir = join(root, 'dumps');
  const immichBackups = join(root, 'immich-backups');
  await mkdir(immichBackups, { recursive: true });
  const raw = rawTestConfig({
    backupDir,
    address: temporal.address,
    extra: {
      offsite: { ...sshd.offsite, remoteDir: join(root, 'nas') },
      immich: { composeDir: root, pingUrl: ping.url, healthTimeoutSeconds: 5, backupsDir: immichBackups },
      restore: { approvalTimeoutMinutes: 1 },
    },
  });
  for (const [k, v] of Object.entries(extra)) raw[k] = { ...raw[k], ...v };
  const config = parseConfig(raw);
  const backup = async () => {
    const { report, error } = await runWorkflow<NightlyDbBackupReport>(client, temporal.address, config, 'NightlyDbBackup');
    assert.equal(error, undefined, String(error));
    await new Promise((r) => setTimeout(r, 1000)); // the restore point must not share the second
    return report!;
  };
  const restore = (input: Record<string, unknown>, during?: (id: string) => Promise<void>) =>
    runWorkflow<RestoreDatabaseReport>(client, temporal.address, config, 'RestoreDatabase', during, input);
  return { root, backupDir, immichBackups, raw, config, backup, restore };
}

const dockerCalls = async () => (existsSync(dockerLog) ? (await readFile(dockerLog, 'utf8')).split('\n').filter((l) => /^(stop|compose-up) /.test(l)) : []);
const changeData = () =>
  pg.psql(`DELETE FROM assets WHERE "originalPath" LIKE '%/2021/%'; INSERT INTO users SELECT md5(r)::uuid, r || '@example.com', 'X', now() FROM (SELECT random()::text AS r) s;`, 'immich');

/** Rewrites a dump's SQL (and its .sha256, so only the content check can object). */
async function tamper(dir: string, file: string, edit: (sql: string) => string, newName = file) {
  const sql = gunzipSync(await readFile(join(dir, file))).toString('utf8');
  const body = gzipSync(edit(sql));
  await writeFile(join(dir, newName), body);
  await writeFile(join(dir, `${newName}.sha256`), `${createHash('sha256').update(body).digest('hex')}  ${newName}\n`);
}

function failureType(error: unknown): { type: string | undefined; message: string } {
  assert.ok(error instanceof WorkflowFailedError, `expected a failed run, got ${String(error)}`);
  let cause: unknown = error.cause;
  while (!(cause instanceof ApplicationFailure) && cause instanceof Error && cause.cause) cause = cause.cause;
  assert.ok(cause instanceof ApplicationFailure);
  return { type: cause.type ?? undefined, message: cause.message };
}

describe('RestoreDatabase', () => {
  test('round trip: back up, change data, restore; data equals the backup, Immich stopped then started and healthy', async () => {
    const w = await world();
    const before = await rowCounts(pg);
    const dump = await w.backup();
    await changeData();
    assert.notDeepEqual(await rowCounts(pg), before);
    await rm(dockerLog, { force: true });
    const { report, error } = await w.restore({ approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.dump, dump.file);
    assert.equal(report!.healthy, true);
    assert.deepEqual(await rowCounts(pg), before);
    assert.deepEqual((await dockerCalls()).map((l) => l.replace(/ \d+ /, ' ')), [`stop immich_server immich_machine_learning`, `compose-up ${w.root}`]);
    assert.ok(existsSync(join(w.backupDir, report!.restorePoint!)), 'the restore point stays in the staging dir');
  });

  test('with backup.compressor zstd: the backup is a .sql.zst, its restore point too, and it restores', async () => {
    const w = await world({ backup: { compressor: 'zstd', compressionLevel: 3 } });
    const before = await rowCounts(pg);
    const dump = await w.backup();
    assert.match(dump.file, /^immich_\d{8}_\d{6}\.sql\.zst$/);
    await changeData();
    const { report, error } = await w.restore({ approved: true, dump: dump.file });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.match(report!.restorePoint!, /\.sql\.zst$/);
    assert.deepEqual(await rowCounts(pg), before);
  });

  test('a .sql.zst cut short is refused before anything stops', async () => {
    const w = await world({ backup: { compressor: 'zstd' } });
    const dump = await w.backup();
    const body = (await readFile(dump.path)).subarray(0, Math.floor(dump.bytes / 2));
    await writeFile(dump.path, body);
    await writeFile(`${dump.path}.sha256`, `${createHash('sha256').update(body).digest('hex')}  ${dump.file}\n`);
    await rm(dockerLog, { force: true });
    const { error } = await w.restore({ approved: true, dump: dump.file });
    const failure = failureType(error);
    assert.equal(failure.type, 'DumpCorruptError');
    assert.match(failure.message, /is not a complete zstd stream .*not restoring it/);
    assert.deepEqual(await dockerCalls(), []);
  });

  test('a dump in Immich\'s own format (pg_dump --clean --if-exists of one database) restores into that database', async () => {
    const w = await world();
    const before = await rowCounts(pg);
    const name = 'immich-db-backup-20261126T020000-v2.0.0-pg15.18.sql.gz';
    const { stdout } = await execa(join(pgBin, 'pg_dump'), ['--clean', '--if-exists', '-d', 'immich'], { env: pg.env, encoding: 'buffer' });
    await writeFile(join(w.immichBackups, name), gzipSync(stdout));
    await changeData();
    const { report, error } = await w.restore({ dump: name, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.format, 'immich');
    assert.equal(report!.origin, 'immich');
    assert.deepEqual(await rowCounts(pg), before);
  });

  const refusals: Array<[string, (w: Awaited<ReturnType<typeof world>>, file: string) => Promise<string>, string]> = [
    ['a truncated dump', async (w, file) => {
      const body = await readFile(join(w.backupDir, file));
      await writeFile(join(w.backupDir, file), body.subarray(0, body.length - 200));
      await writeFile(join(w.backupDir, `${file}.sha256`), `${createHash('sha256').update(body.subarray(0, body.length - 200)).digest('hex')}  ${file}\n`);
      return file;
    }, 'DumpCorruptError'],
    ['a dump whose bytes differ from its .sha256', async (w, file) => {
      await writeFile(join(w.backupDir, `${file}.sha256`), `${'0'.repeat(64)}  ${file}\n`);
      return file;
    }, 'ChecksumMismatchError'],
    ['a dump with a \\! shell escape', async (w, file) => {
      await tamper(w.backupDir, file, (sql) => sql.replace('\\connect immich', `\\! touch ${join(w.root, 'pwned')}\n\\connect immich`));
      return file;
    }, 'UnsafeDumpError'],
    ['a dump with COPY … PROGRAM', async (w, file) => {
      await tamper(w.backupDir, file, (sql) => sql.replace('\\connect immich', `COPY users FROM PROGRAM 'touch ${join(w.root, 'pwned')}';\n\\connect immich`));
      return file;
    }, 'UnsafeDumpError'],
  ];
  for (const [what, make, type] of refusals) {
    test(`${what} is refused before anything stops (${type})`, async () => {
      const w = await world();
      const dump = await w.backup();
      const file = await make(w, dump.file);
      await changeData();
      const changed = await rowCounts(pg);
      await rm(dockerLog, { force: true });
      const { error } = await w.restore({ dump: file, approved: true });
      const failure = failureType(error);
      assert.equal(failure.type, type, failure.message);
      assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
      assert.deepEqual(await rowCounts(pg), changed, 'nothing changed');
      assert.equal(existsSync(join(w.root, 'pwned')), false, 'nothing was executed');
      if (type === 'UnsafeDumpError') await recordFault(`dump with ${what.replace('a dump with ', '')}`, `refused (UnsafeDumpError) during verification, before anything stopped; data unchanged; the command never ran`);
    });
  }

  test('names that are not dumps, or escape the directory, are refused and run nothing', async () => {
    const w = await world();
    for (const dump of ['../../etc/passwd', 'immich_20261126_030000.sql.gz; touch /tmp/x', '$(touch /tmp/x)', 'a b\nc']) {
      const { error } = await w.restore({ dump, approved: true });
      assert.equal(failureType(error).type, 'NotOurDumpError', dump);
    }
    await recordFault('--dump ../../etc/passwd, names with ;, $(…), spaces, newlines', 'refused (NotOurDumpError) before any file is read; Immich never stopped; nothing executed');
    assert.deepEqual(await dockerCalls().then((c) => c.filter((l) => l.includes(w.root))), []);
  });

  test('a dump that fails halfway through psql: the restore point is put back, Immich started, the run fails with the reason', async () => {
    const w = await world();
    const dump = await w.backup();
    // Valid gzip, checksum and marker, harmless to the scan, but psql stops on it after the databases were dropped.
    await tamper(w.backupDir, dump.file, (sql) => sql.replace(/(\nCOPY public\.exif )/, '\nSELECT 1/0;$1'));
    await changeData();
    const changed = await rowCounts(pg);
    await rm(dockerLog, { force: true });
    const { error } = await w.restore({ dump: dump.file, approved: true });
    const failure = failureType(error);
    assert.equal(failure.type, 'RestoreFailedError');
    assert.match(failure.message, /^restore of immich_\d{8}_\d{6}\.sql\.gz failed \(psql failed \(exit code 3\): .*division by zero.*\); the restore point immich_\d{8}_\d{6}\.sql\.gz was put back and Immich started \(healthy\)$/);
    assert.deepEqual(await rowCounts(pg), changed, 'data equals the state before the restore');
    assert.deepEqual((await dockerCalls()).map((l) => l.split(' ')[0]), ['stop', 'compose-up']);
  });

  test('no approval within the window: nothing changed, and the run says so', async () => {
    const w = await world({ restore: { approvalTimeoutMinutes: 0.05 } });
    await w.backup();
    await changeData();
    const changed = await rowCounts(pg);
    await rm(dockerLog, { force: true });
    const { report, error } = await w.restore({});
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'not-approved');
    assert.match(report!.message, /^no approval within \d+ min: nothing was changed$/);
    assert.deepEqual(await dockerCalls(), []);
    assert.deepEqual(await rowCounts(pg), changed);
  });

  test('approval through the CLI lets a waiting restore proceed', async () => {
    const w = await world();
    const before = await rowCounts(pg);
    await w.backup();
    await changeData();
    const configFile = await writeConfigFile(w.root, w.raw);
    const { report, error } = await w.restore({}, async (workflowId) => {
      const handle = client.workflow.getHandle(workflowId);
      await waitFor('the approval step', async () => ((await handle.query<string>('currentStep')) === 'awaiting approval' ? true : undefined), 30_000, 200);
      const r = await cli(['-c', configFile, 'restore', 'approve', workflowId]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, `approved ${workflowId}\n`);
    });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.deepEqual(await rowCounts(pg), before);
    const again = await cli(['-c', configFile, 'restore', 'approve', 'no-such-workflow']);
    assert.equal(again.exitCode, 1);
    assert.match(again.stderr, /^error: cannot approve no-such-workflow: /);
  });

  test('a dump missing locally is fetched from the NAS, verified and restored', async () => {
    const w = await world();
    const before = await rowCounts(pg);
    const dump = await w.backup();
    const nas = w.config.offsite.remoteDir;
    await mkdir(nas, { recursive: true });
    for (const f of [dump.file, `${dump.file}.sha256`]) {
      await copyFile(join(w.backupDir, f), join(nas, f));
      await rm(join(w.backupDir, f));
    }
    await changeData();
    const { report, error } = await w.restore({ dump: dump.file, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.origin, 'offsite');
    assert.ok(existsSync(join(w.backupDir, dump.file)) && existsSync(join(w.backupDir, `${dump.file}.sha256`)));
    assert.deepEqual(await rowCounts(pg), before);
  });

  test('an Immich that never answers its ping is reported as an unhealthy start', async () => {
    const w = await world({ immich: { pingUrl: `http://127.0.0.1:${await freePort()}/api/server/ping`, healthTimeoutSeconds: 2 } });
    await w.backup();
    const { report, error } = await w.restore({ approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.healthy, false);
    assert.match(report!.message, /Immich did NOT become healthy: no healthy answer within 2 s/);
  });

  test('a dry run verifies and reports, and changes nothing', async () => {
    const w = await world();
    const dump = await w.backup();
    await changeData();
    const changed = await rowCounts(pg);
    await rm(dockerLog, { force: true });
    const { report, error } = await w.restore({ dryRun: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'dry-run');
    assert.equal(report!.dump, dump.file);
    assert.match(report!.message, /^dry run: immich_\d{8}_\d{6}\.sql\.gz verified; a restore would /);
    assert.deepEqual(await dockerCalls(), []);
    assert.deepEqual(await rowCounts(pg), changed);
  });
});

