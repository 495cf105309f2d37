import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { describePlan, type RestorePlan } from '../../core/restore-plan.js';
import { pgBin, type TestPostgres } from '../helpers/postgres.js';
import { dockerCalls, failureType, restoreWorld, stepReached, useRestoreStack } from '../helpers/restore-stack.js';
import { decisionFields } from '../helpers/trust.js';

// Problem 2 of the restore issue: a live database pg_dump cannot read (Immich issue #30062,
// "missing chunk number 0 for toast value … in pg_toast_…"). The damage is real: contrib's
// pg_surgery kills a TOAST tuple in a real PostgreSQL, after which pg_dumpall fails as it does there.

const stack = useRestoreStack();

/** A table whose values live in TOAST (uncompressed, 8 KB each), as Immich's larger columns do. */
async function addToastedTable(pg: TestPostgres): Promise<void> {
  await pg.psql(
    `CREATE TABLE asset_blobs (id int PRIMARY KEY, blob text);
     ALTER TABLE asset_blobs ALTER COLUMN blob SET STORAGE EXTERNAL;
     INSERT INTO asset_blobs SELECT i, repeat(md5(i::text), 256) FROM generate_series(1, 20) i;
     ALTER TABLE asset_blobs OWNER TO immich;`,
    'immich',
  );
}

/** Every table's content as one digest per table: equal digests, equal data. */
async function tableDigests(pg: TestPostgres): Promise<Record<string, string>> {
  const tables = (await pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", 'immich')).split('\n');
  const out: Record<string, string> = {};
  for (const t of tables) out[t] = await pg.psql(`SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ${t} x`, 'immich');
  return out;
}

/** Kills every TOAST chunk of one asset_blobs value: it can no longer be read, as after a lost disk block. */
async function damageToast(pg: TestPostgres): Promise<void> {
  const toast = await pg.psql("SELECT reltoastrelid::regclass FROM pg_class WHERE relname = 'asset_blobs'", 'immich');
  // The chunks' addresses first: pg_surgery must not scan the relation it changes.
  const tids = await pg.psql(`SELECT array_agg(ctid)::text FROM ${toast} WHERE chunk_id = (SELECT min(chunk_id) FROM ${toast})`, 'immich');
  await pg.psql(`CREATE EXTENSION IF NOT EXISTS pg_surgery; SELECT heap_force_kill('${toast}'::regclass, '${tids}'::tid[]); DROP EXTENSION pg_surgery;`, 'immich');
}

describe('RestoreDatabase onto a damaged database', () => {
  test('problem 2: the restore point cannot be taken: nothing changes, one line says why and how to go on; --no-restore-point saves a partial salvage and brings the backup back exactly', async () => {
    const { pg } = stack;
    await addToastedTable(pg);
    const w = await restoreWorld(stack);
    const dump = await w.backup();
    const good = await tableDigests(pg);
    const immichOwn = 'immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz';
    const { stdout } = await execa(join(pgBin, 'pg_dump'), ['--clean', '--if-exists', '-d', 'immich'], { env: pg.env, encoding: 'buffer' });
    await writeFile(join(w.immichBackups, immichOwn), gzipSync(stdout));
    await damageToast(pg);
    const direct = await execa(join(pgBin, 'pg_dumpall'), ['--clean', '--if-exists'], { env: pg.env, reject: false, stdout: 'ignore' });
    assert.notEqual(direct.exitCode, 0, 'pg_dumpall fails on the damaged database');
    assert.match(direct.stderr, /missing chunk number 0 for toast value \d+ in pg_toast_\d+/);

    const refused = await w.restore({ approved: true });
    const failure = failureType(refused.error);
    assert.equal(failure.type, 'RestorePointFailedError');
    assert.match(
      failure.message,
      new RegExp(`^nothing was changed: no restore point could be taken \\(pg_dump cannot read the live database \\(table public\\.asset_blobs in database immich\\): missing chunk number 0 for toast value \\d+ in pg_toast_\\d+: its stored data is damaged\\)\\. To restore ${dump.file} over the live database anyway, with no way back: immich-backup restore db --dump ${dump.file} --no-restore-point$`),
    );
    assert.doesNotMatch(failure.message, /\n/);
    assert.deepEqual(await dockerCalls(stack), [], 'Immich was never stopped');
    // Retrying reads the same damage: one attempt, not four over two minutes.
    const history = await stack.client.workflow.getHandle(refused.workflowId).fetchHistory();
    const dumpAttempts = history.events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'dumpDatabase').length;
    const started = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);
    assert.equal(dumpAttempts, 1);
    assert.ok(started.every((a) => a === 1), `no activity was retried: attempts ${started.join(', ')}`);
    assert.ok(!existsSync(join(w.backupDir, 'restore-points')) || (await readdir(join(w.backupDir, 'restore-points'))).every((f) => !f.endsWith('.gz')), 'no restore point was kept');

    // Immich's own dump meets the same wall, and says the same.
    const own = failureType((await w.restore({ dump: immichOwn, approved: true })).error);
    assert.equal(own.type, 'RestorePointFailedError');
    assert.match(own.message, new RegExp(`^nothing was changed: .* --dump ${immichOwn} --no-restore-point$`));
    assert.deepEqual(await dockerCalls(stack), []);

    // Going on without a restore point, explicitly: the approval says there is no way back.
    const { report, error } = await w.restore({ noRestorePoint: true }, async (id) => {
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'awaiting approval');
      const plan = (await handle.query<RestorePlan>('restorePlan'))!;
      assert.equal(plan.restorePoint, false);
      const text = describePlan(plan, Date.now());
      assert.match(text, /^NO RESTORE POINT: the live database is replaced with no way back \(a partial salvage of what can still be read is saved first\)$/m);
      assert.match(text, /on failure or cancellation: NO way back/);
      await handle.executeUpdate('approveRestore', { args: [{ sha256: plan.dump!.sha256, ...(await decisionFields(w.config, handle)) }] });
    });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.restorePoint, undefined);
    assert.equal(report!.approvedBy, 'root');
    const salvage = report!.salvage!;
    assert.match(salvage.path, new RegExp(`^${w.backupDir}/salvage/salvage_immich_\\d{8}T\\d{6}\\.partial\\.sql\\.gz$`));
    assert.deepEqual(salvage.skippedTables, ['public.asset_blobs']);
    const salvaged = gunzipSync(await readFile(salvage.path)).toString('utf8');
    assert.match(salvaged, /CREATE TABLE public\.asset_blobs/, 'the damaged table is defined in the salvage');
    assert.match(salvaged, /COPY public\.assets /, 'the readable tables are in it with their data');
    assert.doesNotMatch(salvaged, /COPY public\.asset_blobs /);
    assert.match(report!.message, new RegExp(`there was no restore point, the partial salvage is ${salvage.path} \\(without the data of public\\.asset_blobs\\)$`));
    assert.deepEqual(await tableDigests(pg), good, 'every table holds exactly what the backup holds');
  });
});
