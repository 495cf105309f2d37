import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ScheduleOverlapPolicy } from '@temporalio/client';
import { execa } from 'execa';
import type { ScheduleRow } from '../../temporal/schedules.js';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { waitFor } from '../helpers/net.js';
import { fixtureEnv, listDir, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { temporalBinary } from '../helpers/paths.js';
import { useStack } from '../helpers/stack.js';

// Temporal Schedules replacing cron, driven through the CLI against a real dev server; the
// trigger test runs a real backup on a worker process.

let dir = '';
let raw: Record<string, Record<string, unknown>>;
let configFile = '';

const stack = useStack({ postgres: 500 }, async () => {
  dir = await tempDir('schedules');
  raw = rawTestConfig({ backupDir: join(dir, 'dumps'), address: stack.temporal.address, extra: { schedules: { timeZone: 'Europe/Berlin', nightlyDbBackup: '15 2 * * *' }, log: { level: 'info' } } });
  configFile = await writeConfigFile(dir, raw);
});

async function list(): Promise<ScheduleRow[]> {
  const r = await cli(['-c', configFile, 'schedules', 'list', '--json']);
  assert.equal(r.exitCode, 0, r.stderr);
  return JSON.parse(r.stdout) as ScheduleRow[];
}

describe('schedules', () => {
  test('before apply, list says each schedule is not registered', async () => {
    const r = await cli(['-c', configFile, 'schedules', 'list']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.match(/not registered/g)?.length, 6);
  });

  test('apply twice leaves one schedule each, with the configured cron, time zone and policies', async () => {
    const first = await cli(['-c', configFile, 'schedules', 'apply']);
    assert.equal(first.exitCode, 0, first.stderr);
    assert.equal(
      first.stdout,
      'created nightly-db-backup: 15 2 * * * (Europe/Berlin)\ncreated offsite-sync: 30 4 * * * (Europe/Berlin)\ncreated weekly-library-mirror: 0 5 * * 0 (Europe/Berlin)\n' +
        'created backup-health: 15 * * * * (Europe/Berlin)\ncreated restore-drill: 0 6 * * 1 (Europe/Berlin)\ncreated library-audit: 0 2 1 * * (Europe/Berlin)\n',
    );
    const second = await cli(['-c', configFile, 'schedules', 'apply']);
    assert.equal(second.exitCode, 0, second.stderr);
    assert.match(second.stdout, /^updated nightly-db-backup: .*\nupdated offsite-sync: .*\nupdated weekly-library-mirror: .*\nupdated backup-health: .*\nupdated restore-drill: .*\nupdated library-audit: .*\n$/);

    const rows = await list();
    assert.deepEqual(rows.map((r) => [r.id, r.cron, r.timeZone, r.paused]), [
      ['nightly-db-backup', '15 2 * * *', 'Europe/Berlin', false],
      ['offsite-sync', '30 4 * * *', 'Europe/Berlin', false],
      ['weekly-library-mirror', '0 5 * * 0', 'Europe/Berlin', false],
      ['backup-health', '15 * * * *', 'Europe/Berlin', false],
      ['restore-drill', '0 6 * * 1', 'Europe/Berlin', false],
      ['library-audit', '0 2 1 * *', 'Europe/Berlin', false],
    ]);
    for (const r of rows) assert.equal(r.nextRuns?.length, 3);
    // The next nightly run is at 02:15 Berlin time.
    const next = new Date(rows[0]!.nextRuns![0]!);
    assert.equal(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(next), '02:15');

    const described = await stack.client.schedule.getHandle('weekly-library-mirror').describe();
    assert.equal(described.policies.overlap, ScheduleOverlapPolicy.SKIP);
    assert.equal(described.policies.catchupWindow, 120 * 60_000);
    assert.equal(described.action.workflowType, 'WeeklyLibraryMirror');

    // The temporal CLI (and so the Web UI's Schedules page) sees exactly these.
    const { stdout } = await execa(temporalBinary, ['schedule', 'list', '--address', stack.temporal.address, '--namespace', stack.temporal.namespace, '-o', 'json']);
    const ids = (JSON.parse(stdout) as Array<{ scheduleId: string }>).map((s) => s.scheduleId).sort();
    assert.deepEqual(ids, ['backup-health', 'library-audit', 'nightly-db-backup', 'offsite-sync', 'restore-drill', 'weekly-library-mirror']);
  });

  test('a paused schedule stays paused when apply replaces its spec', async () => {
    const pause = await cli(['-c', configFile, 'schedules', 'pause', 'offsite-sync', '--reason', 'NAS maintenance']);
    assert.equal(pause.exitCode, 0, pause.stderr);
    const changed = structuredClone(raw);
    changed.schedules = { ...changed.schedules, offsiteSync: '45 5 * * 1-5' };
    const changedFile = await writeConfigFile(await tempDir('schedules-changed'), changed);
    const r = await cli(['-c', changedFile, 'schedules', 'apply']);
    assert.match(r.stdout, /^updated offsite-sync: 45 5 \* \* 1-5 \(Europe\/Berlin\), still paused$/m);
    const offsite = (await list()).find((row) => row.id === 'offsite-sync')!;
    assert.equal(offsite.paused, true);
    assert.equal(offsite.note, 'NAS maintenance');
    assert.equal(offsite.cron, '45 5 * * 1-5');
    const resume = await cli(['-c', configFile, 'schedules', 'resume', 'offsite-sync']);
    assert.equal(resume.exitCode, 0);
    assert.equal((await list()).find((row) => row.id === 'offsite-sync')!.paused, false);
  });

  test('trigger starts the scheduled workflow on the worker and it completes', async () => {
    const worker = spawnCli(['-c', configFile, 'worker'], fixtureEnv(stack.pg));
    try {
      await workerStarted(worker);
      const r = await cli(['-c', configFile, 'schedules', 'trigger', 'nightly-db-backup']);
      assert.equal(r.exitCode, 0, r.stderr);
      const last = await waitFor('the triggered run to complete', async () => {
        const row = (await list()).find((x) => x.id === 'nightly-db-backup')!;
        return row.lastRun?.status === 'COMPLETED' ? row.lastRun : undefined;
      }, 60_000, 500);
      assert.match(last.workflowId, /^nightly-db-backup-\d{4}-\d{2}-\d{2}T/);
      assert.equal((await listDir(join(dir, 'dumps'))).filter((n) => n.endsWith('.sql.gz')).length, 1);
      const human = await cli(['-c', configFile, 'schedules', 'list']);
      assert.match(human.stdout, /^nightly-db-backup: 15 2 \* \* \* \(Europe\/Berlin\)\n {2}next: .*\n {2}last: COMPLETED nightly-db-backup-/m);
    } finally {
      worker.process.kill('SIGTERM');
      await worker.process;
    }
  });

  test('an unknown schedule id is refused', async () => {
    const r = await cli(['-c', configFile, 'schedules', 'trigger', 'rm -rf']);
    assert.equal(r.exitCode, 2, 'a usage error');
    assert.match(r.stderr, /^error: command-argument value 'rm -rf' is invalid for argument 'id'\. unknown schedule "rm -rf": expected one of nightly-db-backup, offsite-sync, weekly-library-mirror, backup-health, restore-drill, library-audit; nothing was started\n/);
  });
});
