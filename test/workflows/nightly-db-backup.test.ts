import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure, CancelledFailure, RetryState } from '@temporalio/common';
import { execa } from 'execa';
import type { Config } from '../../config/config.js';
import type { NightlyDbBackupReport } from '../../workflows/index.js';
import { waitFor } from '../helpers/net.js';
import { ownProcessesNamed } from '../helpers/processes.js';
import { holdLock, pgBin, rowCounts, someoneWaitsForLock, startPostgres } from '../helpers/postgres.js';
import { fixtureEnv, listDir, tempDir, testConfig } from '../helpers/setup.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { useStack } from '../helpers/stack.js';
import { recordFault } from '../helpers/fault-matrix.js';

// NightlyDbBackup end to end: a real Temporal dev server, a real PostgreSQL holding Immich-like
// data, real pg_dumpall and pigz; the fixture docker stands in for the Docker CLI.

const stack = useStack({ postgres: 3000, dockerEnv: true });

/** Runs one NightlyDbBackup on an in-process worker with this config; returns the result or the failure. */
const runBackup = (config: Config, during?: (workflowId: string) => Promise<void>) =>
  runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup', during);

function innermost(err: unknown): { activity: ActivityFailure; failure: ApplicationFailure } {
  assert.ok(err instanceof WorkflowFailedError, `expected a failed workflow, got ${String(err)}`);
  const activity = err.cause;
  assert.ok(activity instanceof ActivityFailure, `expected an activity failure, got ${String(activity)}`);
  assert.ok(activity.cause instanceof ApplicationFailure);
  return { activity, failure: activity.cause };
}

describe('NightlyDbBackup', () => {
  test('writes a validated 0600 dump that restores into a fresh server with identical row counts', async () => {
    const dir = await tempDir('staging');
    const { report, error } = await runBackup(testConfig({ backupDir: dir }));
    assert.equal(error, undefined);
    assert.ok(report);
    assert.match(report.file, /^immich_\d{8}_\d{6}\.sql\.gz$/);
    assert.equal(report.source, 'immich_postgres');
    assert.deepEqual(await listDir(dir), [report.file, `${report.file}.hmac`, `${report.file}.rows.json`, `${report.file}.sha256`]);
    for (const f of [report.file, `${report.file}.sha256`, `${report.file}.hmac`, `${report.file}.rows.json`]) assert.equal((await stat(join(dir, f))).mode & 0o777, 0o600, `${f} mode`);
    // The row counts RestoreDrill compares against: every Immich table, exactly as counted live.
    const recorded = JSON.parse(await readFile(join(dir, `${report.file}.rows.json`), 'utf8')) as { file: string; tables: Record<string, number> };
    assert.equal(recorded.file, report.file);
    for (const [table, count] of Object.entries(await rowCounts(stack.pg))) assert.equal(recorded.tables[`immich: public.${table}`], count, table);
    assert.equal(report.rowCounts.tables, Object.keys(recorded.tables).length);
    await recordFault('check: dump and checksum file modes', 'both 0600 (owner only), measured with stat');
    // The checksum file is in sha256sum's format and agrees with the report.
    await execa('sha256sum', ['-c', `${report.file}.sha256`], { cwd: dir });
    assert.equal((await readFile(join(dir, `${report.file}.sha256`), 'utf8')).split(' ')[0], report.sha256);
    assert.equal(report.bytes, (await stat(join(dir, report.file))).size);

    const fresh = await startPostgres();
    try {
      // Restored as the runbook does (zcat | psql); "current user cannot be dropped" is expected noise.
      const restore = execa(join(pgBin, 'psql'), ['-X', '-q', '-d', 'postgres'], { env: fresh.env, reject: false, stdout: 'ignore' });
      await execa('gunzip', ['-c', join(dir, report.file)], { buffer: false }).pipe(restore);
      assert.deepEqual(await rowCounts(fresh), await rowCounts(stack.pg));
      assert.equal(await fresh.psql(`SELECT md5(string_agg(raw::text, ',' ORDER BY "assetId")) FROM exif`, 'immich'), await stack.pg.psql(`SELECT md5(string_agg(raw::text, ',' ORDER BY "assetId")) FROM exif`, 'immich'));
    } finally {
      await fresh.stop();
    }
  });

  test('with postgres.runtime none it dumps with the host tools through the libpq variables', async () => {
    const dir = await tempDir('staging');
    const log = join(dir, '..', `docker-${Date.now()}.log`);
    process.env.FIXTURE_DOCKER_LOG = log;
    try {
      const { report, error } = await runBackup(testConfig({ backupDir: dir, extra: { postgres: { runtime: 'none', binDir: pgBin } } }));
      assert.equal(error, undefined);
      assert.equal(report?.source, 'host');
      assert.equal(existsSync(log), false, 'docker was not called');
    } finally {
      delete process.env.FIXTURE_DOCKER_LOG;
    }
  });

  test('no matching container fails at once, non-retryable, naming the pattern', async () => {
    const dir = await tempDir('staging');
    process.env.FIXTURE_DOCKER_CONTAINERS = 'immich_server,immich_redis';
    try {
      const { error } = await runBackup(testConfig({ backupDir: dir }));
      const { activity, failure } = innermost(error);
      assert.equal(failure.type, 'ContainerNotFoundError');
      assert.equal(activity.retryState, RetryState.NON_RETRYABLE_FAILURE);
      assert.match(failure.message, /immich\.\*postgres/);
      assert.deepEqual(await listDir(dir), []);
    } finally {
      process.env.FIXTURE_DOCKER_CONTAINERS = fixtureEnv(stack.pg).FIXTURE_DOCKER_CONTAINERS;
    }
  });

  test('two matching containers fail at once, non-retryable, naming both', async () => {
    const dir = await tempDir('staging');
    process.env.FIXTURE_DOCKER_CONTAINERS = 'immich_postgres,immich_postgres_old,immich_server';
    try {
      const { error } = await runBackup(testConfig({ backupDir: dir }));
      const { activity, failure } = innermost(error);
      assert.equal(failure.type, 'AmbiguousContainerError');
      assert.equal(activity.retryState, RetryState.NON_RETRYABLE_FAILURE);
      assert.match(failure.message, /immich_postgres, immich_postgres_old/);
    } finally {
      process.env.FIXTURE_DOCKER_CONTAINERS = fixtureEnv(stack.pg).FIXTURE_DOCKER_CONTAINERS;
    }
  });

  test('a dump below backup.minBytes fails validation, is moved aside, and nothing is pruned', async () => {
    const dir = await tempDir('staging');
    // Two old dumps far outside the 7-day retention: a successful run would prune them.
    const old = ['immich_20200101_030000.sql.gz', 'immich_20200102_030000.sql.gz'];
    for (const name of old) {
      await writeFile(join(dir, name), 'old');
      await writeFile(join(dir, `${name}.sha256`), 'x');
    }
    const { error } = await runBackup(testConfig({ backupDir: dir, extra: { backup: { minBytes: 500 * 1024 * 1024 } } }));
    const { failure } = innermost(error);
    assert.equal(failure.type, 'DumpTooSmallError');
    assert.match(failure.message, /expected at least 524288000/);
    const left = await listDir(dir);
    for (const name of old) assert.ok(left.includes(name), `${name} kept`);
    assert.deepEqual(left.filter((n) => n.startsWith('immich_2026') || n.startsWith('.')), [], 'no new dump under a final name, no temporary file');
    const rejected = await listDir(join(dir, 'rejected'));
    assert.equal(rejected.length, 2);
  });

  test('a successful run prunes dumps past retention but keeps recent ones and files that are not ours', async () => {
    const dir = await tempDir('staging');
    const stale = 'immich_20200101_030000.sql.gz';
    const recent = new Date(Date.now() - 2 * 24 * 3600 * 1000).toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
    const recentName = `immich_${recent}.sql.gz`;
    const foreign = ['notes.txt', 'immich_old.sql.gz', 'immich-db-backup-20200101.sql.gz'];
    for (const name of [stale, recentName, ...foreign]) {
      await writeFile(join(dir, name), 'x');
      await utimes(join(dir, name), new Date('2020-01-01'), new Date('2020-01-01'));
    }
    await writeFile(join(dir, `${stale}.sha256`), 'x');
    const { report, error } = await runBackup(testConfig({ backupDir: dir }));
    assert.equal(error, undefined);
    assert.deepEqual(report?.pruned, [stale]);
    const left = await listDir(dir);
    assert.ok(!left.includes(stale) && !left.includes(`${stale}.sha256`));
    for (const name of [recentName, ...foreign, report!.file]) assert.ok(left.includes(name), `${name} kept`);
  });

  test('cancelling the workflow kills pg_dumpall and leaves no temporary file', async () => {
    const dir = await tempDir('staging');
    const log = join(dir, '..', `docker-${Date.now()}.log`);
    process.env.FIXTURE_DOCKER_LOG = log;
    // A real lock makes pg_dump wait inside the dump, so the cancellation lands mid-dump.
    const lock = await holdLock(stack.pg, 'assets');
    let pid = 0;
    try {
      const { error } = await runBackup(testConfig({ backupDir: dir }), async (workflowId) => {
        pid = Number(await waitFor('pg_dumpall to start', async () => {
          const text = existsSync(log) ? await readFile(log, 'utf8') : '';
          return /^exec (\d+) immich_postgres pg_dumpall/m.exec(text)?.[1];
        }));
        await waitFor('pg_dump to wait on the lock', () => someoneWaitsForLock(stack.pg));
        assert.ok((await listDir(dir)).some((n) => n.endsWith('.partial')), 'a temporary file is being written');
        await stack.client.workflow.getHandle(workflowId).cancel();
      });
      assert.ok(error instanceof WorkflowFailedError && error.cause instanceof CancelledFailure, `cancelled, got ${String(error)}`);
      await waitFor('pg_dumpall to exit', () => (isAlive(pid) ? undefined : true), 10_000);
      // pg_dump (pg_dumpall's child, same process group) sends the server a cancel before it exits.
      await waitFor('pg_dump to exit', async () => ((await ownProcessesNamed({ name: 'pg_dump' })).length === 0 ? true : undefined), 10_000);
      assert.deepEqual(await listDir(dir), [], 'no temporary or final file');
    } finally {
      delete process.env.FIXTURE_DOCKER_LOG;
      await lock.release();
    }
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
