import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { execa } from 'execa';
import type { LibraryAuditReport } from '../../workflows/index.js';
import { makeImmichLibrary, mountTmpfs } from '../helpers/library.js';
import { stepReached } from '../helpers/restore-stack.js';
import { testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// Two LibraryAudit runs at once (a manual one during the day-long scheduled one): the second waits
// for the first, saying for whom, instead of counting the same assets and overwriting its position.
// A real PostgreSQL with Immich's asset table, a real tmpfs drive, a real dev server; the fixture
// docker slows each page of assets so the first run is still going when the second starts.

const stack = useStack({ postgres: true, dockerEnv: { FIXTURE_DOCKER_DELAY: 'assets=3' } });

test('a second audit while one runs waits for it, naming it, and the two passes count each asset once each', async () => {
  const root = await tempDir('audit-lock');
  const source = join(root, 'upload');
  const mountPoint = join(root, 'wd-backup');
  const destination = join(mountPoint, 'immich');
  await makeImmichLibrary(stack.pg, source, 20);
  stack.mounted(await mountTmpfs(mountPoint));
  await execa('rsync', ['-a', `${source}/`, `${destination}/`]);
  const config = testConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { library: { source, destination, mountPoint } } });
  const reports = await withWorker(stack.temporal.address, config, async () => {
    const start = (full: boolean) => stack.client.workflow.start('LibraryAudit', { taskQueue: config.temporal.taskQueue, workflowId: testWorkflowId('LibraryAudit'), args: [{ trigger: 'test', full }] });
    const first = await start(true);
    await stepReached(first, 'auditing the library');
    const second = await start(true);
    const waiting = await stepReached(second, (s) => s.startsWith('waiting for the library-audit: in use by'));
    assert.match(waiting, new RegExp(`in use by ${first.workflowId}`));
    return Promise.all([first.result(), second.result()]) as Promise<LibraryAuditReport[]>;
  });
  for (const r of reports) {
    assert.equal(r.pass.completed, true);
    assert.equal(r.pass.library.ok, 20, 'each pass counted every asset once');
  }
});
