import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import type { NightlyDbBackupReport, RestoreDatabaseReport } from '../../workflows/index.js';
import { cli } from '../helpers/cli.js';
import { pgBin, rowCounts } from '../helpers/postgres.js';
import { failureType, refusal, stepReached, useRestoreStack } from '../helpers/restore-stack.js';
import { testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { writeConfigFile } from '../helpers/setup.js';
import { decisionFields, startAuthorized } from '../helpers/trust.js';

// Approving a restore (an Update with a validator, bound to the dump shown), its version check,
// and the database lock that keeps backups off a restore.

const stack = useRestoreStack();
const { world, dockerCalls, changeData } = stack;

describe('RestoreDatabase approval and exclusion', () => {
  test('problem 4: approval is an Update: refused early, without data or for another dump; an approve signal (early, or empty as the Web UI sends it) breaks and approves nothing', async () => {
    const w = await world();
    const dump = await w.backup();
    await changeData();
    const changed = await rowCounts(stack.pg);
    await rm(stack.dockerLog, { force: true });
    process.env.FIXTURE_DOCKER_DELAY = 'ps=3';
    let workflowId = '';
    const { report, error } = await w.restore({}, async (id) => {
      workflowId = id;
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'finding the database container');
      await handle.signal('approve', { by: 'early' });
      await handle.signal('approve');
      const fields = await decisionFields(w.config, handle);
      await assert.rejects(handle.executeUpdate('approveRestore', { args: [{ sha256: dump.sha256, ...fields }] }), (err) => /is not waiting for approval \(its step: finding the database container\)$/.test(refusal(err)));
      await stepReached(handle, 'awaiting approval');
      await handle.signal('approve');
      await assert.rejects(handle.executeUpdate('approveRestore', { args: [] }), (err) => /^an approval carries \{ sha256, token, by \}/.test(refusal(err)));
      await assert.rejects(handle.executeUpdate('approveRestore', { args: [{ sha256: '0'.repeat(64), ...fields }] }), (err) => refusal(err) === `this run waits to load ${dump.file} with sha256 ${dump.sha256}; the approval names sha256 ${'0'.repeat(64)}: not approved`);
      assert.equal(await handle.query('currentStep'), 'awaiting approval', 'still waiting');
      assert.equal(await handle.executeUpdate('rejectRestore', { args: [{ ...fields, reason: 'wrong dump' }] }), 'rejected: nothing was changed');
    }).finally(() => delete process.env.FIXTURE_DOCKER_DELAY);
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'rejected');
    assert.equal(report!.message, 'rejected by root (wrong dump): nothing was changed');
    assert.deepEqual(await dockerCalls(), []);
    assert.deepEqual(await rowCounts(stack.pg), changed);
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    assert.equal(history.events!.filter((e) => e.workflowTaskFailedEventAttributes).length, 0, 'no workflow task failed');
  });

  test('problem 5: a dump made by another Immich version needs its own confirmation; --yes alone changes nothing', async () => {
    const w = await world();
    const name = 'immich-db-backup-20261126T020000-v2.0.0-pg15.18.sql.gz';
    const { stdout } = await execa(join(pgBin, 'pg_dump'), ['--clean', '--if-exists', '-d', 'immich'], { env: stack.pg.env, encoding: 'buffer' });
    await writeFile(join(w.immichBackups, name), gzipSync(stdout));
    await rm(stack.dockerLog, { force: true });
    const yes = await w.restore({ dump: name, approved: true });
    assert.equal(failureType(yes.error).type, 'ImmichVersionMismatchError');
    assert.match(failureType(yes.error).message, /^nothing was changed: .* was made with Immich 2\.0\.0, Immich 2\.3\.1 runs now; start the restore again with --accept-version-change/);
    const configFile = await writeConfigFile(w.root, w.raw);
    const { report, error } = await w.restore({ dump: name }, async (id) => {
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'awaiting approval');
      const plain = await cli(['-c', configFile, 'restore', 'approve', id]);
      assert.equal(plain.exitCode, 1);
      assert.match(plain.stderr, /^VERSION CHANGE: the dump was made with Immich 2\.0\.0, Immich 2\.3\.1 runs now/m);
      assert.match(plain.stderr, /error: not approved: .*the dump was made with Immich 2\.0\.0 and Immich 2\.3\.1 runs now: approve with --accept-version-change/);
      const accepted = await cli(['-c', configFile, 'restore', 'approve', id, '--accept-version-change']);
      assert.equal(accepted.exitCode, 0, accepted.stderr);
    });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.facts.immichVersion, '2.0.0');
    assert.equal(report!.runningImmichVersion, '2.3.1');
  });

  test('problem 9: a backup started during a restore waits for it, saying so, and then dumps the restored database', async () => {
    const w = await world();
    const before = await rowCounts(stack.pg);
    await w.backup();
    await changeData();
    process.env.FIXTURE_DOCKER_DELAY = 'load=8';
    const restoreId = testWorkflowId('RestoreDatabase');
    const backupId = testWorkflowId('NightlyDbBackup');
    const [restored, backedUp] = await withWorker(stack.temporal.address, w.config, async () => {
      const restoring = await startAuthorized(stack.client, w.config, 'RestoreDatabase', restoreId, { approved: true });
      await stepReached(restoring, 'restoring');
      const backing = await stack.client.workflow.start('NightlyDbBackup', { taskQueue: w.config.temporal.taskQueue, workflowId: backupId, args: [{}] });
      const waiting = await stepReached(backing, (step) => step.startsWith('waiting for the database: in use by'));
      assert.match(waiting, new RegExp(`^waiting for the database: in use by ${restoreId} \\(gives up at \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\)$`));
      delete process.env.FIXTURE_DOCKER_DELAY;
      return Promise.all([restoring.result() as Promise<RestoreDatabaseReport>, backing.result() as Promise<NightlyDbBackupReport>]);
    }).finally(() => delete process.env.FIXTURE_DOCKER_DELAY);
    assert.equal(restored.outcome, 'restored');
    const assets = before.assets!;
    const recorded = JSON.parse(await readFile(join(w.backupDir, `${backedUp.file}.rows.json`), 'utf8')) as { tables: Record<string, number> };
    assert.equal(recorded.tables['immich: public.assets'], assets, 'the backup holds the restored database, not half of it');
  });

  test('problem 9: two backups started in the same second write two files, both valid', async () => {
    const w = await world();
    const reports = await withWorker(stack.temporal.address, w.config, async () => {
      const handles = await Promise.all([0, 1].map(() => stack.client.workflow.start('NightlyDbBackup', { taskQueue: w.config.temporal.taskQueue, workflowId: testWorkflowId('NightlyDbBackup'), args: [{}] })));
      return Promise.all(handles.map((h) => h.result() as Promise<NightlyDbBackupReport>));
    });
    assert.notEqual(reports[0]!.file, reports[1]!.file);
    assert.notEqual(reports[0]!.sha256, undefined);
    const files = await readdir(w.backupDir);
    assert.ok(!files.includes('rejected'), `nothing was rejected: ${files.join(', ')}`);
    for (const r of reports) assert.equal(createHash('sha256').update(await readFile(r.path)).digest('hex'), r.sha256);
  });

});
