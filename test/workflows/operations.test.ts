import assert from 'node:assert/strict';
import { chmod, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { execa } from 'execa';
import { parseConfig, type Config } from '../../config/config.js';
import { formatStamp } from '../../core/dump-names.js';
import { runId, WORKFLOW_KINDS, type WorkflowType } from '../../core/ids.js';
import { createLogger } from '../../config/logger.js';
import type { StatusReport } from '../../core/reports.js';
import { applySchedules } from '../../temporal/schedules.js';
import type { BackupHealthReport, NightlyDbBackupReport, RestoreDrillReport } from '../../workflows/index.js';
import { confirmRecoveryCode, recoveryStatus } from '../../adapters/dump-store/recovery.js';
import { createBackupWorker } from '../../workers/worker.js';
import { cli } from '../helpers/cli.js';
import { makeLibrary, mountTmpfs } from '../helpers/library.js';
import { freePort, waitFor } from '../helpers/net.js';
import { fixture, temporalBinary } from '../helpers/paths.js';
import { pgBin } from '../helpers/postgres.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { fixtureEnv, rawTestConfig, tempDir, useOwnTmpdir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { plantDump } from '../helpers/trust.js';

// Operating it: status, the BackupHealth alarm, notifications, the restore drill, search
// attributes and rerun, on real parts: a Temporal dev server, PostgreSQL, sshd on loopback as the
// NAS, a tmpfs as the USB drive, and a local HTTP server receiving webhooks, ntfy messages and pings.

useOwnTmpdir();
const ASSETS = 1500;
const NEVER = '0 0 1 1 *'; // schedules exist but do not fire during the test

let base = '';
let backupDir = '';
let raw: ReturnType<typeof rawTestConfig>;
let config: Config;
let configFile = '';

/** The runs the status tests start from: schedules applied, then a backup, its NAS copy, the mirror and a passing drill, each the newest run of its kind. */
async function freshRuns() {
  await applySchedules(stack.client, config);
  const nightly = await execute<NightlyDbBackupReport>('NightlyDbBackup');
  await execute('OffsiteSync');
  await execute('WeeklyLibraryMirror');
  const drill = await execute<RestoreDrillReport>('RestoreDrill');
  return { nightly, drill };
}

let fresh: ReturnType<typeof freshRuns> | undefined;
/**
 * freshRuns, once for every test that needs its state. A test that leaves a failed run as the
 * newest of its kind puts a successful one after it, so that state holds whichever test ran last.
 */
function freshState(again = false): ReturnType<typeof freshRuns> {
  if (again || !fresh) {
    fresh = freshRuns().catch((err: unknown) => {
      fresh = undefined;
      throw err;
    });
  }
  return fresh;
}

/** The fresh setup's raw config with some sections changed. */
function variant(changes: Record<string, Record<string, unknown>>, taskQueue = `${String(raw.temporal!.taskQueue)}-${Math.random().toString(36).slice(2, 8)}`): ReturnType<typeof rawTestConfig> {
  const copy = structuredClone(raw);
  for (const [section, values] of Object.entries(changes)) copy[section] = { ...copy[section], ...values };
  copy.temporal = { ...copy.temporal, taskQueue };
  return copy;
}

async function execute<T>(type: WorkflowType): Promise<{ report: T; workflowId: string }> {
  const workflowId = `${runId(WORKFLOW_KINDS[type], 'test', new Date())}-${Math.random().toString(36).slice(2, 6)}`;
  const report = await stack.client.workflow.execute<(input: object) => Promise<T>>(type, { taskQueue: config.temporal.taskQueue, workflowId, args: [{ trigger: 'test' }] });
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

type Event = { kind: string; event: string; message: string; workflowId: string };

/** What the receiver gets from now on: each test reads only what its own runs sent. */
function received() {
  const from = stack.receiver.requests.length;
  const requests = (path: string) => stack.receiver.requests.slice(from).filter((r) => r.path === path);
  const delivered = (path: string) => requests(path).filter((r) => r.status < 300);
  return { requests, delivered, events: (path: string) => delivered(path).map((r) => JSON.parse(r.body) as Event) };
}
// The drill's throwaway clusters are counted in this file's own temporary directory (useOwnTmpdir).
const drillDirs = async () => (await readdir(tmpdir())).filter((n) => n.startsWith('immich-backup-drill-'));

/** Runs `run` while the fixture docker lists no PostgreSQL container: a backup fails at once. */
async function withoutPostgresContainer<T>(run: () => Promise<T>): Promise<T> {
  process.env.FIXTURE_DOCKER_CONTAINERS = 'immich_server,immich_redis';
  try {
    return await run();
  } finally {
    process.env.FIXTURE_DOCKER_CONTAINERS = fixtureEnv(stack.pg).FIXTURE_DOCKER_CONTAINERS;
  }
}

/** A backup through a pg_dumpall that loses 10 rows of assets (the dump validates), then a drill of it. */
async function lossyDrill(taskQueue?: string) {
  const dir = await tempDir('lossy');
  const lossy = parseConfig(variant({ backup: { dir }, postgres: { runtime: 'none', binDir: fixture('lossy-pg') } }, taskQueue));
  process.env.FIXTURE_DROP_ROWS = '10';
  try {
    const backup = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, lossy, 'NightlyDbBackup');
    assert.equal(backup.error, undefined, String(backup.error));
    return { backup, drill: await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, lossy, 'RestoreDrill') };
  } finally {
    delete process.env.FIXTURE_DROP_ROWS;
  }
}

const stack = useStack({ postgres: ASSETS, dockerEnv: { FIXTURE_PG_BIN: pgBin }, sshd: true, receiver: true }, async () => {
  base = await tempDir('ops');
  backupDir = join(base, 'dumps');
  const source = join(base, 'library');
  await makeLibrary(source, 40);
  const wd = join(base, 'wd-backup');
  stack.mounted(await mountTmpfs(wd));
  raw = rawTestConfig({
    backupDir,
    address: stack.temporal.address,
    extra: {
      offsite: { ...stack.sshd.offsite, remoteDir: join(base, 'nas', 'postgres') },
      library: { source, destination: join(wd, 'immich'), mountPoint: wd },
      schedules: { nightlyDbBackup: NEVER, offsiteSync: NEVER, weeklyLibraryMirror: NEVER, backupHealth: NEVER, restoreDrill: NEVER, libraryAudit: NEVER },
      notifications: {
        webhooks: [`${stack.receiver.url}/hook`],
        ntfy: [`${stack.receiver.url}/ntfy/immich-alerts`],
        pings: { nightlyDbBackup: `${stack.receiver.url}/ping/nightly`, restoreDrill: `${stack.receiver.url}/ping/drill` },
        timeoutSeconds: 2,
      },
    },
  });
  config = parseConfig(raw);
  configFile = await writeConfigFile(base, raw);
  const { worker, connection } = await createBackupWorker({ config, logger: createLogger({ level: 'fatal', fd: 2 }), address: stack.temporal.address });
  // The operator wrote the recovery code down and typed it back: until then, status reports it as a problem.
  await confirmRecoveryCode(config.security.keyFile, (await recoveryStatus(config.security.keyFile))!.code!);
  const running = worker.run();
  // Registered after the mount: the worker stops before the drive is unmounted.
  stack.defer(async () => {
    worker.shutdown();
    await running;
    await connection.close();
  });
});

describe('status, drill, alarm and notifications', () => {
  test('after a backup, offsite sync, mirror and drill, status is fresh: exit 0, every row ok, pings sent', async () => {
    const seen = received();
    const dirsBefore = await drillDirs();
    const { nightly, drill } = await freshState(true);
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
    // The NAS holds the dump encrypted: its row checks the ciphertext against its .age.sha256.
    assert.equal(nas.details?.encrypted, true);
    assert.equal(nas.details?.sha256, (await readFile(join(base, 'nas', 'postgres', `${nightly.report.file}.age.sha256`), 'utf8')).split(' ')[0]);
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
    for (const p of ['/ping/nightly/start', '/ping/nightly', '/ping/drill/start', '/ping/drill']) assert.equal(seen.delivered(p).length, 1, p);
    assert.equal(seen.requests('/hook').length + seen.requests('/ntfy/immich-alerts').length, 0);
  });

  test('a dump older than 26 hours makes status say stale and exit 1', async () => {
    await freshState();
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
    await freshState();
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
    await freshState();
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
    await freshState();
    const file = await writeConfigFile(await tempDir('no-drive'), variant({ library: { mountPoint: join(base, 'not-a-mount'), destination: join(base, 'not-a-mount', 'immich') } }));
    const { exitCode, report } = await status(file);
    assert.equal(exitCode, 1);
    const mirror = rowOf(report, 'library-mirror');
    assert.equal(mirror.state, 'unreachable');
    assert.match(mirror.summary, /^drive not mounted at .*not-a-mount; last mirrored (just now|\d+ min ago) \(weekly-library-mirror-test-/);
  });

  test('BackupHealth alarms once on a stale backup, by webhook and ntfy; an undeliverable target is retried and never fails it; the recovery is announced', async () => {
    await freshState();
    // A problem is alarmed on when the previous check did not have it: this one finds none.
    const baseline = await runWorkflow<BackupHealthReport>(stack.client, stack.temporal.address, parseConfig(variant({})), 'BackupHealth');
    assert.equal(baseline.report?.ok, true, JSON.stringify(baseline.report?.problems ?? baseline.error));
    const seen = received();
    const staleDir = await tempDir('stale-health');
    const fresh = (await readdir(backupDir)).find((n) => n.endsWith('.sql.gz'))!;
    const old = `immich_${formatStamp(new Date(Date.now() - 40 * 3_600_000))}.sql.gz`;
    const body = await readFile(join(backupDir, fresh));
    await plantDump(config, staleDir, old, body);
    const closed = await freePort();
    const webhooks = [`${stack.receiver.url}/hook`, `${stack.receiver.url}/down`, `http://127.0.0.1:${closed}/refused`];
    const stale = variant({ backup: { dir: staleDir }, notifications: { ...raw.notifications, webhooks } });
    stack.receiver.failNext('/hook', 503); // the first delivery is refused; the retry delivers it
    stack.receiver.failNext('/down', ...Array<number>(10).fill(503)); // never accepts

    const first = await runWorkflow<BackupHealthReport>(stack.client, stack.temporal.address, parseConfig(stale), 'BackupHealth');
    assert.equal(first.error, undefined, String(first.error));
    assert.equal(first.report!.ok, false);
    assert.deepEqual(first.report!.raised.map((p) => p.split(':')[0]), ['local-dump stale']);
    const hooks = seen.requests('/hook');
    assert.deepEqual(hooks.map((r) => r.status), [503, 200], 'refused once, then delivered once');
    const alarm = seen.events('/hook')[0]!;
    assert.equal(alarm.kind, 'backup-health');
    assert.equal(alarm.event, 'alarm');
    assert.match(alarm.message, /^1 new problem\(s\): local-dump stale: immich_\d{8}_\d{6}\.sql\.gz: 40 h old/);
    const ntfy = seen.delivered('/ntfy/immich-alerts');
    assert.equal(ntfy.length, 1);
    assert.equal(ntfy[0]!.headers.title, 'immich-backup: backup-health alarm');
    assert.equal(ntfy[0]!.headers.priority, 'high');
    assert.equal(ntfy[0]!.body, alarm.message);
    // The target that never accepts was tried 5 times, the refused one too, and the run still completed.
    assert.deepEqual(seen.requests('/down').map((r) => r.status), [503, 503, 503, 503, 503]);
    const described = await stack.client.workflow.getHandle(first.workflowId).describe();
    assert.equal(described.status.name, 'COMPLETED');
    assert.equal(described.searchAttributes.BackupOutcome?.[0], 'alarm');
    await recordFault('webhooks: one answering 503 once, one always 503, one refusing connections', 'the first delivered on its retry, exactly once; the others tried 5 times over ~30 s each, logged, given up; BackupHealth still completed (outcome alarm)');

    // Still stale an hour later: no second alarm.
    const again = await runWorkflow<BackupHealthReport>(stack.client, stack.temporal.address, parseConfig(variant({ backup: { dir: staleDir } })), 'BackupHealth');
    assert.deepEqual(again.report!.raised, []);
    assert.equal(seen.events('/hook').length, 1);

    // A fresh backup dir again: the problem is cleared and the recovery announced.
    const recovered = await runWorkflow<BackupHealthReport>(stack.client, stack.temporal.address, parseConfig(variant({})), 'BackupHealth');
    assert.equal(recovered.report!.ok, true, JSON.stringify(recovered.report!.problems));
    assert.deepEqual(recovered.report!.cleared.map((p) => p.split(':')[0]), ['local-dump stale']);
    const last = seen.events('/hook').at(-1)!;
    assert.equal(last.event, 'recovered');
    assert.match(last.message, /^resolved: local-dump stale; all backups fresh$/);
  });

  test('a failed backup alerts (webhook, ntfy, /fail ping); the next success announces the recovery', async () => {
    const seen = received();
    await withoutPostgresContainer(async () => {
      const handle = await stack.client.workflow.start('NightlyDbBackup', { taskQueue: config.temporal.taskQueue, workflowId: `${runId(WORKFLOW_KINDS.NightlyDbBackup, 'test', new Date())}-failing`, args: [{ trigger: 'test' }] });
      await assert.rejects(handle.result(), WorkflowFailedError);
    });
    const failure = seen.events('/hook');
    assert.equal(failure.length, 1);
    assert.equal(failure[0]!.event, 'failure');
    assert.equal(failure[0]!.kind, 'nightly-db-backup');
    assert.match(failure[0]!.message, /^nightly-db-backup failed: no running container matches \/immich\.\*postgres\//);
    assert.equal(seen.delivered('/ping/nightly/fail').length, 1);
    assert.match(seen.delivered('/ping/nightly/fail')[0]!.body, /no running container matches/);
    assert.equal(seen.delivered('/ntfy/immich-alerts').at(-1)!.headers.title, 'immich-backup: nightly-db-backup failure');

    await execute('NightlyDbBackup');
    const recovery = seen.events('/hook').slice(1);
    assert.deepEqual(recovery.map((e) => [e.kind, e.event]), [['nightly-db-backup', 'recovered']]);
    assert.match(recovery[0]!.message, /^nightly-db-backup recovered: immich_\d{8}_\d{6}\.sql\.gz: \d+ bytes/);
  });

  test('the drill catches a dump with missing rows, names the table, alerts, and leaves no throwaway cluster; the next passing drill announces the recovery', async () => {
    const seen = received();
    const dirsBefore = await drillDirs();
    const { backup, drill } = await lossyDrill();
    assert.ok(drill.error instanceof WorkflowFailedError);
    const failure = drill.error.cause;
    assert.ok(failure instanceof ApplicationFailure);
    assert.equal(failure.type, 'DrillFailedError');
    // The missing assets also break the faces' foreign key: both are in the one-line reason. The load
    // stops at that first failed statement (ON_ERROR_STOP), after every table's data was in.
    assert.equal(
      failure.message,
      `restore drill of ${backup.report!.file} failed: 1 table(s) differ from the counts recorded at dump time: immich: public.assets ${ASSETS} recorded, ${ASSETS - 10} restored; ` +
        '1 statement(s) failed while loading, first: insert or update on table "asset_faces" violates foreign key constraint "asset_faces_assetId_fkey"',
    );
    const report = failure.details?.[0] as RestoreDrillReport;
    assert.deepEqual(report.differences, [{ table: 'immich: public.assets', recorded: ASSETS, restored: ASSETS - 10 }]);
    assert.equal(report.passed, false);
    assert.equal(report.loadErrorCount, 1);
    assert.equal(report.loadErrors.length, 1);
    assert.deepEqual(await drillDirs(), dirsBefore, 'the throwaway cluster is removed');
    const alert = seen.events('/hook').at(-1)!;
    assert.deepEqual([alert.kind, alert.event], ['restore-drill', 'failure']);
    assert.match(alert.message, /public\.assets 1500 recorded, 1490 restored/);
    assert.equal(seen.delivered('/ping/drill/fail').length, 1);
    await recordFault('a dump missing 10 rows of one table (lossy pg_dumpall)', 'the dump validated; RestoreDrill failed with DrillFailedError naming immich: public.assets 1500 recorded, 1490 restored (and the first foreign key it broke, where the load stopped); webhook, ntfy and /fail ping alerted; throwaway removed');

    // A drill of the fresh backup passes: the newest drill is a passing one again.
    await freshState();
    await execute('RestoreDrill');
    assert.deepEqual(seen.events('/hook').slice(1).map((e) => [e.kind, e.event]), [['restore-drill', 'recovered']]);
  });

  test('drill.engine container: a throwaway container of the live database\'s image, never published, without network, removed afterwards', async () => {
    await freshState();
    const log = join(await tempDir('docker-log'), 'docker.log');
    const state = await tempDir('docker-state');
    await chmod(state, 0o755); // the throwaway server runs as the postgres user
    Object.assign(process.env, { FIXTURE_DOCKER_LOG: log, FIXTURE_DOCKER_STATE: state });
    try {
      const { report, error } = await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, parseConfig(variant({ drill: { engine: 'container' } })), 'RestoreDrill');
      assert.equal(error, undefined, String(error));
      assert.equal(report!.engine, 'container');
      assert.equal(report!.passed, true);
      assert.deepEqual(report!.differences, []);
      const name = /^container (immich-backup-drill-\d{8}-\d{6}) \(ghcr\.io\/immich-app\/postgres:14-vectorchord0\.4\.3-pgvectors0\.2\.0\)$/.exec(report!.server)?.[1];
      assert.ok(name, report!.server);
      const calls = (await readFile(log, 'utf8')).trim().split('\n').map((l) => l.split(' ').filter((_, i) => i !== 1).join(' '));
      assert.ok(calls.includes('inspect {{.Config.Image}} immich_postgres'), calls.join('\n'));
      // --network none: what the dump runs in the container reaches no network (the fixture only records it).
      assert.ok(calls.includes(`run ${name} ghcr.io/immich-app/postgres:14-vectorchord0.4.3-pgvectors0.2.0 --network none`), calls.join('\n'));
      assert.equal(calls.filter((c) => c === `rm ${name}`).length, 2, 'removed before (a leftover of a lost attempt) and after');
      assert.ok(!calls.some((c) => c.startsWith('exec') && c.includes('immich_postgres') && c.includes('psql -h')), 'the live database was not loaded into');
      assert.deepEqual(await readdir(state), [], 'the throwaway is gone');
    } finally {
      delete process.env.FIXTURE_DOCKER_LOG;
      delete process.env.FIXTURE_DOCKER_STATE;
    }
  });

  test('search attributes: temporal workflow list --query finds runs by kind and outcome', async () => {
    // Runs of each outcome on a task queue of their own, so the lists are exactly these runs.
    const taskQueue = `${String(raw.temporal!.taskQueue)}-search`;
    const on = (changes: Record<string, Record<string, unknown>>) => parseConfig(variant(changes, taskQueue));
    const failing = on({ backup: { dir: await tempDir('search') } });
    const failedBackup = await withoutPostgresContainer(() => runWorkflow(stack.client, stack.temporal.address, failing, 'NightlyDbBackup'));
    assert.ok(failedBackup.error instanceof WorkflowFailedError);
    const { backup, drill: failedDrill } = await lossyDrill(taskQueue);
    assert.ok(failedDrill.error instanceof WorkflowFailedError);
    const noDumps = on({ backup: { dir: await tempDir('search-empty') } });
    const alarms = [await runWorkflow<BackupHealthReport>(stack.client, stack.temporal.address, noDumps, 'BackupHealth'), await runWorkflow<BackupHealthReport>(stack.client, stack.temporal.address, noDumps, 'BackupHealth')];
    for (const a of alarms) assert.equal(a.report?.ok, false);
    // The newest drill passes again (the other tests' state).
    await freshState();
    await execute('RestoreDrill');

    const list = async (query: string) => {
      const r = await execa(temporalBinary, ['workflow', 'list', '--address', stack.temporal.address, '--namespace', stack.temporal.namespace, '--query', `TaskQueue = "${taskQueue}" AND ${query}`, '--output', 'json']);
      const parsed = JSON.parse(r.stdout || '[]') as Array<{ execution: { workflowId: string } }> | { executions?: Array<{ execution: { workflowId: string } }> };
      return (Array.isArray(parsed) ? parsed : parsed.executions ?? []).map((w) => w.execution.workflowId).sort();
    };
    // Visibility lags the runs: wait until as many are listed as ran, then compare.
    const listed = (query: string, expected: string[]) => waitFor(`${expected.length} run(s) listed for ${query}`, async () => {
      const found = await list(query);
      return found.length >= expected.length ? found : undefined;
    });
    for (const [query, runs] of [
      ['BackupKind = "nightly-db-backup" AND BackupOutcome = "success"', [backup]],
      ['BackupKind = "nightly-db-backup" AND BackupOutcome = "failure"', [failedBackup]],
      ['BackupKind = "restore-drill" AND BackupOutcome = "failure"', [failedDrill]],
      ['BackupOutcome = "alarm"', alarms],
    ] as const) {
      const expected = runs.map((r) => r.workflowId).sort();
      assert.deepEqual(await listed(query, expected), expected, query);
    }
  });

  test('rerun starts a new run with the same input and follows it; an unknown ID is refused in one line', async () => {
    const { nightly } = await freshState();
    const r = await cli(['-c', configFile, 'rerun', nightly.workflowId, '--json']);
    assert.equal(r.exitCode, 0, String(r.stderr));
    const newId = /^started (nightly-db-backup-rerun-\d{8}T\d{6}Z)$/m.exec(String(r.stderr))?.[1];
    assert.ok(newId, String(r.stderr));
    assert.match(String(r.stderr), new RegExp(`^rerun of ${nightly.workflowId} \\(NightlyDbBackup\\) with input \\{"trigger":"rerun"\\}$`, 'm'));
    const report = JSON.parse(String(r.stdout)) as NightlyDbBackupReport;
    assert.equal(report.trigger, 'rerun');
    assert.equal((await stack.client.workflow.getHandle(newId).describe()).status.name, 'COMPLETED');

    const unknown = await cli(['-c', configFile, 'rerun', 'nightly-db-backup-no-such-run']);
    assert.equal(unknown.exitCode, 1);
    assert.match(String(unknown.stderr), /^error: cannot rerun nightly-db-backup-no-such-run: .*not found/im);
  });
});
