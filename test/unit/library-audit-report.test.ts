import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { auditQuota } from '../../core/library-audit-report.js';

const DAY = 86_400_000;
const now = Date.UTC(2026, 2, 1, 2, 0);

describe('auditQuota', () => {
  test('the first run of all covers the whole pass', () => {
    assert.equal(auditQuota({ remaining: 135_000, passStartedMs: now, nowMs: now, lastRunMs: undefined, passDays: 30 }), 135_000);
  });

  test('the default monthly schedule over a 30-day pass covers a whole pass every month, February and 31-day months alike', () => {
    for (const days of [28, 29, 30, 31]) {
      // A new pass starts at this run; the previous scheduled run was `days` ago.
      assert.equal(auditQuota({ remaining: 135_000, passStartedMs: now, nowMs: now, lastRunMs: now - days * DAY, passDays: 30 }), 135_000, `${days} days`);
    }
  });

  test('a daily schedule covers a thirtieth of a new pass, and the rest spread over the days left', () => {
    assert.equal(auditQuota({ remaining: 135_000, passStartedMs: now, nowMs: now, lastRunMs: now - DAY, passDays: 30 }), 4500);
    // Ten days in, with 90k left: 20 runs left.
    assert.equal(auditQuota({ remaining: 90_000, passStartedMs: now - 10 * DAY, nowMs: now, lastRunMs: now - DAY, passDays: 30 }), 4500);
    // A run that fires a few minutes late still counts as a day's run.
    assert.equal(auditQuota({ remaining: 135_000, passStartedMs: now, nowMs: now, lastRunMs: now - DAY - 5 * 60_000, passDays: 30 }), 4500);
  });

  test('a pass past its deadline, or with nothing left, is finished by this run', () => {
    assert.equal(auditQuota({ remaining: 7000, passStartedMs: now - 31 * DAY, nowMs: now, lastRunMs: now - DAY, passDays: 30 }), 7000);
    assert.equal(auditQuota({ remaining: 0, passStartedMs: now - 3 * DAY, nowMs: now, lastRunMs: now - DAY, passDays: 30 }), 1);
  });
});
