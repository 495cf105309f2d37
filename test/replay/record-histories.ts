// Records one history of every workflow from real runs (the real worker and activities, a Temporal
// dev server, PostgreSQL, sshd as the NAS, a tmpfs as the drive) into test/replay/histories/, which
// test/replay/replay.test.ts replays against the current workflow code. Run by
// scripts/record-histories.sh; small inputs keep each history small. It overwrites only the files
// it writes: histories kept from before a patch (docs/workflow-versioning.md) stay.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { lockWorkflowId, type WorkflowType } from '../../core/ids.js';
import { AWAITING_APPROVAL } from '../../core/restore-plan.js';
import { approveUpdate, currentStepQuery, restorePlanQuery } from '../../core/messages.js';
import { makeImmichLibrary, mountTmpfs } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { startPingServer } from '../helpers/ping.js';
import { loadImmichLike, pgBin, startPostgres } from '../helpers/postgres.js';
import { DESTRUCTIVE, withWorker } from '../helpers/run-workflow.js';
import { fixtureEnv, tempDir, testConfig } from '../helpers/setup.js';
import { startSshd } from '../helpers/sshd.js';
import { startTestTemporal } from '../helpers/temporal.js';
import { decisionFields, startAuthorized } from '../helpers/trust.js';
import { HISTORIES_DIR, historyToJson } from './history-json.js';

const TASK_QUEUE = 'replay';

const [temporal, pg, sshd, ping] = await Promise.all([startTestTemporal(), startPostgres(), startSshd(), startPingServer()]);
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
    },
  });

  const recorded: Array<{ file: string; handle: WorkflowHandle }> = [];
  /** Runs one workflow to its end; `during` acts on it while it runs (the approval). */
  const run = async (type: WorkflowType, name: string, input: Record<string, unknown> = {}, during?: (h: WorkflowHandle) => Promise<void>) => {
    const workflowId = `replay-${name}`;
    const handle = DESTRUCTIVE.has(type)
      ? await startAuthorized(client, config, type, workflowId, { trigger: 'test', ...input })
      : await client.workflow.start(type, { taskQueue: TASK_QUEUE, workflowId, args: [{ trigger: 'test', ...input }] });
    await during?.(handle);
    await handle.result();
    recorded.push({ file: `${workflowId}.json`, handle });
    console.log(`recorded ${workflowId}`);
  };
  /** Approves a restore as `immich-backup restore approve` does: by the approveRestore Update, naming the dump shown. */
  const approve = async (handle: WorkflowHandle) => {
    const plan = await waitFor('the restore to wait for approval', async () => ((await handle.query(currentStepQuery)) === AWAITING_APPROVAL ? handle.query(restorePlanQuery) : undefined), 60_000);
    await handle.executeUpdate(approveUpdate, { args: [{ ...(plan.dump ? { sha256: plan.dump.sha256 } : {}), ...(await decisionFields(config, handle)) }] });
  };

  await withWorker(temporal.address, config, async () => {
    await run('NightlyDbBackup', 'nightly-db-backup');
    await run('OffsiteSync', 'offsite-sync');
    await run('WeeklyLibraryMirror', 'weekly-library-mirror');
    await run('RestoreDrill', 'restore-drill');
    await run('LibraryAudit', 'library-audit');
    await run('BackupHealth', 'backup-health');
    await run('RestoreDatabase', 'restore-database-approved', {}, approve);
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
      recorded.push({ file: `replay-resource-lock-${resource}.json`, handle });
      console.log(`recorded the ${resource} lock`);
    }
  });

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
