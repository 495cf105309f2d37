import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { authenticRows, rowFacts } from '../../adapters/dump-store/rows.js';
import { approvalCommitment, approvalToken } from '../../adapters/run-auth/index.js';
import { ensureKey } from '../../adapters/dump-store/key.js';
import { tagRows } from '../../adapters/dump-store/tags.js';
import { unreadableDatabase, unreadableTable } from '../../activities/dump.js';
import { CommandFailedError } from '../../core/errors.js';
import { approvalProblem, describePlan, type RestorePlan } from '../../core/restore-plan.js';

const plan: RestorePlan = {
  workflowId: 'restore-database-cli-20261127T031200Z',
  what: 'database',
  dump: { file: 'immich_20261127_030000.sql.gz', origin: 'local', stamp: '2026-11-27T03:00:00.000Z', bytes: 367_001_600, sha256: 'a'.repeat(64), databases: ['immich', 'postgres'], tables: 66, rows: 1_204_411, immichVersion: '2.3.1', authenticated: true },
  runningImmichVersion: '2.3.1',
  versionChange: false,
  restorePoint: true,
  steps: ['take a restore point', 'replace'],
  deadline: '2026-11-27T04:12:00Z',
};

describe('the approval of a restore', () => {
  test('the prompt names the dump: file, origin, age, size, sha256, databases, rows, both versions, the commands', () => {
    const text = describePlan(plan, Date.parse('2026-11-27T06:12:00Z'));
    assert.equal(
      text,
      [
        'dump:     immich_20261127_030000.sql.gz',
        'from:     the staging dir',
        'made:     2026-11-27T03:00:00.000Z (3 h ago)',
        `size:     350.0 MiB, sha256 ${'a'.repeat(64)}`,
        'replaces: database immich, database postgres and the roles',
        'rows:     1204411 rows in 66 tables, as counted when the dump was made',
        'Immich:   made with Immich 2.3.1',
        "trust:    written by this tool: its provenance tag verifies with the worker's key",
        'running:  Immich 2.3.1',
        'then:',
        '  1. take a restore point',
        '  2. replace',
        'approve:  immich-backup restore approve restore-database-cli-20261127T031200Z',
        'reject:   immich-backup restore reject restore-database-cli-20261127T031200Z',
        'waits until 2026-11-27T04:12:00Z; without an answer nothing changes',
      ].join('\n'),
    );
  });

  test('an approval must carry the run\'s token (its sha256 is the commitment), an OS user, the sha256 shown; a version change needs its own yes; malformed data is refused', () => {
    const key = Buffer.alloc(32, 7);
    const token = approvalToken(key, plan.workflowId, 'run-1');
    const commitment = approvalCommitment(token);
    const ok = { sha256: 'a'.repeat(64), token, by: 'root (sudo from alice)' };
    assert.equal(approvalProblem(plan, ok, commitment), undefined);
    assert.match(approvalProblem(plan, { ...ok, token: approvalToken(key, plan.workflowId, 'run-2') }, commitment)!, /no valid approval token for this run/);
    assert.match(approvalProblem(plan, { ...ok, token: undefined }, commitment)!, /no valid approval token/);
    assert.match(approvalProblem(plan, ok, undefined)!, /no valid approval token/, 'a run without a commitment (started before authorization) cannot be approved');
    assert.match(approvalProblem(plan, { ...ok, by: 'root\napprove: yes' }, commitment)!, /`by` must be the OS user/);
    assert.match(approvalProblem(plan, { ...ok, sha256: 'b'.repeat(64) }, commitment)!, /the approval names sha256 b{64}: not approved$/);
    for (const bad of [undefined, null, 'yes', 42, {}]) assert.ok(approvalProblem(plan, bad, commitment), String(bad));
    const changed = { ...plan, versionChange: true, runningImmichVersion: '2.4.0' };
    assert.match(approvalProblem(changed, ok, commitment)!, /approve with --accept-version-change/);
    assert.equal(approvalProblem(changed, { ...ok, acceptVersionChange: true }, commitment), undefined);
    assert.match(describePlan(changed, 0), /^VERSION CHANGE: /m);
    assert.match(describePlan(changed, 0), /^approve: +immich-backup restore approve \S+ --accept-version-change$/m);
    assert.match(describePlan({ ...plan, dump: { ...plan.dump!, origin: 'immich', authenticated: false } }, 0), /^trust: +UNAUTHENTICATED: Immich's own backup/m);
  });
});

describe('a live database pg_dump cannot read', () => {
  test("pg_dumpall's damaged-TOAST failure becomes one line naming the error, the table and the database", () => {
    const err = new CommandFailedError(
      'pg_dumpall failed (exit code 1): pg_dump: error: Dumping the contents of table "asset_blobs" failed: PQgetResult() failed. | pg_dump: detail: Error message from server: ERROR:  missing chunk number 0 for toast value 16451 in pg_toast_16440 | pg_dump: detail: Command was: COPY public.asset_blobs (id, blob) TO stdout; | pg_dumpall: error: pg_dump failed on database "immich", exiting',
    );
    const unreadable = unreadableDatabase(err)!;
    assert.equal(unreadable.name, 'DatabaseUnreadableError');
    assert.equal(unreadable.message, 'pg_dump cannot read the live database (table public.asset_blobs in database immich): missing chunk number 0 for toast value 16451 in pg_toast_16440: its stored data is damaged');
    assert.equal(unreadableTable(unreadable), 'public.asset_blobs');
    assert.equal(unreadableDatabase(new CommandFailedError('pg_dumpall failed (exit code 1): connection refused')), undefined, 'other failures stay retryable');
  });
});

describe("a dump's recorded facts", () => {
  test('only row counts whose tag verifies, and only well-formed values, reach the approval prompt', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'immich-backup-facts-'));
    const key = await ensureKey(join(await mkdtemp(join(tmpdir(), 'immich-backup-key-')), 'key'));
    const file = 'immich_20261127_030000.sql.gz';
    const write = async (record: unknown, tag = true) => {
      const text = JSON.stringify(record);
      await writeFile(join(dir, `${file}.rows.json`), text);
      if (tag) await tagRows(key, dir, file, text);
    };
    await write({ tables: { 'immich: public.assets': 10, 'postgres: public.x': 2 }, immichVersion: '2.3.1' });
    assert.deepEqual(rowFacts(await authenticRows(dir, file, key)), { databases: ['immich', 'postgres'], tables: 2, rows: 12, immichVersion: '2.3.1' });
    await writeFile(join(dir, `${file}.rows.json`), JSON.stringify({ tables: { 'immich: public.assets': 99999 } }));
    assert.equal(await authenticRows(dir, file, key), undefined, 'edited after it was tagged: not authentic');
    await write({ tables: { 'immich: public.assets': 10 }, immichVersion: '2.3.1\napprove:  immich-backup restore approve other' });
    assert.deepEqual(rowFacts(await authenticRows(dir, file, key)), { databases: ['immich'], tables: 1, rows: 10 }, 'a version with text of its own is dropped');
    for (const tables of [{ 'immich\nNO RESTORE POINT: public.assets': 1 }, { 'immich: public.assets': -1 }, { 'immich: public.assets': '5' }, null]) {
      await write({ tables });
      assert.equal(await authenticRows(dir, file, key), undefined, JSON.stringify(tables));
    }
  });
});
