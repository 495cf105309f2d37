// Records one history of every workflow from real runs (the real worker and activities, a Temporal
// dev server, PostgreSQL, sshd as the NAS, a tmpfs as the drive) into test/replay/histories/, which
// test/replay/replay.test.ts replays against the current workflow code. Besides each workflow's
// run that goes well, RestoreDatabase's other ends: rejected after refused approvals, cancelled
// while it waits and while it loads, a load that fails and is rolled back, no approval in time.
// Run by scripts/record-histories.sh; small inputs keep each history small. It overwrites only the
// files it writes: histories kept from before a patch (docs/workflow-versioning.md) stay. With
// workflow IDs as arguments (replay-restore-database-rollback ...), every run still happens (later
// runs need what earlier ones leave), but only those histories are written.
import assert from 'node:assert/strict';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { lockWorkflowId, type WorkflowType } from '../../core/ids.js';
import { AWAITING_APPROVAL } from '../../core/restore-plan.js';
import { approveUpdate, currentStepQuery, legacyApproveSignal, rejectUpdate, restorePlanQuery } from '../../core/messages.js';
import { makeImmichLibrary, mountTmpfs } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { startPingServer } from '../helpers/ping.js';
import { refusal, stepReached, tamper } from '../helpers/restore-stack.js';
import { loadImmichLike, pgBin, startPostgres } from '../helpers/postgres.js';
import { DESTRUCTIVE, withWorker } from '../helpers/run-workflow.js';
import { fixtureEnv, tempDir, testConfig } from '../helpers/setup.js';
import { startSshd } from '../helpers/sshd.js';
import { startTestTemporal } from '../helpers/temporal.js';
import { decisionFields, startAuthorized } from '../helpers/trust.js';
import type { NightlyDbBackupReport } from '../../workflows/index.js';
import { HISTORIES_DIR, historyToJson } from './history-json.js';

const TASK_QUEUE = 'replay';
const only = process.argv.slice(2);

// A server of its own (never the test run's shared one): the recorder's client and workers use the default namespace.
const [temporal, pg, sshd, ping] = await Promise.all([startTestTemporal(undefined, { own: true }), startPostgres(), startSshd(), startPingServer()]);
const connection = await Connection.connect({ address: temporal.address });
const client = new Client({ connection });
const root = await tempDir('record');
const drive = await mountTmpfs(join(root, 'wd-backup'), '64m');
try {
  await loadImmichLike(pg, 20, 4);
  const upload = join(root, 'upload');
  await makeImmichLibrary(pg, upload, 8);
  Object.assign(process.env, fixtureEnv(pg, { FIXTURE_PG_BIN: pgBin, FIXTURE_DOCKER_LOG: join(root, 'docker.log') }));
  const wd = join(root, 'wd-backup');
  const config = testConfig({
    backupDir: join(root, 'dumps'),
    address: temporal.address,
    taskQueue: TASK_QUEUE,
    extra: {
      offsite: { ...sshd.offsite, remoteDir: join(root, 'nas', 'postgres') },
      library: { source: upload, destination: join(wd, 'immich'), mountPoint: wd, mountWaitMinutes: 0 },
      immich: { composeDir: root, pingUrl: ping.url, healthTimeoutSeconds: 5 },
      // The drill drills the NAS copy OffsiteSync just made (the same dump as the local one).
      drill: { offsiteCopy: true },
    },
  });

  const recorded: Array<{ file: string; handle: WorkflowHandle }> = [];
  const record = (file: string, handle: WorkflowHandle) => {
    if (only.length && !only.includes(file.replace(/\.json$/, ''))) return;
    recorded.push({ file, handle });
    console.log(`recorded ${file}`);
  };
  /**
   * Runs one workflow to its end; `during` acts on it while it runs (the approval). `fails`: the
   * run is meant to end failed with that failure type (a cancelled restore ends failed).
   */
  const run = async (type: WorkflowType, name: string, input: Record<string, unknown> = {}, during?: (h: WorkflowHandle) => Promise<void>, fails?: string) => {
    const workflowId = `replay-${name}`;
    const handle = DESTRUCTIVE.has(type)
      ? await startAuthorized(client, config, type, workflowId, { trigger: 'test', ...input })
      : await client.workflow.start(type, { taskQueue: TASK_QUEUE, workflowId, args: [{ trigger: 'test', ...input }] });
    await during?.(handle);
    if (fails) await assert.rejects(handle.result(), (err) => (innermost(err) as { type?: string }).type === fails);
    else await handle.result();
    record(`${workflowId}.json`, handle);
    return handle;
  };
  const innermost = (err: unknown): unknown => (err instanceof Error && err.cause ? innermost(err.cause) : err);
  /** The plan of a restore once it waits for approval. */
  const awaitingApproval = (handle: WorkflowHandle) => waitFor('the restore to wait for approval', async () => ((await handle.query(currentStepQuery)) === AWAITING_APPROVAL ? handle.query(restorePlanQuery) : undefined), 60_000);
  /** Approves a restore as `immich-backup restore approve` does: by the approveRestore Update, naming the dump shown. */
  const approve = async (handle: WorkflowHandle) => {
    const plan = await awaitingApproval(handle);
    await handle.executeUpdate(approveUpdate, { args: [{ ...(plan.dump ? { sha256: plan.dump.sha256 } : {}), ...(await decisionFields(config, handle)) }] });
  };
  /**
   * An approve signal (what older versions and the Web UI send: ignored), approvals the validator
   * refuses (a token that is not the run's, another dump), then a rejection with the run's token.
   */
  const refuseThenReject = async (handle: WorkflowHandle) => {
    const plan = await awaitingApproval(handle);
    const fields = await decisionFields(config, handle);
    await handle.signal(legacyApproveSignal);
    await assert.rejects(handle.executeUpdate(approveUpdate, { args: [{ sha256: plan.dump!.sha256, token: 'f'.repeat(64), by: 'root' }] }), (err) => /no valid approval token for this run/.test(refusal(err)));
    await assert.rejects(handle.executeUpdate(approveUpdate, { args: [{ sha256: '0'.repeat(64), ...fields }] }), (err) => /: not approved$/.test(refusal(err)));
    await handle.executeUpdate(rejectUpdate, { args: [{ ...fields, reason: 'wrong dump' }] });
  };
  /** Cancels the run once it is in `step`, inside the step's command (the fixture docker slows it down). */
  const cancelIn = (step: string) => async (handle: WorkflowHandle) => {
    await stepReached(handle, step);
    if (step !== AWAITING_APPROVAL) await new Promise((r) => setTimeout(r, 1500));
    await handle.cancel();
  };

  await withWorker(temporal.address, config, async () => {
    const nightly = await run('NightlyDbBackup', 'nightly-db-backup');
    await run('OffsiteSync', 'offsite-sync');
    await run('WeeklyLibraryMirror', 'weekly-library-mirror');
    await run('RestoreDrill', 'restore-drill');
    await run('LibraryAudit', 'library-audit');
    await run('BackupHealth', 'backup-health');
    await run('RestoreDatabase', 'restore-database-approved', {}, approve);
    await run('RestoreDatabase', 'restore-database-rejected', {}, refuseThenReject);
    await run('RestoreDatabase', 'restore-database-cancelled-awaiting-approval', {}, cancelIn(AWAITING_APPROVAL), 'RestoreCancelledError');
    process.env.FIXTURE_DOCKER_DELAY = 'load=6';
    await run('RestoreDatabase', 'restore-database-cancelled-restoring', { approved: true }, cancelIn('restoring'), 'RestoreCancelledError');
    delete process.env.FIXTURE_DOCKER_DELAY;
    // Valid and tagged, but psql stops on a statement after the databases were dropped: the restore point goes back.
    const { file } = (await nightly.result()) as NightlyDbBackupReport;
    await tamper(join(root, 'dumps'), file, (sql) => sql.replace(/(\nCOPY public\.exif )/, '\nALTER TABLE public.no_such_table OWNER TO postgres;$1'), file, config);
    await run('RestoreDatabase', 'restore-database-rollback', { dump: file, approved: true }, undefined, 'RestoreFailedError');
    const [lost] = (await readdir(join(upload, 'library', 'user0'), { recursive: true })).filter((f) => f.endsWith('.jpg'));
    await rm(join(upload, 'library', 'user0', lost!));
    await run('RestoreLibrary', 'restore-library-approved', {}, approve);
    // The locks idle until they end (10 minutes): recorded once the last release is handled.
    for (const resource of ['database', 'library'] as const) {
      const handle = client.workflow.getHandle(lockWorkflowId(TASK_QUEUE, resource));
      await waitFor(`the ${resource} lock to be idle`, async () => {
        const events = (await handle.fetchHistory()).events ?? [];
        const lastTask = [...events].reverse().find((e) => e.workflowTaskScheduledEventAttributes || e.workflowTaskStartedEventAttributes || e.workflowTaskCompletedEventAttributes);
        return lastTask?.workflowTaskCompletedEventAttributes ? true : undefined;
      });
      record(`replay-resource-lock-${resource}.json`, handle);
    }
  });
  // Its own worker: an approval window of 3 s, which ends the wait on its timer.
  await withWorker(temporal.address, { ...config, restore: { ...config.restore, approvalTimeoutMinutes: 0.05 } }, async () => {
    await run('RestoreDatabase', 'restore-database-not-approved');
  });

  const unknown = only.filter((id) => !recorded.some(({ file }) => file === `${id}.json`));
  if (unknown.length) throw new Error(`no run records ${unknown.join(', ')}: nothing written`);
  await mkdir(HISTORIES_DIR, { recursive: true });
  for (const { file, handle } of recorded) {
    const history = await handle.fetchHistory();
    await writeFile(join(HISTORIES_DIR, file), `${JSON.stringify(historyToJson(history), null, 1)}\n`);
  }
  for (const resource of ['database', 'library'] as const) await client.workflow.getHandle(lockWorkflowId(TASK_QUEUE, resource)).terminate('histories recorded');
  console.log(`${recorded.length} histories written to ${HISTORIES_DIR}`);
} finally {
  await connection.close();
  await drive.unmount();
  await Promise.all([temporal.stop(), pg.stop(), sshd.stop(), ping.stop()]);
}
