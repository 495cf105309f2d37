import assert from 'node:assert/strict';
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { ScheduleOverlapPolicy, WorkflowFailedError } from '@temporalio/client';
import { recordFault } from '../helpers/fault-matrix.js';
import { makeLibrary, mountTmpfs } from '../helpers/library.js';
import { failureType } from '../helpers/restore-stack.js';
import { runWorkflow, withWorker } from '../helpers/run-workflow.js';
import { cli } from '../helpers/cli.js';
import { rawTestConfig, tempDir, testConfig, writeConfigFile } from '../helpers/setup.js';
import { parseConfig } from '../../config/config.js';
import { useStack } from '../helpers/stack.js';
import { applySchedules } from '../../temporal/schedules.js';

// The schedule authorizes its own runs (no start token), but only with the input the tool gives it:
// anyone who reaches the frontend can edit a schedule's arguments. A real dev server, a real tmpfs
// drive, real rsync.

const stack = useStack();

test('an approval of rewrites put into the schedule\'s arguments is refused: the schedule authorizes only its own input', async () => {
  const root = await tempDir('schedule-accept');
  const source = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  const destination = join(mountPoint, 'immich');
  await makeLibrary(source, 60);
  const mount = await mountTmpfs(mountPoint);
  try {
    const config = testConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { library: { source, destination, mountPoint, writeOnce: { maxFiles: 2, maxShare: 1 } } } });
    assert.equal((await runWorkflow(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror')).error, undefined);
    const files = (await readdir(source, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort().slice(0, 10);
    for (const p of files) {
      await writeFile(p, Buffer.concat([await readFile(p), Buffer.from('ENCRYPTED')]));
      const t = new Date(Date.now() + 60_000);
      await utimes(p, t, t);
    }
    const refused = failureType((await runWorkflow(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror')).error);
    const [, count, digest] = /--accept-rewrites (\d+):([0-9a-f]{32})/.exec(refused.message)!;
    // The attacker reads the approval from the refused run's history and edits the schedule's input.
    await applySchedules(stack.client, config);
    const schedule = stack.client.schedule.getHandle('weekly-library-mirror');
    await schedule.update((prev) => ({ ...prev, action: { ...prev.action, args: [{ trigger: 'schedule', acceptRewrites: { count: Number(count), digest } }] } }));
    const error = await withWorker(stack.temporal.address, config, async () => {
      await schedule.trigger(ScheduleOverlapPolicy.SKIP); // as the schedule's own runs: it lists the run it started
      for (;;) {
        const action = (await schedule.describe()).info.recentActions.at(-1);
        if (action) return stack.client.workflow.getHandle(action.action.workflow.workflowId).result().then(() => undefined, (err: unknown) => err);
        await new Promise((r) => setTimeout(r, 300));
      }
    });
    assert.ok(error instanceof WorkflowFailedError, 'the run must fail');
    assert.equal(failureType(error).type, 'UnauthorizedError');
    const mirrored = await readFile(join(destination, files[0]!.slice(source.length + 1)));
    assert.equal(mirrored.includes(Buffer.from('ENCRYPTED')), false, 'the mirror still holds the original bytes');
    await schedule.delete();
    await recordFault('the schedule\'s arguments edited to approve a mass rewrite', 'the run was refused (UnauthorizedError): a schedule authorizes only its own input; the mirror kept the originals');
  } finally {
    await mount.unmount();
  }
});

test('`schedules trigger` starts a deleting mirror the schedule authorizes (it lists the run as its own)', async () => {
  const root = await tempDir('schedule-trigger');
  const source = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  const destination = join(mountPoint, 'immich');
  await makeLibrary(source, 20);
  const mount = await mountTmpfs(mountPoint);
  try {
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { library: { source, destination, mountPoint, delete: true } } });
    const config = parseConfig(raw);
    const file = await writeConfigFile(root, raw);
    await applySchedules(stack.client, config);
    const schedule = stack.client.schedule.getHandle('weekly-library-mirror');
    try {
      const result = await withWorker(stack.temporal.address, config, async () => {
        const r = await cli(['-c', file, 'schedules', 'trigger', 'weekly-library-mirror']);
        assert.equal(r.exitCode, 0, r.stderr);
        for (;;) {
          const action = (await schedule.describe()).info.recentActions.at(-1);
          if (action) return stack.client.workflow.getHandle(action.action.workflow.workflowId).result().then(() => 'completed', (err: unknown) => failureType(err).message);
          await new Promise((r) => setTimeout(r, 300));
        }
      });
      assert.equal(result, 'completed');
      assert.equal((await readdir(destination, { recursive: true })).length > 0, true);
    } finally {
      await schedule.delete();
    }
  } finally {
    await mount.unmount();
  }
});
