import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Progress } from '../../temporal/client.js';
import { agoText, ageText, zonedTime } from '../../core/format.js';
import { progressText } from '../../cli/progress-text.js';

const step = (details: string): Progress => ({ activity: 'step', attempt: 1, details });
const beat = (activity: string, details: Record<string, unknown>): Progress => ({ activity, attempt: 1, details });

describe('what a follower prints', () => {
  test('each step once when it changes, an activity step only where it says more than the run step, byte counts only formatted', () => {
    const text = progressText();
    const polls: Progress[][] = [
      [step('restoring'), beat('restoreDump', { step: 'copying immich_x.sql.gz aside', copied: '0 B of 2.0 MiB' })],
      [step('restoring'), beat('restoreDump', { step: 'copying immich_x.sql.gz aside', copied: '2.0 MiB of 2.0 MiB' })],
      [step('restoring'), beat('restoreDump', { step: 'restoring', file: 'immich_x.sql.gz', read: '1.0 MiB of 2.0 MiB', percent: 50 })],
      [step('restoring'), beat('restoreDump', { step: 'restoring', file: 'immich_x.sql.gz', read: '2.0 MiB of 2.0 MiB', percent: 100 })],
      [step('taking a restore point'), beat('dumpDatabase', { step: 'taking a restore point', file: 'restore-point_x.sql.gz', bytesWritten: 2105344, written: '2.0 MiB', elapsedSeconds: 3 })],
    ];
    assert.deepEqual(polls.flatMap((p) => text(p).lines), [
      '… restoring',
      '… copying immich_x.sql.gz aside',
      '… restoreDump copied=0 B of 2.0 MiB',
      '… restoreDump copied=2.0 MiB of 2.0 MiB',
      '… restoreDump file=immich_x.sql.gz read=1.0 MiB of 2.0 MiB percent=50',
      '… restoreDump file=immich_x.sql.gz read=2.0 MiB of 2.0 MiB percent=100',
      '… taking a restore point',
      '… dumpDatabase file=restore-point_x.sql.gz written=2.0 MiB elapsedSeconds=3',
    ]);
  });

  test('the run step is returned when it changes (the CLI shows the plan at the approval wait), and a retry is said once', () => {
    const text = progressText(() => Date.parse('2026-11-27T10:00:00Z'));
    assert.equal(text([step('awaiting approval')]).step, 'awaiting approval');
    assert.equal(text([step('awaiting approval')]).step, undefined);
    const retry: Progress = { activity: 'discoverPostgresContainer', attempt: 2, details: undefined, lastFailure: 'docker ps failed\nmore', nextAttemptAt: new Date('2026-11-27T10:00:30Z'), maximumAttempts: 5 };
    assert.deepEqual(text([retry]).lines, ['… discoverPostgresContainer: attempt 1 of 5 failed: docker ps failed; next attempt at 2026-11-27T10:00:30Z (in 30 s)']);
    assert.deepEqual(text([retry]).lines, []);
  });
});

describe('ages and times for a person', () => {
  test('ages are whole words: just now, minutes, hours, days; never "0.0 h"', () => {
    const MIN = 60_000;
    assert.deepEqual([10_000, 12 * MIN, 3 * 60 * MIN + 50 * MIN, 47 * 60 * MIN, 50 * 60 * MIN, -5 * MIN].map(agoText), ['just now', '12 min ago', '3 h ago', '47 h ago', '2 days ago', 'in 5 min']);
    assert.deepEqual([10_000, 30 * 60 * MIN].map(ageText), ['under a minute', '30 h']);
  });

  test("a time is shown as a clock in the schedule's zone shows it, with the zone", () => {
    assert.equal(zonedTime('2026-11-28T02:00:00.000Z', 'Europe/Berlin'), 'Sat 2026-11-28 03:00 CET');
    assert.equal(zonedTime('2026-07-01T01:00:00.000Z', 'Europe/Berlin'), 'Wed 2026-07-01 03:00 CEST');
    assert.equal(zonedTime('2026-11-28T02:00:00.000Z'), 'Sat 2026-11-28 02:00 UTC');
  });
});
