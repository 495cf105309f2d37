import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { BackupHealthReport } from '../../workflows/index.js';
import { freePort } from '../helpers/net.js';
import { testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// BackupHealth runs hourly for as long as the tool is installed: its result must not grow with the
// number of runs behind it (at Temporal's 2 MB payload limit the dead-man's switch itself would fail).

const RUNS = 50;
const stack = useStack();

describe('BackupHealth payload', () => {
  test('fifty checks in a row return results of the same small size, and no status row carries an earlier run\'s result', async () => {
    const dir = await tempDir('health-size');
    const notMounted = join(dir, 'wd-backup');
    await mkdir(notMounted);
    // Quick, certain problems: no dumps, a NAS port nobody listens on, no drive.
    const config = testConfig({
      backupDir: join(dir, 'dumps'),
      address: stack.temporal.address,
      extra: {
        offsite: { host: '127.0.0.1', port: await freePort(), connectTimeoutSeconds: 2 },
        library: { mountPoint: notMounted, destination: join(notMounted, 'immich') },
      },
    });
    const sizes: number[] = [];
    let last: BackupHealthReport | undefined;
    await withWorker(stack.temporal.address, config, async () => {
      for (let i = 0; i < RUNS; i++) {
        const handle = await stack.client.workflow.start('BackupHealth', { taskQueue: config.temporal.taskQueue, workflowId: testWorkflowId('BackupHealth'), args: [{ trigger: 'test' }] });
        last = (await handle.result()) as BackupHealthReport;
        const completed = (await handle.fetchHistory()).events?.at(-1)?.workflowExecutionCompletedEventAttributes;
        const payload = completed?.result?.payloads?.[0]?.data;
        assert.ok(payload, `run ${i + 1} completed with a result`);
        sizes.push(payload.length);
      }
    });
    const [second, fiftieth] = [sizes[1]!, sizes[RUNS - 1]!];
    assert.ok(Math.abs(fiftieth - second) < 300, `the 50th result (${fiftieth} bytes) is within 300 bytes of the 2nd (${second} bytes); all: ${sizes.join(' ')}`);
    assert.ok(fiftieth < 8192, `the 50th result is ${fiftieth} bytes`);

    const rows = last!.rows;
    for (const row of rows) {
      const keys = Object.keys(row.details ?? {});
      assert.ok(!keys.includes('result') && !keys.includes('report'), `${row.id} carries no result: ${keys.join(', ')}`);
      assert.ok(!/"(rows|problems|raised)":/.test(JSON.stringify(row)), `${row.id} nests no status report: ${JSON.stringify(row)}`);
    }
    const previous = rows.find((r) => r.id === 'last-run:backup-health');
    assert.ok(previous, 'the previous check has its row');
    assert.match(previous.summary, /^COMPLETED /);
    assert.deepEqual(Object.keys(previous.details ?? {}).sort(), ['closedAt', 'runId', 'status', 'workflowId']);
  });
});
