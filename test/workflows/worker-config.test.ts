import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { freePort } from '../helpers/net.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// Problem 2 of issue 16: `-c edited.yml` on a CLI command changes only what that command reads;
// the run it starts uses the worker's config. The worker publishes which config it runs with and
// the CLI says so when its own differs.

let worker: ReturnType<typeof spawnCli>;
let workerFile = '';
let editedFile = '';

/** A config file in a folder of its own; both share the task queue, the NAS (a closed port) and the bounds. */
async function configFile(name: string, taskQueue: string, nasPort: number, postgres: Record<string, unknown>): Promise<string> {
  const dir = await tempDir(name);
  const raw = rawTestConfig({
    backupDir: join(dir, 'dumps'),
    address: stack.temporal.address,
    taskQueue,
    extra: { postgres, offsite: { host: '127.0.0.1', port: nasPort }, status: { rowTimeoutSeconds: 5 }, log: { level: 'info' } },
  });
  return writeConfigFile(dir, raw);
}

const stack = useStack({}, async () => {
  const taskQueue = `worker-config-${process.pid}`;
  const nasPort = await freePort();
  workerFile = await configFile('worker-config', taskQueue, nasPort, {});
  // Edited: another staging dir and another container pattern.
  editedFile = await configFile('edited-config', taskQueue, nasPort, { containerPattern: '^immich_edited$' });
  worker = spawnCli(['-c', workerFile, 'worker']);
  stack.defer(async () => {
    worker.process.kill('SIGTERM');
    await worker.process;
  });
  await workerStarted(worker);
});

const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('warning: '));

describe("the worker's config is what runs, and the CLI says so", () => {
  test('the worker logs the config file and digest it runs with', () => {
    const started = worker.stdout().split('\n').find((l) => l.includes('"msg":"worker started"'));
    assert.match(started ?? '', new RegExp(`"configFile":"${workerFile}","configDigest":"[0-9a-f]{16}"`));
  });

  test('backup db with another config warns in one line that the worker\'s config runs, and the run uses the worker\'s', async () => {
    const r = await cli(['-c', editedFile, 'backup', 'db']);
    const lines = warnings(r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, new RegExp(`^warning: the worker \\d+@\\S+ runs with config ${workerFile} \\(digest [0-9a-f]{16}\\), not with this command's ${editedFile} \\(digest [0-9a-f]{16}\\): the worker's config is what runs; -c changes only what this command itself reads$`));
    // The worker looked for its own pattern, not the edited one: the warning was right.
    assert.match(r.stderr.trim().split('\n').at(-1)!, /^error: workflow failed: ContainerNotFoundError: no running container matches \/immich\.\*postgres\//);
  });

  test('status with another config warns too, and does not fail for it', async () => {
    const r = await cli(['-c', editedFile, 'status', '--json']);
    assert.equal(warnings(r.stderr).length, 1, r.stderr);
    assert.ok(JSON.parse(r.stdout).rows.length > 0, 'the report is still printed');
  });

  test('with the worker\'s own config nothing is said', async () => {
    for (const command of [['backup', 'db'], ['status', '--json']]) {
      const r = await cli(['-c', workerFile, ...command]);
      assert.deepEqual(warnings(r.stderr), [], `${command.join(' ')}: ${r.stderr}`);
    }
  });
});
