import assert from 'node:assert/strict';
import { chmod, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Worker } from '@temporalio/worker';
import { execa } from 'execa';
import { parseConfig, type Config } from '../../config/config.js';
import { formatStamp } from '../../core/dump-names.js';
import { runId, WORKFLOW_KINDS, type WorkflowType } from '../../core/ids.js';
import { createLogger } from '../../config/logger.js';
import type { StatusReport } from '../../core/reports.js';
import { applySchedules } from '../../temporal/schedules.js';
import type { BackupHealthReport, NightlyDbBackupReport, RestoreDrillReport } from '../../workflows/index.js';
import { createBackupWorker } from '../../workers/worker.js';
import { cli } from '../helpers/cli.js';
import { makeLibrary, mountTmpfs } from '../helpers/library.js';
import { freePort, waitFor } from '../helpers/net.js';
import { fixture, temporalBinary } from '../helpers/paths.js';
import { loadImmichLike, pgBin, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { startTestTemporal } from '../helpers/temporal.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { plantDump } from '../helpers/trust.js';

// Operating it: status, the BackupHealth alarm, notifications, the restore drill, search
// attributes and rerun, on real parts: a Temporal dev server, PostgreSQL, sshd on loopback as the
// NAS, a tmpfs as the USB drive, and a local HTTP server receiving webhooks, ntfy messages and pings.

const ASSETS = 1500;
const NEVER = '0 0 1 1 *'; // schedules exist but do not fire during the test

let temporal: Awaited<ReturnType<typeof startTestTemporal>>;
let pg: TestPostgres;
let sshd: TestSshd;
let receiver: Receiver;
let connection: Connection;
let client: Client;
let drive: { unmount(): Promise<void> } | undefined;
let worker: Worker;
let workerDone: Promise<void>;
let closeWorker: () => Promise<void>;
let base = '';
let backupDir = '';
let raw: ReturnType<typeof rawTestConfig>;
let config: Config;
let configFile = '';
const ids: Partial<Record<WorkflowType, string>> = {};
let failedBackupId = '';
let failedDrillId = '';

/** The fresh setup's raw config with some sections changed. */
function variant(changes: Record<string, Record<string, unknown>>): ReturnType<typeof rawTestConfig> {
  const copy = structuredClone(raw);
  for (const [section, values] of Object.entries(changes)) copy[section] = { ...copy[section], ...values };
  copy.temporal = { ...copy.temporal, taskQueue: `${String(raw.temporal!.taskQueue)}-${Math.random().toString(36).slice(2, 8)}` };
  return copy;
}

async function execute<T>(type: WorkflowType): Promise<{ report: T; workflowId: string }> {
  const workflowId = `${runId(WORKFLOW_KINDS[type], 'test', new Date())}-${Math.random().toString(36).slice(2, 6)}`;
  const report = await client.workflow.execute<(input: object) => Promise<T>>(type, { taskQueue: config.temporal.taskQueue, workflowId, args: [{ trigger: 'test' }] });
  return { report, workflowId };
}

async function status(file: string): Promise<{ exitCode: number | undefined; report: StatusReport; stderr: string }> {
  const r = await cli(['-c', file, 'status', '--json']);
  return { exitCode: r.exitCode, report: JSON.parse(String(r.stdout)) as StatusReport, stderr: String(r.stderr) };
}

const rowOf = (report: StatusReport, id: string) => {
  const found = report.rows.find((r) => r.id === id);
  assert.ok(found, `row ${id} in ${report.rows.map((r) => r.id).join(', ')}`);
  return found;
};

const events = (path: string) => receiver.delivered(path).map((r) => JSON.parse(r.body) as { kind: string; event: string; message: string; workflowId: string });
const drillDirs = async () => (await readdir(tmpdir())).filter((n) => n.startsWith('immich-backup-drill-'));

before(async () => {
  [temporal, pg, sshd, receiver] = await Promise.all([startTestTemporal(), startPostgres(), startSshd(), startReceiver()]);
  await loadImmichLike(pg, ASSETS);
  Object.assign(process.env, fixtureEnv(pg, { FIXTURE_PG_BIN: pgBin }));
  connection = await Connection.connect({ address: temporal.address });
  client = new Client({ connection });
  base = await tempDir('ops');
  backupDir = join(base, 'dumps');
  const source = join(base, 'library');
  await makeLibrary(source, 40);
  const wd = join(base, 'wd-backup');
  drive = await mountTmpfs(wd);
  raw = rawTestConfig({
    backupDir,
    address: temporal.address,
    extra: {
      offsite: { ...sshd.offsite, remoteDir: join(base, 'nas', 'postgres') },
      library: { source, destination: join(wd, 'immich'), mountPoint: wd },
      schedules: { nightlyDbBackup: NEVER, offsiteSync: NEVER, weeklyLibraryMirror: NEVER, backupHealth: NEVER, restoreDrill: NEVER, libraryAudit: NEVER },
      notifications: {
        webhooks: [`${receiver.url}/hook`],
        ntfy: [`${receiver.url}/ntfy/immich-alerts`],
        pings: { nightlyDbBackup: `${receiver.url}/ping/nightly`, restoreDrill: `${receiver.url}/ping/drill` },
        timeoutSeconds: 2,
      },
    },
  });
  config = parseConfig(raw);
  configFile = await writeConfigFile(base, raw);
  const created = await createBackupWorker({ config, logger: createLogger({ level: 'fatal', fd: 2 }), address: temporal.address });
  worker = created.worker;
  workerDone = worker.run();
  closeWorker = async () => {
    worker.shutdown();
    await workerDone;
    await created.connection.close();
  };
});

after(async () => {
  await closeWorker?.();
  await connection?.close();
  await drive?.unmount();
  await Promise.all([temporal?.stop(), pg?.stop(), sshd?.stop(), receiver?.close()]);
});

describe('status, drill, alarm and notifications', () => {
  test('after a backup, offsite sync, mirror and drill, status is fresh: exit 0, every row ok, pings sent', async () => {
    await applySchedules(client, config);
    const dirsBefore = await drillDirs();
    const nightly = await execute<NightlyDbBackupReport>('NightlyDbBackup');
    ids.NightlyDbBackup = nightly.workflowId;
    await execute('OffsiteSync');
    await execute('WeeklyLibraryMirror');
    const drill = await execute<RestoreDrillReport>('RestoreDrill');
    assert.equal(drill.report.passed, true);
    assert.equal(drill.report.dump, nightly.report.file);
    assert.deepEqual(drill.report.differences, []);
    assert.equal(drill.report.tables, nightly.report.rowCounts.tables);
    assert.equal(drill.report.rows, nightly.report.rowCounts.rows);
    assert.deepEqual(await drillDirs(), dirsBefore, 'the throwaway cluster is removed');

    const { exitCode, report, stderr } = await status(configFile);
    assert.equal(exitCode, 0, `${stderr}\n${JSON.stringify(report.problems)}`);
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    const local = rowOf(report, 'local-dump');
    assert.equal(local.state, 'ok');
    assert.equal(local.details?.file, nightly.report.file);
    assert.equal(local.details?.bytes, nightly.report.bytes);
    assert.equal(local.details?.validated, true);
    const nas = rowOf(report, 'nas-copy');
    assert.equal(nas.state, 'ok', nas.summary);
    assert.equal(nas.details?.checksumMatches, true);
    assert.equal(nas.details?.sha256, nightly.report.sha256);
    assert.equal(rowOf(report, 'library-mirror').state, 'ok');
    for (const id of ['nightly-db-backup', 'offsite-sync', 'weekly-library-mirror', 'backup-health', 'restore-drill']) {
      const s = rowOf(report, `schedule:${id}`);
      assert.equal(s.state, 'ok', s.summary);
      assert.match(s.summary, /^0 0 1 1 \* \(.+\); next \w{3} \d{4}-01-01 00:00 \S+$/);
    }
    for (const kind of ['nightly-db-backup', 'offsite-sync', 'weekly-library-mirror']) assert.match(rowOf(report, `last-run:${kind}`).summary, /^COMPLETED /);
    assert.match(rowOf(report, 'last-run:restore-drill').summary, new RegExp(`^COMPLETED .*: passed, ${nightly.report.file} restored into a throwaway PostgreSQL`));
    assert.equal(rowOf(report, 'last-run:restore-database').state, 'never');

    const human = await cli(['-c', configFile, 'status']);
    assert.equal(human.exitCode, 0);
    assert.match(String(human.stdout), /^immich-backup status at \S+: OK: every backup is fresh and verified\n/);
    assert.match(String(human.stdout), /^ {2}ok {10}local-dump +immich_\d{8}_\d{6}\.sql\.gz: (under a minute|\d+ min) old, .* validated/m);

    // healthchecks.io-style pings: start and success of each configured workflow; nobody was alerted.
    for (const p of ['/ping/nightly/start', '/ping/nightly', '/ping/drill/start', '/ping/drill']) assert.equal(receiver.delivered(p).length, 1, p);
    assert.equal(receiver.requests.filter((r) => r.path === '/hook' || r.path.startsWith('/ntfy')).length, 0);
  });

  test('a dump older than 26 hours makes status say stale and exit 1', async () => {
    const staleDir = await tempDir('stale');
    const fresh = (await readdir(backupDir)).find((n) => n.endsWith('.sql.gz'))!;
    const old = `immich_${formatStamp(new Date(Date.now() - 30 * 3_600_000))}.sql.gz`;
    const body = await readFile(join(backupDir, fresh));
    await plantDump(config, staleDir, old, body);
    const file = await writeConfigFile(staleDir, variant({ backup: { dir: staleDir } }));
    const { exitCode, report } = await status(file);
    assert.equal(exitCode, 1);
    assert.equal(report.ok, false);
    const local = rowOf(report, 'local-dump');
    assert.equal(local.state, 'stale');
    assert.match(local.summary, new RegExp(`^${old.replace(/\./g, '\\.')}: 30 h old \\(stale after 26 h\\)`));
    assert.deepEqual(report.problems.map((p) => p.split(':')[0]), ['local-dump stale']);
    const human = await cli(['-c', file, 'status']);
    assert.equal(human.exitCode, 1);
    assert.match(String(human.stdout), /: 1 PROBLEM\(S\)\n/);
    assert.match(String(human.stdout), /^! stale {7}local-dump /m);
  });

  test('an unreachable NAS is that row\'s state; every other row is still reported', async () => {
    const closed = await freePort();
    const file = await writeConfigFile(await tempDir('no-nas'), variant({ offsite: { port: closed } }));
    const { exitCode, report } = await status(file);
    assert.equal(exitCode, 1);
    const nas = rowOf(report, 'nas-copy');
    assert.equal(nas.state, 'unreachable');
    assert.match(nas.summary, /^NAS not checked: .*127\.0\.0\.1.*(refused|unreachable)/i);
    assert.equal(rowOf(report, 'local-dump').state, 'ok');
    assert.equal(rowOf(report, 'library-mirror').state, 'ok');
    assert.equal(rowOf(report, 'schedule:nightly-db-backup').state, 'ok');
    assert.deepEqual(report.problems.map((p) => p.split(':')[0]), ['nas-copy unreachable']);
    await recordFault('NAS unreachable during `status`', `that row "unreachable" (${nas.summary.slice(0, 90)}…); the other ${report.rows.length - 1} rows reported; exit 1`);
  });

  test('a Temporal server that cannot be reached is one row; the files, the NAS and the drive are still checked', async () => {
    const closed = await freePort();
    const file = await writeConfigFile(await tempDir('no-temporal'), variant({ temporal: { address: `127.0.0.1:${closed}` } }));
    const { exitCode, report } = await status(file);
    assert.equal(exitCode, 1);
    assert.deepEqual(report.problems.map((p) => p.split(':')[0]), ['temporal unreachable']);
    assert.match(rowOf(report, 'temporal').summary, new RegExp(`cannot reach Temporal at 127\\.0\\.0\\.1:${closed}`));
    assert.equal(rowOf(report, 'local-dump').state, 'ok');
    assert.equal(rowOf(report, 'nas-copy').state, 'ok');
    const mirror = rowOf(report, 'library-mirror');
    assert.equal(mirror.state, 'ok');
    assert.match(mirror.summary, /last run unknown \(Temporal not reachable\)$/);
  });

  test('a drive that is not mounted is reported as such, with the last successful mirror', async () => {
    const file = await writeConfigFile(await tempDir('no-drive'), variant({ library: { mountPoint: join(base, 'not-a-mount'), destination: join(base, 'not-a-mount', 'immich') } }));
    const { exitCode, report } = await status(file);
    assert.equal(exitCode, 1);
    const mirror = rowOf(report, 'library-mirror');
    assert.equal(mirror.state, 'unreachable');
    assert.match(mirror.summary, /^drive not mounted at .*not-a-mount; last mirrored (just now|\d+ min ago) \(weekly-library-mirror-test-/);
  });

  test('BackupHealth alarms once on a stale backup, by webhook and ntfy; an undeliverable target is retried and never fails it; the recovery is announced', async () => {
    const staleDir = await tempDir('stale-health');
    const fresh = (await readdir(backupDir)).find((n) => n.endsWith('.sql.gz'))!;
    const old = `immich_${formatStamp(new Date(Date.now() - 40 * 3_600_000))}.sql.gz`;
    const body = await readFile(join(backupDir, fresh));
    await plantDump(config, staleDir, old, body);
    const closed = await freePort();
    const webhooks = [`${receiver.url}/hook`, `${receiver.url}/down`, `http://127.0.0.1:${closed}/refused`];
    const stale = variant({ backup: { dir: staleDir }, notifications: { ...raw.notifications, webhooks } });
    receiver.failNext('/hook', 503); // the first delivery is refused; the retry delivers it
    receiver.failNext('/down', ...Array<number>(10).fill(503)); // never accepts

    const first = await runWorkflow<BackupHealthReport>(client, temporal.address, parseConfig(stale), 'BackupHealth');
    assert.equal(first.error, undefined, String(first.error));
    assert.equal(first.report!.ok, false);
    assert.deepEqual(first.report!.raised.map((p) => p.split(':')[0]), ['local-dump stale']);
    const hooks = receiver.requests.filter((r) => r.path === '/hook');
    assert.deepEqual(hooks.map((r) => r.status), [503, 200], 'refused once, then delivered once');
    const alarm = events('/hook')[0]!;
    assert.equal(alarm.kind, 'backup-health');
    assert.equal(alarm.event, 'alarm');
    assert.match(alarm.message, /^1 new problem\(s\): local-dump stale: immich_\d{8}_\d{6}\.sql\.gz: 40 h old/);
    const ntfy = receiver.delivered('/ntfy/immich-alerts');
    assert.equal(ntfy.length, 1);
    assert.equal(ntfy[0]!.headers.title, 'immich-backup: backup-health alarm');
    assert.equal(ntfy[0]!.headers.priority, 'high');
    assert.equal(ntfy[0]!.body, alarm.message);
    // The target that never accepts was tried 5 times, the refused one too, and the run still completed.
    assert.deepEqual(receiver.requests.filter((r) => r.path === '/down').map((r) => r.status), [503, 503, 503, 503, 503]);
    const described = await client.workflow.getHandle(first.workflowId).describe();
    assert.equal(described.status.name, 'COMPLETED');
    assert.equal(described.searchAttributes.BackupOutcome?.[0], 'alarm');
    await recordFault('webhooks: one answering 503 once, one always 503, one refusing connections', 'the first delivered on its retry, exactly once; the others tried 5 times over ~30 s each, logged, given up; BackupHealth still completed (outcome alarm)');

    // Still stale an hour later: no second alarm.
    const again = await runWorkflow<BackupHealthReport>(client, temporal.address, parseConfig(variant({ backup: { dir: staleDir } })), 'BackupHealth');
    assert.deepEqual(again.report!.raised, []);
    assert.equal(events('/hook').length, 1);

    // A fresh backup dir again: the problem is cleared and the recovery announced.
    const recovered = await runWorkflow<BackupHealthReport>(client, temporal.address, parseConfig(variant({})), 'BackupHealth');
    assert.equal(recovered.report!.ok, true, JSON.stringify(recovered.report!.problems));
    assert.deepEqual(recovered.report!.cleared.map((p) => p.split(':')[0]), ['local-dump stale']);
    const last = events('/hook').at(-1)!;
    assert.equal(last.event, 'recovered');
    assert.match(last.message, /^resolved: local-dump stale; all backups fresh$/);
  });

  test('a failed backup alerts (webhook, ntfy, /fail ping); the next success announces the recovery', async () => {
    const before = events('/hook').length;
    process.env.FIXTURE_DOCKER_CONTAINERS = 'immich_server,immich_redis';
    try {
      failedBackupId = `${runId(WORKFLOW_KINDS.NightlyDbBackup, 'test', new Date())}-failing`;
      const handle = await client.workflow.start('NightlyDbBackup', { taskQueue: config.temporal.taskQueue, workflowId: failedBackupId, args: [{ trigger: 'test' }] });
      await assert.rejects(handle.result(), WorkflowFailedError);
    } finally {
      process.env.FIXTURE_DOCKER_CONTAINERS = fixtureEnv(pg).FIXTURE_DOCKER_CONTAINERS;
    }
    const failure = events('/hook').slice(before);
    assert.equal(failure.length, 1);
    assert.equal(failure[0]!.event, 'failure');
    assert.equal(failure[0]!.kind, 'nightly-db-backup');
    assert.match(failure[0]!.message, /^nightly-db-backup failed: no running container matches \/immich\.\*postgres\//);
    assert.equal(receiver.delivered('/ping/nightly/fail').length, 1);
    assert.match(receiver.delivered('/ping/nightly/fail')[0]!.body, /no running container matches/);
    assert.equal(receiver.delivered('/ntfy/immich-alerts').at(-1)!.headers.title, 'immich-backup: nightly-db-backup failure');

    await execute('NightlyDbBackup');
    const recovery = events('/hook').slice(before + 1);
    assert.deepEqual(recovery.map((e) => [e.kind, e.event]), [['nightly-db-backup', 'recovered']]);
    assert.match(recovery[0]!.message, /^nightly-db-backup recovered: immich_\d{8}_\d{6}\.sql\.gz: \d+ bytes/);
  });

  test('the drill catches a dump with missing rows, names the table, alerts, and leaves no throwaway cluster', async () => {
    const dir = await tempDir('lossy');
    const lossy = parseConfig(variant({ backup: { dir }, postgres: { runtime: 'none', binDir: fixture('lossy-pg') } }));
    process.env.FIXTURE_DROP_ROWS = '10';
    const dirsBefore = await drillDirs();
    try {
      const backup = await runWorkflow<NightlyDbBackupReport>(client, temporal.address, lossy, 'NightlyDbBackup');
      assert.equal(backup.error, undefined, String(backup.error));
      const drill = await runWorkflow<RestoreDrillReport>(client, temporal.address, lossy, 'RestoreDrill');
      assert.ok(drill.error instanceof WorkflowFailedError);
      const failure = drill.error.cause;
      assert.ok(failure instanceof ApplicationFailure);
      assert.equal(failure.type, 'DrillFailedError');
      // The missing assets also break the faces' foreign key: both are in the one-line reason.
      assert.equal(
        failure.message,
        `restore drill of ${backup.report!.file} failed: 1 table(s) differ from the counts recorded at dump time: immich: public.assets ${ASSETS} recorded, ${ASSETS - 10} restored; ` +
          '3 statement(s) failed while loading, first: insert or update on table "asset_faces" violates foreign key constraint "asset_faces_assetId_fkey"',
      );
      const report = failure.details?.[0] as RestoreDrillReport;
      assert.deepEqual(report.differences, [{ table: 'immich: public.assets', recorded: ASSETS, restored: ASSETS - 10 }]);
      assert.equal(report.passed, false);
      assert.equal(report.loadErrorCount, 3);
      assert.equal(report.loadErrors.length, 3);
      failedDrillId = drill.workflowId;
    } finally {
      delete process.env.FIXTURE_DROP_ROWS;
    }
    assert.deepEqual(await drillDirs(), dirsBefore, 'the throwaway cluster is removed');
    const alert = events('/hook').at(-1)!;
    assert.deepEqual([alert.kind, alert.event], ['restore-drill', 'failure']);
    assert.match(alert.message, /public\.assets 1500 recorded, 1490 restored/);
    assert.equal(receiver.delivered('/ping/drill/fail').length, 1);
    await recordFault('a dump missing 10 rows of one table (lossy pg_dumpall)', 'the dump validated; RestoreDrill failed with DrillFailedError naming immich: public.assets 1500 recorded, 1490 restored (and the 3 foreign keys it broke); webhook, ntfy and /fail ping alerted; throwaway removed');
  });

  test('drill.engine container: a throwaway container of the live database\'s image, never published, removed afterwards', async () => {
    const log = join(await tempDir('docker-log'), 'docker.log');
    const state = await tempDir('docker-state');
    await chmod(state, 0o755); // the throwaway server runs as the postgres user
    Object.assign(process.env, { FIXTURE_DOCKER_LOG: log, FIXTURE_DOCKER_STATE: state });
    try {
      const { report, error } = await runWorkflow<RestoreDrillReport>(client, temporal.address, parseConfig(variant({ drill: { engine: 'container' } })), 'RestoreDrill');
      assert.equal(error, undefined, String(error));
      assert.equal(report!.engine, 'container');
      assert.equal(report!.passed, true);
      assert.deepEqual(report!.differences, []);
      const name = /^container (immich-backup-drill-\d{8}-\d{6}) \(ghcr\.io\/immich-app\/postgres:14-vectorchord0\.4\.3-pgvectors0\.2\.0\)$/.exec(report!.server)?.[1];
      assert.ok(name, report!.server);
      const calls = (await readFile(log, 'utf8')).trim().split('\n').map((l) => l.split(' ').filter((_, i) => i !== 1).join(' '));
      assert.ok(calls.includes('inspect {{.Config.Image}} immich_postgres'), calls.join('\n'));
      assert.ok(calls.includes(`run ${name} ghcr.io/immich-app/postgres:14-vectorchord0.4.3-pgvectors0.2.0`), calls.join('\n'));
      assert.equal(calls.filter((c) => c === `rm ${name}`).length, 2, 'removed before (a leftover of a lost attempt) and after');
      assert.ok(!calls.some((c) => c.startsWith('exec') && c.includes('immich_postgres') && c.includes('psql -h')), 'the live database was not loaded into');
      assert.deepEqual(await readdir(state), [], 'the throwaway is gone');
    } finally {
      delete process.env.FIXTURE_DOCKER_LOG;
      delete process.env.FIXTURE_DOCKER_STATE;
    }
  });

  test('search attributes: temporal workflow list --query finds runs by kind and outcome', async () => {
    const list = async (query: string) => {
      const r = await execa(temporalBinary, ['workflow', 'list', '--address', temporal.address, '--query', query, '--output', 'json']);
      const parsed = JSON.parse(r.stdout || '[]') as Array<{ execution: { workflowId: string } }> | { executions?: Array<{ execution: { workflowId: string } }> };
      return (Array.isArray(parsed) ? parsed : parsed.executions ?? []).map((w) => w.execution.workflowId);
    };
    const ok = await waitFor('the successful backup to be listed', async () => {
      const found = await list('BackupKind = "nightly-db-backup" AND BackupOutcome = "success"');
      return found.includes(ids.NightlyDbBackup!) ? found : undefined;
    });
    assert.ok(!ok.includes(failedBackupId), 'the failed backup is not among the successes');
    const failed = await list('BackupKind = "nightly-db-backup" AND BackupOutcome = "failure"');
    assert.deepEqual(failed, [failedBackupId]);
    assert.ok((await list('BackupKind = "restore-drill" AND BackupOutcome = "failure"')).includes(failedDrillId));
    assert.ok((await list('BackupOutcome = "alarm"')).length >= 2);
  });

  test('rerun starts a new run with the same input and follows it; an unknown ID is refused in one line', async () => {
    const r = await cli(['-c', configFile, 'rerun', ids.NightlyDbBackup!, '--json']);
    assert.equal(r.exitCode, 0, String(r.stderr));
    const newId = /^started (nightly-db-backup-rerun-\d{8}T\d{6}Z)$/m.exec(String(r.stderr))?.[1];
    assert.ok(newId, String(r.stderr));
    assert.match(String(r.stderr), new RegExp(`^rerun of ${ids.NightlyDbBackup} \\(NightlyDbBackup\\) with input \\{"trigger":"rerun"\\}$`, 'm'));
    const report = JSON.parse(String(r.stdout)) as NightlyDbBackupReport;
    assert.equal(report.trigger, 'rerun');
    assert.equal((await client.workflow.getHandle(newId).describe()).status.name, 'COMPLETED');

    const unknown = await cli(['-c', configFile, 'rerun', 'nightly-db-backup-no-such-run']);
    assert.equal(unknown.exitCode, 1);
    assert.match(String(unknown.stderr), /^error: cannot rerun nightly-db-backup-no-such-run: .*not found/im);
  });
});
