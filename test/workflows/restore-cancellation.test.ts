import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { freePort } from '../helpers/net.js';
import { rowCounts } from '../helpers/postgres.js';
import { failureType, stepReached, useRestoreStack } from '../helpers/restore-stack.js';

// Cancelling RestoreDatabase at each step: before Immich stops nothing changes; after, the restore
// point goes back and Immich is started, in a scope cancellation cannot reach. The end says which.

const stack = useRestoreStack();
const { world, dockerCalls, changeData } = stack;

describe('RestoreDatabase cancelled', () => {
  test('problem 3: cancelled before anything changed (at once, or while waiting for approval): nothing changed, and the end says so', async () => {
    for (const when of ['at once', 'awaiting approval'] as const) {
      const w = await world();
      await w.backup();
      await changeData();
      const changed = await rowCounts(stack.pg);
      await rm(stack.dockerLog, { force: true });
      const { error } = await w.restore({}, async (id) => {
        const handle = stack.client.workflow.getHandle(id);
        if (when === 'awaiting approval') await stepReached(handle, when);
        await handle.cancel();
      });
      const failure = failureType(error);
      assert.equal(failure.type, 'RestoreCancelledError', failure.message);
      assert.match(failure.message, /^restore cancelled while .+: nothing was changed$/);
      if (when === 'awaiting approval') assert.equal(failure.message, 'restore cancelled while awaiting approval: nothing was changed');
      assert.deepEqual(await dockerCalls(), []);
      assert.deepEqual(await rowCounts(stack.pg), changed);
    }
  });

  // Each later step, slowed down by the fixture docker so the cancellation lands inside it.
  const cancelPoints: Array<{ step: string; delay: string; ends: RegExp; data: 'unchanged' | 'restored'; calls: string[] }> = [
    { step: 'taking a restore point', delay: 'pg_dumpall=30', ends: /^restore cancelled while taking a restore point: nothing was changed$/, data: 'unchanged', calls: [] },
    { step: 'stopping Immich', delay: 'stop=30', ends: /^restore cancelled while stopping Immich: the database was not touched; Immich started \(healthy\)$/, data: 'unchanged', calls: ['compose-up'] },
    { step: 'restoring', delay: 'load=6', ends: /^restore cancelled while restoring: the restore point \S+\/restore-points\/restore-point_\d{8}_\d{6}\.sql\.gz was put back; Immich started \(healthy\)$/, data: 'unchanged', calls: ['stop', 'compose-up'] },
    { step: 'starting Immich', delay: 'compose=4', ends: /^restored /, data: 'restored', calls: ['stop', 'compose-up'] },
  ];
  for (const point of cancelPoints) {
    test(`problem 3: cancelled while ${point.step}: ${point.data === 'restored' ? 'too late to stop, the restore completes and Immich is started' : 'the database is back as it was and Immich runs'}`, async () => {
      const w = await world();
      const before = await rowCounts(stack.pg);
      await w.backup();
      await changeData();
      const changed = await rowCounts(stack.pg);
      await rm(stack.dockerLog, { force: true });
      process.env.FIXTURE_DOCKER_DELAY = point.delay;
      try {
        const { report, error } = await w.restore({ approved: true }, async (id) => {
          const handle = stack.client.workflow.getHandle(id);
          await stepReached(handle, point.step);
          await new Promise((r) => setTimeout(r, 1500)); // inside the step's command, not before it
          await handle.cancel();
        });
        const message = error ? failureType(error).message : report!.message;
        if (point.data === 'unchanged') assert.equal(failureType(error).type, 'RestoreCancelledError');
        assert.match(message, point.ends);
      } finally {
        delete process.env.FIXTURE_DOCKER_DELAY;
      }
      assert.deepEqual(await rowCounts(stack.pg), point.data === 'restored' ? before : changed);
      assert.deepEqual((await dockerCalls()).map((l) => l.split(' ')[0]), point.calls);
    });
  }

  test('problem 3: cancelled while waiting for Immich: the restore is done and Immich started; the end says it is not healthy yet', async () => {
    const w = await world({ immich: { pingUrl: `http://127.0.0.1:${await freePort()}/api/server/ping`, healthTimeoutSeconds: 4 } });
    const before = await rowCounts(stack.pg);
    await w.backup();
    await changeData();
    const { report, error } = await w.restore({ approved: true }, async (id) => {
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'waiting for Immich');
      await handle.cancel();
    });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.healthy, false);
    assert.deepEqual(await rowCounts(stack.pg), before);
  });

});
