import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import type { LibraryAuditReport } from '../../workflows/index.js';
import { makeImmichLibrary, mountTmpfs } from '../helpers/library.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { stepReached } from '../helpers/restore-stack.js';
import { testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { fixtureEnv, tempDir, testConfig } from '../helpers/setup.js';
import { startTestTemporal } from '../helpers/temporal.js';

// Two LibraryAudit runs at once (a manual one during the day-long scheduled one): the second waits
// for the first, saying for whom, instead of counting the same assets and overwriting its position.
// A real PostgreSQL with Immich's asset table, a real tmpfs drive, a real dev server; the fixture
// docker slows each page of assets so the first run is still going when the second starts.

let temporal: Awaited<ReturnType<typeof startTestTemporal>>;
let pg: TestPostgres;
let connection: Connection;
let client: Client;
let unmount: (() => Promise<void>) | undefined;
before(async () => {
  [temporal, pg] = await Promise.all([startTestTemporal(), startPostgres()]);
  Object.assign(process.env, fixtureEnv(pg, { FIXTURE_DOCKER_DELAY: 'assets=3' }));
  connection = await Connection.connect({ address: temporal.address });
  client = new Client({ connection });
});
after(async () => {
  delete process.env.FIXTURE_DOCKER_DELAY;
  await unmount?.();
  await connection?.close();
  await Promise.all([temporal?.stop(), pg?.stop()]);
});

test('a second audit while one runs waits for it, naming it, and the two passes count each asset once each', async () => {
  const root = await tempDir('audit-lock');
  const source = join(root, 'upload');
  const mountPoint = join(root, 'wd-backup');
  const destination = join(mountPoint, 'immich');
  await makeImmichLibrary(pg, source, 20);
  unmount = (await mountTmpfs(mountPoint)).unmount;
  await execa('rsync', ['-a', `${source}/`, `${destination}/`]);
  const config = testConfig({ backupDir: join(root, 'dumps'), address: temporal.address, extra: { library: { source, destination, mountPoint } } });
  const reports = await withWorker(temporal.address, config, async () => {
    const start = (full: boolean) => client.workflow.start('LibraryAudit', { taskQueue: config.temporal.taskQueue, workflowId: testWorkflowId('LibraryAudit'), args: [{ trigger: 'test', full }] });
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
