import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { parseConfig } from '../../config/config.js';
import type { NightlyDbBackupReport } from '../../workflows/index.js';
import { spawnCli, workerStarted } from '../helpers/cli.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { waitFor } from '../helpers/net.js';
import { rowCounts } from '../helpers/postgres.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { startAuthorized } from '../helpers/trust.js';

// A worker process SIGKILLed while psql loads a dump: Temporal notices the silence, and the
// workflow (on a new worker) puts the restore point back and starts Immich again.

const stack = useStack({ postgres: 800, ping: true });

describe('faults: restore', () => {
  test('worker killed mid-restore: the restore point is put back and Immich is started again', async () => {
    const root = await tempDir('fault-restore');
    const dockerLog = join(root, 'docker.log');
    const env = fixtureEnv(stack.pg, { FIXTURE_DOCKER_LOG: dockerLog });
    Object.assign(process.env, env);
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { immich: { composeDir: root, pingUrl: stack.ping.url, healthTimeoutSeconds: 10 }, log: { level: 'info' } } });
    const config = parseConfig(raw);
    const { report: dump } = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup');
    // A pause in the middle of the load (the fixture docker holds psql's input after its first 64 KiB)
    // gives the kill its moment: the strict filter would refuse a pg_sleep() planted in the dump.
    env.FIXTURE_DOCKER_DELAY = 'load=15';
    await stack.pg.psql(`DELETE FROM assets WHERE "originalPath" LIKE '%/2022/%'`, 'immich');
    const before = await rowCounts(stack.pg);
    await new Promise((r) => setTimeout(r, 1000));

    const configFile = await writeConfigFile(root, raw);
    const first = spawnCli(['-c', configFile, 'worker'], env);
    let second: ReturnType<typeof spawnCli> | undefined;
    try {
      await workerStarted(first);
      const handle = await startAuthorized(stack.client, config, 'RestoreDatabase', `fault-restore-${Date.now()}`, { dump: dump!.file, approved: true });
      await waitFor('psql loading the dump', async () => ((await handle.query<string>('currentStep')) === 'restoring' && Number(await stack.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql' AND pid <> pg_backend_pid()")) >= 1 ? true : undefined), 60_000, 200);
      await new Promise((r) => setTimeout(r, 1500)); // its first 64 KiB are in: the databases were dropped and are being refilled
      await rm(dockerLog, { force: true });
      first.process.kill('SIGKILL');
      await first.process;
      second = spawnCli(['-c', configFile, 'worker'], { ...env, FIXTURE_DOCKER_DELAY: '' });
      const error = await handle.result().then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof WorkflowFailedError, `the run reports the failed restore, got ${String(error)}`);
      const message = (error.cause as Error).message;
      assert.match(message, /^restore of immich_\d{8}_\d{6}\.sql\.gz failed \(.*\); the restore point \S+\/restore-points\/restore-point_\d{8}_\d{6}\.sql\.gz was put back; Immich started \(healthy\)$/);
      assert.deepEqual(await rowCounts(stack.pg), before, 'the data is as it was before the restore');
      const calls = existsSync(dockerLog) ? await readFile(dockerLog, 'utf8') : '';
      assert.match(calls, /^compose-up /m, 'Immich started again');
      await recordFault('worker killed (SIGKILL) mid-restore (psql loading)', `after the 30 s heartbeat timeout a new worker put the restore point back and started Immich (healthy); data equals the pre-restore state; run failed: "${message.slice(0, 120)}…"`);
    } finally {
      first.process.kill('SIGKILL');
      second?.process.kill('SIGTERM');
      await second?.process;
    }
  });
});
