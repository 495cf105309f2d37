import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compareRowCounts, describeDrillFailure, problemKey } from '../../core/reports.js';

describe('reports', () => {
  test('row counts: equal counts pass; a short, missing or extra table is named with both sides', () => {
    assert.deepEqual(compareRowCounts({ 'immich: public.assets': 3 }, { 'immich: public.assets': 3 }), []);
    assert.deepEqual(compareRowCounts({ 'immich: public.assets': 3, 'immich: public.exif': 2 }, { 'immich: public.assets': 1, 'immich: public.tags': 0 }), [
      { table: 'immich: public.assets', recorded: 3, restored: 1 },
      { table: 'immich: public.exif', recorded: 2 },
      { table: 'immich: public.tags', restored: 0 },
    ]);
    const diffs = Array.from({ length: 7 }, (_, i) => ({ table: `db: public.t${i}`, recorded: i + 1, restored: i }));
    assert.equal(
      describeDrillFailure({ differences: diffs, loadErrors: ['extension "vchord" is not available', 'x'], loadErrorCount: 2 }),
      '7 table(s) differ from the counts recorded at dump time: db: public.t0 1 recorded, 0 restored; db: public.t1 2 recorded, 1 restored; ' +
        'db: public.t2 3 recorded, 2 restored; db: public.t3 4 recorded, 3 restored; db: public.t4 5 recorded, 4 restored; and 2 more; ' +
        '2 statement(s) failed while loading, first: extension "vchord" is not available',
    );
    assert.equal(describeDrillFailure({ differences: [], loadErrors: ['e'], loadErrorCount: 1, hint: 'set drill.engine: container' }), '1 statement(s) failed while loading, first: e; set drill.engine: container');
  });

  test('a problem is known by its row and state, not by wording that changes with age', () => {
    assert.equal(problemKey('local-dump stale: immich_x.sql.gz: 30.0 h old'), 'local-dump stale');
    assert.equal(problemKey('schedule:offsite-sync missing: not registered'), 'schedule:offsite-sync missing');
    assert.equal(problemKey('local-dump stale: 31.0 h old'), problemKey('local-dump stale: 30.0 h old'));
  });
});
