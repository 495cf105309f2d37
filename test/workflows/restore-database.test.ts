import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { openDumpStore } from '../../adapters/dump-store/index.js';
import { tagPlanted } from '../helpers/trust.js';
import { collectStatus } from '../../status/status.js';
import { createActivities } from '../../activities/index.js';
import { createLogger } from '../../config/logger.js';
import { cli } from '../helpers/cli.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { freePort } from '../helpers/net.js';
import { pgBin, rowCounts } from '../helpers/postgres.js';
import { failureType, stepReached, tamper, useRestoreStack } from '../helpers/restore-stack.js';
import { writeConfigFile } from '../helpers/setup.js';

// RestoreDatabase end to end on the shared restore stack (test/helpers/restore-stack.ts): real
// PostgreSQL, pg_dumpall/psql, Temporal dev server, sshd as the NAS, an HTTP server as Immich's ping.

const stack = useRestoreStack();
const { world, dockerCalls, changeData } = stack;
const quiet = createLogger({ level: 'fatal', fd: 2 });

describe('RestoreDatabase', () => {
  test('round trip: back up, change data, restore; data equals the backup, Immich stopped then started and healthy', async () => {
    const w = await world();
    const before = await rowCounts(stack.pg);
    const dump = await w.backup();
    await changeData();
    assert.notDeepEqual(await rowCounts(stack.pg), before);
    await rm(stack.dockerLog, { force: true });
    const { report, error } = await w.restore({ approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.dump, dump.file);
    assert.equal(report!.healthy, true);
    assert.deepEqual(await rowCounts(stack.pg), before);
    assert.deepEqual((await dockerCalls()).map((l) => l.replace(/ \d+ /, ' ')), [`stop immich_server immich_machine_learning`, `compose-up ${w.root}`]);
    assert.match(report!.restorePoint!, new RegExp(`^${w.backupDir}/restore-points/restore-point_\\d{8}_\\d{6}\\.sql\\.gz$`));
    assert.ok(existsSync(report!.restorePoint!), 'the report says where the restore point is');
    assert.equal(report!.facts.file, dump.file);
    assert.equal(report!.approvedBy, "the run's own --yes");
  });

  test('with backup.compressor zstd: the backup is a .sql.zst, its restore point too, and it restores', async () => {
    const w = await world({ backup: { compressor: 'zstd', compressionLevel: 3 } });
    const before = await rowCounts(stack.pg);
    const dump = await w.backup();
    assert.match(dump.file, /^immich_\d{8}_\d{6}\.sql\.zst$/);
    await changeData();
    const { report, error } = await w.restore({ approved: true, dump: dump.file });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.match(report!.restorePoint!, /\.sql\.zst$/);
    assert.deepEqual(await rowCounts(stack.pg), before);
  });

  test('a .sql.zst cut short is refused before anything stops', async () => {
    const w = await world({ backup: { compressor: 'zstd' } });
    const dump = await w.backup();
    const body = (await readFile(dump.path)).subarray(0, Math.floor(dump.bytes / 2));
    await writeFile(dump.path, body);
    const sha256 = createHash('sha256').update(body).digest('hex');
    await writeFile(`${dump.path}.sha256`, `${sha256}  ${dump.file}\n`);
    await tagPlanted(w.config, w.backupDir, dump.file, sha256); // vouched for, then cut: only the stream check objects
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ approved: true, dump: dump.file });
    const failure = failureType(error);
    assert.equal(failure.type, 'DumpCorruptError');
    assert.match(failure.message, /is not a complete zstd stream .*not restoring it/);
    assert.deepEqual(await dockerCalls(), []);
  });

  test('a dump in Immich\'s own format (pg_dump --clean --if-exists of one database) restores into that database', async () => {
    const w = await world();
    const before = await rowCounts(stack.pg);
    const name = 'immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz';
    const { stdout } = await execa(join(pgBin, 'pg_dump'), ['--clean', '--if-exists', '-d', 'immich'], { env: stack.pg.env, encoding: 'buffer' });
    await writeFile(join(w.immichBackups, name), gzipSync(stdout));
    await changeData();
    const { report, error } = await w.restore({ dump: name, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.format, 'immich');
    assert.equal(report!.origin, 'immich');
    assert.deepEqual(await rowCounts(stack.pg), before);
  });

  const refusals: Array<[string, (w: Awaited<ReturnType<typeof world>>, file: string) => Promise<string>, string]> = [
    ['a truncated dump', async (w, file) => {
      const body = await readFile(join(w.backupDir, file));
      await writeFile(join(w.backupDir, file), body.subarray(0, body.length - 200));
      const sha256 = createHash('sha256').update(body.subarray(0, body.length - 200)).digest('hex');
      await writeFile(join(w.backupDir, `${file}.sha256`), `${sha256}  ${file}\n`);
      await tagPlanted(w.config, w.backupDir, file, sha256); // vouched for, then damaged: only the stream check objects
      return file;
    }, 'DumpCorruptError'],
    ['a dump whose bytes differ from its .sha256 (and tag)', async (w, file) => {
      // Changed after it was tagged: the gzip header's timestamp, so it still decodes.
      const body = await readFile(join(w.backupDir, file));
      body[4] = body[4]! ^ 0xff;
      await writeFile(join(w.backupDir, file), body);
      return file;
    }, 'ChecksumMismatchError'],
    ['a dump with a \\! shell escape', async (w, file) => {
      await tamper(w.backupDir, file, (sql) => sql.replace('\\connect immich', `\\! touch ${join(w.root, 'pwned')}\n\\connect immich`), file, w.config);
      return file;
    }, 'UnsafeDumpError'],
    ['a dump with COPY … PROGRAM', async (w, file) => {
      await tamper(w.backupDir, file, (sql) => sql.replace('\\connect immich', `COPY users FROM PROGRAM 'touch ${join(w.root, 'pwned')}';\n\\connect immich`), file, w.config);
      return file;
    }, 'UnsafeDumpError'],
  ];
  for (const [what, make, type] of refusals) {
    test(`${what} is refused before anything stops (${type})`, async () => {
      const w = await world();
      const dump = await w.backup();
      const file = await make(w, dump.file);
      await changeData();
      const changed = await rowCounts(stack.pg);
      await rm(stack.dockerLog, { force: true });
      const { error } = await w.restore({ dump: file, approved: true });
      const failure = failureType(error);
      assert.equal(failure.type, type, failure.message);
      assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
      assert.deepEqual(await rowCounts(stack.pg), changed, 'nothing changed');
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
    // Valid gzip, checksum, tag and marker, a statement pg_dump writes, but psql stops on it after the databases were dropped.
    await tamper(w.backupDir, dump.file, (sql) => sql.replace(/(\nCOPY public\.exif )/, '\nALTER TABLE public.no_such_table OWNER TO postgres;$1'), dump.file, w.config);
    await changeData();
    const changed = await rowCounts(stack.pg);
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ dump: dump.file, approved: true });
    const failure = failureType(error);
    assert.equal(failure.type, 'RestoreFailedError');
    assert.match(failure.message, /^restore of immich_\d{8}_\d{6}\.sql\.gz failed \(psql failed \(exit code 3\): .*relation "public\.no_such_table" does not exist.*\); the restore point \S+\/restore-points\/restore-point_\d{8}_\d{6}\.sql\.gz was put back; Immich started \(healthy\)$/);
    assert.deepEqual(await rowCounts(stack.pg), changed, 'data equals the state before the restore');
    assert.deepEqual((await dockerCalls()).map((l) => l.split(' ')[0]), ['stop', 'compose-up']);
  });

  test('no approval within the window: nothing changed, and the run says so', async () => {
    const w = await world({ restore: { approvalTimeoutMinutes: 0.05 } });
    await w.backup();
    await changeData();
    const changed = await rowCounts(stack.pg);
    await rm(stack.dockerLog, { force: true });
    const { report, error } = await w.restore({});
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'not-approved');
    assert.match(report!.message, /^no approval within \d+ min: nothing was changed$/);
    assert.deepEqual(await dockerCalls(), []);
    assert.deepEqual(await rowCounts(stack.pg), changed);
  });

  test('approval through the CLI lets a waiting restore proceed', async () => {
    const w = await world();
    const before = await rowCounts(stack.pg);
    await w.backup();
    await changeData();
    const configFile = await writeConfigFile(w.root, w.raw);
    const { report, error } = await w.restore({}, async (workflowId) => {
      const handle = stack.client.workflow.getHandle(workflowId);
      await stepReached(handle, 'awaiting approval');
      const r = await cli(['-c', configFile, 'restore', 'approve', workflowId]);
      assert.equal(r.exitCode, 0, r.stderr);
      // Problem 5: what is approved is named: file, origin, age, size and sha256, databases, rows, both Immich versions.
      const dump = (await handle.query<{ dump: { file: string; sha256: string } }>('restorePlan')).dump;
      for (const line of [
        new RegExp(`^dump: +${dump.file}$`, 'm'),
        /^from: +the staging dir$/m,
        /^made: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z \((just now|\d+ min ago)\)$/m,
        new RegExp(`^size: +[\\d.]+ KiB, sha256 ${dump.sha256}$`, 'm'),
        /^replaces: database immich, database postgres and the roles$/m,
        /^rows: +\d+ rows in 6 tables, as counted when the dump was made$/m,
        /^Immich: +made with Immich 2\.3\.1$/m,
        /^running: +Immich 2\.3\.1$/m,
        /^ +4\. replace every database and role \(pg_dumpall\) with immich_\d{8}_\d{6}\.sql\.gz$/m,
      ]) assert.match(r.stderr, line);
      assert.match(r.stdout, new RegExp(`^approved: immich_\\d{8}_\\d{6}\\.sql\\.gz \\(sha256 [0-9a-f]{64}\\) is restored now\napproved ${workflowId}\n$`));
    });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.deepEqual(await rowCounts(stack.pg), before);
    const again = await cli(['-c', configFile, 'restore', 'approve', 'no-such-workflow']);
    assert.equal(again.exitCode, 1);
    assert.match(again.stderr, /^error: cannot approve no-such-workflow: /);
  });

  test('a dump missing locally is fetched from the NAS, verified and restored', async () => {
    const w = await world();
    const before = await rowCounts(stack.pg);
    const dump = await w.backup();
    const nas = w.config.offsite.remoteDir;
    await mkdir(nas, { recursive: true });
    for (const f of [dump.file, `${dump.file}.sha256`, `${dump.file}.hmac`]) {
      await copyFile(join(w.backupDir, f), join(nas, f));
      await rm(join(w.backupDir, f));
    }
    await changeData();
    const { report, error } = await w.restore({ dump: dump.file, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.origin, 'offsite');
    assert.ok(existsSync(join(w.backupDir, dump.file)) && existsSync(join(w.backupDir, `${dump.file}.sha256`)));
    assert.deepEqual(await rowCounts(stack.pg), before);
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
    const changed = await rowCounts(stack.pg);
    await rm(stack.dockerLog, { force: true });
    const { report, error } = await w.restore({ dryRun: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'dry-run');
    assert.equal(report!.dump, dump.file);
    assert.match(report!.message, /^dry run: immich_\d{8}_\d{6}\.sql\.gz verified \(\d+ rows in \d+ tables recorded\); a restore would take a restore point .*; nothing was changed$/);
    assert.deepEqual(await dockerCalls(), []);
    assert.deepEqual(await rowCounts(stack.pg), changed);
  });

  test('problem 1: a restore point is its own kind: never latest, never a backup for status, the drill or OffsiteSync; kept by its own count, restorable by name', async () => {
    const w = await world({ restore: { keepRestorePoints: 1 } });
    const dump = await w.backup();
    for (let i = 0; i < 2; i++) assert.equal((await w.restore({ approved: true })).error, undefined);
    const pointsDir = join(w.backupDir, 'restore-points');
    const kept = (await readdir(pointsDir)).filter((f) => f.endsWith('.gz'));
    assert.equal(kept.length, 1, `after a successful restore only the newest restore point is kept: ${kept.join(', ')}`);
    // A failed restore leaves its restore point behind too, and prunes nothing.
    await tamper(w.backupDir, dump.file, (sql) => sql.replace(/(\nCOPY public\.exif )/, '\nALTER TABLE public.no_such_table OWNER TO postgres;$1'), dump.file, w.config);
    const failed = await w.restore({ approved: true });
    assert.equal(failureType(failed.error).type, 'RestoreFailedError');
    const points = (await readdir(pointsDir)).filter((f) => f.endsWith('.gz')).sort();
    assert.equal(points.length, 2, points.join(', '));
    const point = points.at(-1)!;
    assert.match(point, /^restore-point_\d{8}_\d{6}\.sql\.gz$/);
    assert.ok(existsSync(join(pointsDir, `${point}.sha256`)) && existsSync(join(pointsDir, `${point}.rows.json`)));
    // latest, status, the drill's and OffsiteSync's readers see the backup alone.
    const dry = await w.restore({ dryRun: true });
    assert.equal(dry.report!.dump, dump.file, 'latest is the backup, not the restore point');
    assert.deepEqual((await openDumpStore(w.config).authentic()).dumps.map((d) => d.file), [dump.file]);
    const status = await collectStatus(w.config, undefined);
    assert.equal(status.rows.find((r) => r.id === 'local-dump')!.details!.file, dump.file);
    const plan = await createActivities({ config: w.config, logger: quiet }).planOffsiteSync();
    assert.deepEqual(plan.toCopy.map((d) => d.file), [dump.file]);
    // By name, it restores like any dump, and says where it came from.
    const byName = await w.restore({ dryRun: true, dump: point });
    assert.equal(byName.error, undefined, String(byName.error));
    assert.equal(byName.report!.origin, 'restore-point');
    assert.equal(byName.report!.dump, point);
    // Restoring an older restore point takes a new one, and never prunes the one it loads.
    const older = points[0]!;
    const back = await w.restore({ approved: true, dump: older });
    assert.equal(back.error, undefined, String(back.error));
    assert.ok(existsSync(join(pointsDir, older)), 'the restore point just restored is kept');
  });

  test('problem 8: a NAS copy never replaces a local dump, and a bad one never gets a final name, even in a dry run', async () => {
    const w = await world();
    const dump = await w.backup();
    const nas = w.config.offsite.remoteDir;
    await mkdir(nas, { recursive: true });
    const good = await readFile(dump.path);
    // On the NAS: cut short, with a .sha256 that matches the cut bytes (self-consistent, so only the full check objects).
    const cut = good.subarray(0, Math.floor(good.length / 2));
    await writeFile(join(nas, dump.file), cut);
    await writeFile(join(nas, `${dump.file}.sha256`), `${createHash('sha256').update(cut).digest('hex')}  ${dump.file}\n`);
    const localSum = await readFile(`${dump.path}.sha256`, 'utf8');
    const conflict = await w.restore({ dump: dump.file, from: 'offsite', dryRun: true });
    // Its tag (none, or one for other bytes) does not verify: refused before it is compared or named.
    assert.equal(failureType(conflict.error).type, 'UnauthenticatedDumpError');
    assert.match(failureType(conflict.error).message, /^dump \S+ on the NAS \S+ has no provenance tag \(\S+\.hmac\): it was not written by this tool with this key; not restoring it; nothing was changed$/);
    assert.deepEqual(await readFile(dump.path), good, 'the local dump is untouched');
    assert.equal(await readFile(`${dump.path}.sha256`, 'utf8'), localSum);
    // Without a local copy, the bad NAS copy is refused and leaves nothing under a final name.
    await rm(dump.path);
    await rm(`${dump.path}.sha256`);
    const bad = await w.restore({ dump: dump.file, from: 'offsite', dryRun: true });
    assert.equal(failureType(bad.error).type, 'UnauthenticatedDumpError');
    assert.deepEqual((await readdir(w.backupDir)).filter((f) => f.startsWith('immich_') || f.startsWith('.immich_')), [`${dump.file}.hmac`, `${dump.file}.rows.json`]);
  });

  test("problem 10: Immich's uploaded-… and restore-point-… backups restore like the plain ones", async () => {
    const w = await world();
    const before = await rowCounts(stack.pg);
    const { stdout } = await execa(join(pgBin, 'pg_dump'), ['--clean', '--if-exists', '-d', 'immich'], { env: stack.pg.env, encoding: 'buffer' });
    for (const name of ['uploaded-immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz', 'restore-point-immich-db-backup-20261126T030000-v2.3.1-pg15.18.sql.gz']) {
      await writeFile(join(w.immichBackups, name), gzipSync(stdout));
      await changeData();
      const { report, error } = await w.restore({ dump: name, approved: true });
      assert.equal(error, undefined, `${name}: ${String(error)}`);
      assert.equal(report!.origin, 'immich');
      assert.deepEqual(await rowCounts(stack.pg), before);
    }
  });
});

