import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { parseConfig } from '../../config/config.js';
import { formatStamp } from '../../core/dump-names.js';
import { startDevServer } from '../../temporal/dev-server.js';
import { createLogger } from '../../config/logger.js';
import { applySchedules } from '../../temporal/schedules.js';
import type { NightlyDbBackupReport } from '../../workflows/index.js';
import { spawnCli, workerStarted } from '../helpers/cli.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { mountTmpfs } from '../helpers/library.js';
import { freePorts, waitFor } from '../helpers/net.js';
import { temporalBinary } from '../helpers/paths.js';
import { holdLock, someoneWaitsForLock } from '../helpers/postgres.js';
import { activityAttempts, runWorkflow } from '../helpers/run-workflow.js';
import { fixtureEnv, listDir, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// Faults around NightlyDbBackup, each injected into real processes: PostgreSQL, the staging
// filesystem, the Temporal server itself, and two runs at once.

const stack = useStack({ postgres: 1500, dockerEnv: true });

describe('faults: NightlyDbBackup', () => {
  test('PostgreSQL killed mid-dump: the attempt fails, is retried, nothing is pruned, no partial dump is visible', async () => {
    const dir = await tempDir('fault-pgkill');
    const yesterday = `immich_${formatStamp(new Date(Date.now() - 24 * 3600 * 1000))}.sql.gz`;
    await writeFile(join(dir, yesterday), 'yesterday');
    await writeFile(join(dir, `${yesterday}.sha256`), 'x');
    const config = parseConfig(rawTestConfig({ backupDir: dir }));
    const lock = await holdLock(stack.pg, 'assets');
    let sawPartial = false;
    const { report, error, workflowId } = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup', async () => {
      await waitFor('pg_dump waiting inside the dump', () => someoneWaitsForLock(stack.pg));
      sawPartial = (await listDir(dir)).some((n) => n.endsWith('.partial'));
      // SIGKILL to the backend serving pg_dump: PostgreSQL ends every session and recovers.
      const pid = await stack.pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'");
      await execa('kill', ['-KILL', pid]);
      await lock.release().catch(() => undefined);
      const names = await listDir(dir);
      assert.ok(!names.some((n) => /^immich_\d{8}_\d{6}\.sql\.gz$/.test(n) && n !== yesterday), 'no new dump under a final name while it failed');
    });
    assert.equal(error, undefined, String(error));
    assert.ok(sawPartial);
    const attempts = await activityAttempts(stack.client, workflowId);
    assert.ok(attempts.some((a) => a >= 2), `retried: ${attempts.join(',')}`);
    assert.deepEqual(await listDir(dir), [yesterday, `${yesterday}.sha256`, report!.file, `${report!.file}.hmac`, `${report!.file}.sha256`, `${report!.file}.rows.json`].sort());
    await execa('gzip', ['-t', join(dir, report!.file)]);
    await recordFault('PostgreSQL killed mid-dump (SIGKILL to the pg_dump backend)', `pg_dumpall lost its server and exited non-zero, so the attempt failed before it could count as a backup; retried (attempt ${Math.max(...attempts)} succeeded); no partial dump under a final name; older dump kept; new dump gzip-valid`);
  });

  test('staging filesystem full: a clear "no space" failure, the temporary file removed, nothing pruned', async () => {
    const root = await tempDir('fault-full');
    const dir = join(root, 'staging');
    const mount = await mountTmpfs(dir, '64k');
    try {
      const old = 'immich_20200101_030000.sql.gz';
      await writeFile(join(dir, old), 'old');
      await writeFile(join(dir, `${old}.sha256`), 'x');
      const config = parseConfig(rawTestConfig({ backupDir: dir }));
      const { error } = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup');
      const failure = (error as { cause?: { cause?: { type?: string; message: string } } }).cause?.cause;
      assert.equal(failure?.type, 'NoSpaceError');
      assert.match(failure!.message, new RegExp(`^no space left on the filesystem of ${dir}`));
      assert.deepEqual(await listDir(dir), [old, `${old}.sha256`], 'temporary file removed, old dump not pruned');
      await recordFault('staging filesystem full (64 KiB tmpfs)', `NoSpaceError, not retried: "${failure!.message}"; temp file removed; old dump kept`);
    } finally {
      await mount.unmount();
    }
  });

  test('the Temporal dev server restarted mid-workflow (state in its SQLite file): the workflow completes', async () => {
    const root = await tempDir('fault-restart');
    const [port, uiPort] = (await freePorts(2)) as [number, number];
    const logger = createLogger({ level: 'fatal', fd: 2 });
    const serverOptions = { binary: temporalBinary, dataDir: join(root, 'temporal'), ip: '127.0.0.1', port, uiPort, namespace: stack.temporal.namespace, headless: true, logger };
    let server = await startDevServer(serverOptions);
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: server.address, extra: { log: { level: 'info' } } });
    const worker = spawnCli(['-c', await writeConfigFile(root, raw), 'worker'], fixtureEnv(stack.pg));
    const lock = await holdLock(stack.pg, 'assets');
    try {
      await workerStarted(worker);
      let c = await Connection.connect({ address: server.address });
      const handle = await new Client({ connection: c, namespace: stack.temporal.namespace }).workflow.start('NightlyDbBackup', { taskQueue: raw.temporal!.taskQueue as string, workflowId: `restart-${Date.now()}`, args: [{}] });
      await waitFor('the dump in flight', () => someoneWaitsForLock(stack.pg));
      await c.close();
      await server.stop();
      server = await startDevServer(serverOptions);
      await lock.release();
      c = await Connection.connect({ address: server.address });
      const report = (await new Client({ connection: c, namespace: stack.temporal.namespace }).workflow.getHandle(handle.workflowId).result()) as NightlyDbBackupReport;
      await c.close();
      await execa('gzip', ['-t', report.path]);
      await recordFault('Temporal dev server restarted mid-workflow (SQLite-persisted)', `workflow ${handle.workflowId} completed after the restart; dump ${report.file} valid`);
    } finally {
      await lock.release().catch(() => undefined);
      worker.process.kill('SIGTERM');
      await worker.process;
      await server.stop();
    }
  });

  test('two backups triggered at once: one runs, the other is skipped by the overlap policy', async () => {
    const root = await tempDir('fault-overlap');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { log: { level: 'info' } } });
    const config = parseConfig(raw);
    await applySchedules(stack.client, config);
    const worker = spawnCli(['-c', await writeConfigFile(root, raw), 'worker'], fixtureEnv(stack.pg));
    const lock = await holdLock(stack.pg, 'assets');
    try {
      await workerStarted(worker);
      const schedule = stack.client.schedule.getHandle('nightly-db-backup');
      await Promise.all([schedule.trigger(), schedule.trigger()]);
      await waitFor('the first run to be in flight', () => someoneWaitsForLock(stack.pg));
      await new Promise((r) => setTimeout(r, 1500));
      await lock.release();
      const info = await waitFor('the run to finish', async () => {
        const d = await schedule.describe();
        const last = d.info.recentActions.at(-1);
        const status = last ? (await stack.client.workflow.getHandle(last.action.workflow.workflowId).describe()).status.name : undefined;
        return status === 'COMPLETED' ? d.info : undefined;
      }, 60_000, 500);
      assert.equal(info.recentActions.length, 1, 'one run');
      // Skipped, not buffered: nothing starts after the first run ends either.
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal((await schedule.describe()).info.recentActions.length, 1, 'still one run');
      const dumps = (await listDir(join(root, 'dumps'))).filter((n) => n.endsWith('.sql.gz'));
      assert.equal(dumps.length, 1);
      await recordFault('two backups triggered at once (schedule trigger ×2)', 'one run; the second trigger skipped by overlap policy skip (no run started after the first ended either); one dump written, one writer');
    } finally {
      await lock.release().catch(() => undefined);
      worker.process.kill('SIGTERM');
      await worker.process;
      for (const id of ['nightly-db-backup', 'offsite-sync', 'weekly-library-mirror']) await stack.client.schedule.getHandle(id).delete();
    }
  });
});
