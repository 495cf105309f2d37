import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, copyFile, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { execa } from 'execa';
import { createActivities } from '../../activities/index.js';
import { hostThrowaway } from '../../adapters/postgres/throwaway.js';
import { collectStatus } from '../../status/status.js';
import { dumpFileName, formatStamp } from '../../core/dump-names.js';
import { createLogger } from '../../config/logger.js';
import { privateCopyDir } from '../../adapters/dump-store/index.js';
import type { OffsiteSyncReport, RestoreDrillReport } from '../../workflows/index.js';
import { cli } from '../helpers/cli.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { repoRoot } from '../helpers/paths.js';
import { ownTcpListeners } from '../helpers/processes.js';
import { tempDir, writeConfigFile } from '../helpers/setup.js';
import { pgBin, rowCounts } from '../helpers/postgres.js';
import { failureType, refusal, stepReached, tamper, useRestoreStack } from '../helpers/restore-stack.js';
import { runWorkflow, withWorker } from '../helpers/run-workflow.js';
import { decisionFields, plantDump } from '../helpers/trust.js';
import { createBackupWorker } from '../../workers/worker.js';

// The trust boundary, attacked as a local user or whoever controls the NAS would: dumps that are
// not ours (forged, with a self-consistent .sha256), dumps swapped while a restore waits, a
// destructive run started by a user who cannot read the worker's key, the drill's throwaway
// probed by another user, dumps from a clock that ran ahead, and a backup of an emptied database.

const stack = useRestoreStack();
const { world, dockerCalls } = stack;
const quiet = createLogger({ level: 'fatal', fd: 2 });

/** A name stamped `offsetMs` from now. */
const stampedName = (offsetMs: number) => dumpFileName(formatStamp(new Date(Date.now() + offsetMs)), 'gzip');

describe('the trust boundary', () => {
  test('finding 1 and provenance: a forged dump with a self-consistent sha256 is never latest, refused by name and from the NAS before anything stops; a staging dir others can write stops the worker', async () => {
    const w = await world();
    const good = await w.backup();
    const marker = join(w.root, 'pwned');
    // Newer than the real one, a valid .sha256 beside it, a shell escape inside: no tag.
    const forged = stampedName(60_000);
    await tamper(w.backupDir, good.file, (sql) => `\\! touch ${marker}\n${sql}`, forged);
    await rm(stack.dockerLog, { force: true });

    const latest = await w.restore({ dryRun: true });
    assert.equal(latest.error, undefined, String(latest.error));
    assert.equal(latest.report!.dump, good.file, 'latest is the newest authentic dump');

    const byName = await w.restore({ dump: forged, approved: true });
    const refused = failureType(byName.error);
    assert.equal(refused.type, 'UnauthenticatedDumpError');
    assert.match(refused.message, new RegExp(`${forged}: dump ${forged} in .* has no provenance tag`));

    const drill = await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, w.config, 'RestoreDrill');
    assert.equal(drill.error, undefined, String(drill.error));
    assert.equal(drill.report!.dump, good.file, 'the drill loads only an authentic dump');

    // The NAS: a forged copy (any .sha256 an attacker likes) is refused when fetched.
    const nas = join(w.root, 'nas');
    await execa('mkdir', ['-p', nas]);
    await copyFile(join(w.backupDir, forged), join(nas, forged));
    await copyFile(join(w.backupDir, `${forged}.sha256`), join(nas, `${forged}.sha256`));
    await writeFile(join(nas, `${forged}.hmac`), `dump ${'0'.repeat(64)}\n`);
    await rm(join(w.backupDir, forged));
    const fromNas = await w.restore({ dump: forged, from: 'offsite', approved: true });
    assert.equal(failureType(fromNas.error).type, 'UnauthenticatedDumpError');
    assert.ok(!existsSync(join(w.backupDir, forged)), 'the forged NAS copy never got a local name');

    const status = await collectStatus(w.config, undefined);
    const local = status.rows.find((r) => r.id === 'local-dump')!;
    assert.equal(local.state, 'ok', local.summary);

    assert.ok(!existsSync(marker), 'nothing in a forged dump ran');
    assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');

    await chmod(w.backupDir, 0o777);
    await assert.rejects(createBackupWorker({ config: w.config, logger: quiet, address: stack.temporal.address }), (err: Error) => err.name === 'UnsafePathError' && /^backup\.dir .* is writable by everyone \(mode 777\): refusing to trust it/.test(err.message));
    await chmod(w.backupDir, 0o700);
    await recordFault('a forged dump (self-consistent .sha256, no tag) planted in the staging dir and on the NAS', 'never "latest" for restore, drill or status; refused by name and --from offsite (UnauthenticatedDumpError) before anything stopped; its \\! line never ran');
    await recordFault('staging dir made world-writable', 'the worker refuses to start: "backup.dir … is writable by everyone (mode 777): refusing to trust it"');
  });

  test('a dump without a valid tag (older than tags, or a lost key) is adopted only after a full check, by who can read the key', async () => {
    const w = await world();
    const old = await w.backup();
    await rm(join(w.backupDir, `${old.file}.hmac`));
    const refused = await w.restore({ dump: old.file, dryRun: true });
    assert.equal(failureType(refused.error).type, 'UnauthenticatedDumpError');
    const configFile = await writeConfigFile(w.root, w.raw);
    const hostile = stampedName(-3_600_000);
    await tamper(w.backupDir, old.file, (sql) => `\\! id\n${sql}`, hostile);
    const bad = await cli(['-c', configFile, 'adopt', hostile]);
    assert.equal(bad.exitCode, 1);
    assert.match(bad.stderr, /^error: dump \S+ line 1: .*refusing to restore it/m);
    assert.ok(!existsSync(join(w.backupDir, `${hostile}.hmac`)), 'a refused dump is not tagged');
    const ok = await cli(['-c', configFile, 'adopt', old.file]);
    assert.equal(ok.exitCode, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`^adopted ${old.file}: sha256 ${old.sha256}`));
    const now = await w.restore({ dump: old.file, dryRun: true });
    assert.equal(now.error, undefined, String(now.error));
    const shared = await tempDir('shared-config');
    await chmod(shared, 0o755);
    const readable = await writeConfigFile(shared, w.raw);
    await chmod(readable, 0o644);
    const asNobody = await execa('runuser', ['-u', 'nobody', '--', process.execPath, join(repoRoot, 'dist/cli/cli.js'), '-c', readable, 'adopt', old.file], { reject: false, cwd: '/tmp' });
    assert.equal(asNobody.exitCode, 2, asNobody.stderr);
    assert.match(asNobody.stderr, /^error: key file \S+ \(security\.keyFile\)/, 'a user who cannot read the key adopts nothing');
  });

  test('review: a reset of an authorized restore replays its authorization but has no grant: refused before Immich stops, nothing changed', async () => {
    const w = await world();
    const dump = await w.backup();
    const first = await w.restore({ dump: dump.file, approved: true });
    assert.equal(first.report?.outcome, 'restored', String(first.error));
    await stack.changeData();
    const changed = await rowCounts(stack.pg);
    await rm(stack.dockerLog, { force: true });
    const events = (await stack.client.workflow.getHandle(first.workflowId).fetchHistory()).events!;
    const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'authorizeRun')!;
    const completed = events.findIndex((e) => e.activityTaskCompletedEventAttributes && String(e.activityTaskCompletedEventAttributes.scheduledEventId) === String(scheduled.eventId));
    const resetPoint = events.slice(completed).find((e) => e.workflowTaskCompletedEventAttributes)!;
    const temporalBin = (await execa('bash', ['-c', 'command -v temporal'])).stdout.trim();
    const result = await withWorker(stack.temporal.address, w.config, async () => {
      await execa(temporalBin, ['workflow', 'reset', '--address', stack.temporal.address, '--namespace', stack.temporal.namespace, '--workflow-id', first.workflowId, '--event-id', String(resetPoint.eventId), '--reason', 'replaying an approved restore']);
      return stack.client.workflow.getHandle(first.workflowId).result().catch((err: unknown) => err);
    });
    const failed = failureType(result);
    assert.match(failed.message, /refusing to stop Immich's containers: run \S+ of \S+ was never authorized/);
    assert.deepEqual((await dockerCalls()).filter((l) => l.startsWith('stop ')), [], 'Immich was never stopped');
    assert.deepEqual(await rowCounts(stack.pg), changed, 'the database was not touched');
    await recordFault('an approved, finished restore reset (temporal workflow reset) to just after its authorization', 'the new run replays the old authorization but holds no grant: stopping Immich refused, nothing loaded, the database unchanged');
  });

  test('review: "latest" is never one of Immich\'s own (unauthenticated) backups; a link planted where the private copy is made or a .sha256 leading to /dev/zero is refused, never followed', async () => {
    const w = await world();
    const immichName = 'immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz';
    await writeFile(join(w.immichBackups, immichName), 'not even read');
    const latest = await w.restore({ dryRun: true });
    const refused = failureType(latest.error);
    assert.equal(refused.type, 'DumpNotFoundError');
    assert.match(refused.message, new RegExp(`Immich's own newest backup is ${immichName} \\(unauthenticated\\): restore it by name`));

    const good = await w.backup();
    await symlink('/dev/zero', join(w.backupDir, `${good.file}.sha256.x`));
    await rename(join(w.backupDir, `${good.file}.sha256.x`), join(w.backupDir, `${good.file}.sha256`));
    const started = Date.now();
    const status = await collectStatus(w.config, undefined);
    assert.ok(Date.now() - started < 30_000, 'status did not hang on /dev/zero');
    assert.notEqual(status.rows.find((r) => r.id === 'local-dump')!.state, 'ok');
    await rm(join(w.backupDir, `${good.file}.sha256`));
    await writeFile(join(w.backupDir, `${good.file}.sha256`), `${good.sha256}  ${good.file}\n`, { mode: 0o600 });

    const elsewhere = await tempDir('planted-loading');
    await chmod(elsewhere, 0o755);
    await symlink(elsewhere, privateCopyDir(w.config.security.keyFile));
    await rm(stack.dockerLog, { force: true });
    const planted = await w.restore({ dump: good.file, approved: true });
    assert.equal(failureType(planted.error).type, 'UnsafePathError');
    assert.match(failureType(planted.error).message, /\/loading is a symbolic link: never written through/);
    assert.deepEqual(await readdir(elsewhere), []);
    assert.equal((await stat(elsewhere)).mode & 0o777, 0o755, 'never chmod-ed through the link');
    assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
  });

  test('finding 3: a dump swapped while the restore waits for approval fails before anything stops', async () => {
    const w = await world();
    const first = await w.backup();
    await stack.pg.psql("INSERT INTO users SELECT md5(r)::uuid, r || '@example.com', 'X', now() FROM (SELECT random()::text AS r) s;", 'immich');
    const second = await w.backup();
    const before = await rowCounts(stack.pg);
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ dump: first.file }, async (id) => {
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'awaiting approval');
      // The other backup's bytes under the approved name, its .sha256 and even its tag made to match.
      await copyFile(join(w.backupDir, second.file), join(w.backupDir, first.file));
      const plan = await handle.query<{ dump: { sha256: string } }>('restorePlan');
      await handle.executeUpdate('approveRestore', { args: [{ sha256: plan.dump.sha256, ...(await decisionFields(w.config, handle)) }] });
    });
    const failed = failureType(error);
    assert.match(failed.message, /changed since it was verified|provenance tag does not verify/);
    assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
    assert.deepEqual(await rowCounts(stack.pg), before, 'the database was not touched');
    await recordFault('dump replaced while the restore waited for approval', `failed before anything stopped: "${failed.message.slice(0, 110)}…"`);
  });

  test('finding 4: a user who cannot read the key starts RestoreLibrary {"delete":true,"approved":true} with the temporal CLI: refused at once; a token from history cannot be used again; approvals need the run\'s token', async () => {
    const w = await world();
    await w.backup();
    const temporalBin = (await execa('bash', ['-c', 'command -v temporal'])).stdout.trim();
    const id = `attack-${Date.now()}`;
    await withWorker(stack.temporal.address, w.config, async () => {
      await execa('runuser', ['-u', 'nobody', '--', temporalBin, 'workflow', 'start', '--address', stack.temporal.address, '--namespace', stack.temporal.namespace, '--task-queue', w.config.temporal.taskQueue, '--type', 'RestoreLibrary', '--workflow-id', id, '--input', '{"delete":true,"approved":true}'], { cwd: '/tmp', env: { HOME: '/tmp' } });
      const result = await stack.client.workflow.getHandle(id).result().catch((err: unknown) => err);
      assert.equal(failureType(result).type, 'UnauthorizedError');
      assert.match(failureType(result).message, /was started without an authorization token: nothing was changed/);
    });
    // nobody cannot read the key, so cannot make a token.
    const read = await execa('runuser', ['-u', 'nobody', '--', 'cat', w.config.security.keyFile], { reject: false });
    assert.notEqual(read.exitCode, 0);

    // A start token copied out of an earlier run's history: bound to that ID, and used once.
    const dry = await w.restore({ dryRun: true });
    assert.equal(dry.error, undefined, String(dry.error));
    const history = await stack.client.workflow.getHandle(dry.workflowId).fetchHistory();
    const { authorization } = JSON.parse(Buffer.from(history.events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads![0]!.data!).toString()) as { authorization: string };
    const other = await w.restore({ authorization, approved: true });
    assert.match(failureType(other.error).message, /does not verify \(made for another workflow/);
    const again = await withWorker(stack.temporal.address, w.config, async () => {
      const handle = await stack.client.workflow.start('RestoreDatabase', { taskQueue: w.config.temporal.taskQueue, workflowId: dry.workflowId, args: [{ authorization, dryRun: true }] });
      return handle.result().catch((err: unknown) => err);
    });
    assert.match(failureType(again).message, /this authorization token was already used/);
    // The same ID, the same token, other input (approved, with no restore point): made for other input.
    const altered = await withWorker(stack.temporal.address, w.config, async () => {
      const handle = await stack.client.workflow.start('RestoreDatabase', { taskQueue: w.config.temporal.taskQueue, workflowId: dry.workflowId, args: [{ authorization, dryRun: true, approved: true, noRestorePoint: true }] });
      return handle.result().catch((err: unknown) => err);
    });
    assert.match(failureType(altered).message, /does not verify \(made for another workflow or other input/);
    await rm(stack.dockerLog, { force: true });
    const restore = await w.restore({}, async (rid) => {
      const handle = stack.client.workflow.getHandle(rid);
      await stepReached(handle, 'awaiting approval');
      const plan = await handle.query<{ dump: { sha256: string } }>('restorePlan');
      await assert.rejects(handle.executeUpdate('approveRestore', { args: [{ sha256: plan.dump.sha256, by: 'mallory' }] }), (err) => /no valid approval token for this run/.test(refusal(err)));
      await assert.rejects(handle.executeUpdate('approveRestore', { args: [{ sha256: plan.dump.sha256, token: 'f'.repeat(64), by: 'mallory' }] }), (err) => /no valid approval token for this run/.test(refusal(err)));
      await assert.rejects(handle.executeUpdate('rejectRestore', { args: [{ by: 'mallory' }] }), (err) => /no valid approval token for this run/.test(refusal(err)));
      await handle.executeUpdate('rejectRestore', { args: [{ reason: 'test', ...(await decisionFields(w.config, handle)) }] });
    });
    assert.equal(restore.report?.outcome, 'rejected');
    assert.match(restore.report!.message, /^rejected by root \(test\)/);
    assert.deepEqual(await dockerCalls(), []);
    await recordFault('RestoreLibrary {"delete":true,"approved":true} started by `nobody` with the temporal CLI', 'failed at once with UnauthorizedError; nothing stopped, nothing deleted; a token copied from history and approvals without the run\'s token are refused');
  });

  test('finding 5: the drill\'s throwaway listens on no TCP port, its socket admits only its own unprivileged user, and what a dump runs there runs as that user', async () => {
    const w = await world({ drill: { runAs: 'nobody' } });
    // Listening TCP sockets of this file's own processes, each read in its own network namespace
    // (the throwaway's too): another program's listener on the machine is not counted.
    const beforePorts = await ownTcpListeners();
    const server = await hostThrowaway(w.config, pgBin);
    try {
      assert.match(server.where, /Unix socket in .* only \(no TCP\), running as nobody/);
      assert.deepEqual(await ownTcpListeners(), beforePorts, 'no new TCP listener');
      const socketDir = /Unix socket in (\S+) only/.exec(server.where)![1]!;
      // Another unprivileged user cannot even reach the socket.
      const probe = await execa('runuser', ['-u', 'postgres', '--', join(pgBin, 'psql'), '-h', socketDir, '-p', '5432', '-U', 'postgres', '-d', 'postgres', '-c', 'SELECT 1'], { reject: false });
      assert.notEqual(probe.exitCode, 0);
      assert.match(probe.stderr, /Permission denied|No such file/);
      const who = (await server.query('postgres', `COPY (SELECT 1) TO PROGRAM 'id -un > /tmp/immich-backup-drill-whoami-${process.pid}'; SELECT pg_read_file('/tmp/immich-backup-drill-whoami-${process.pid}')`)).trim();
      assert.equal(who, 'nobody');
    } finally {
      await server.remove();
      await rm(`/tmp/immich-backup-drill-whoami-${process.pid}`, { force: true });
    }
    await recordFault('the drill\'s throwaway PostgreSQL probed by another local user', 'no TCP listener; the socket directory refuses other users; server-side programs run as nobody');
  });

  test('finding 7: a symlink or a directory named like a dump is ignored by pruning, the drill and status, and never followed', async () => {
    const w = await world({ offsite: { method: 'scp' } });
    const good = await w.backup();
    await execa('mkdir', [join(w.backupDir, stampedName(-86_400_000 * 30))]);
    const link = stampedName(-86_400_000 * 20);
    await execa('ln', ['-s', '/etc/shadow', join(w.backupDir, link)]);
    const again = await w.backup();
    assert.ok(again.pruned.every((p) => p !== link));
    const status = await collectStatus(w.config, undefined);
    const local = status.rows.find((r) => r.id === 'local-dump')!;
    assert.match(local.summary, /a symbolic link named like a dump: ignored \(never followed\)/);
    assert.notEqual(good.file, again.file);
    // OffsiteSync by scp: only the real dumps reach the NAS, never what the symlink points at.
    const synced = await runWorkflow<OffsiteSyncReport>(stack.client, stack.temporal.address, w.config, 'OffsiteSync');
    assert.equal(synced.error, undefined, String(synced.error));
    const nas = await readdir(w.config.offsite.remoteDir);
    assert.ok(!nas.some((n) => n.startsWith(link)), `the symlink's name is not on the NAS: ${nas.join(', ')}`);
    assert.ok(nas.includes(`${again.file}.age`) && nas.includes(`${good.file}.age`), nas.join(', '));
    await recordFault('a directory and a symlink to /etc/shadow named like dumps in the staging dir (offsite.method scp)', 'backups and pruning go on (no EISDIR); status reports both; OffsiteSync by scp copies only the real dumps; nothing followed');
  });

  test('finding 10: a dump stamped in the future is never latest and raises an alarm; a clock jump prunes none of the newest keepMin; a backup of an emptied database is kept but flagged', async () => {
    const w = await world({ backup: { keepMin: 2, retentionDays: 1 } });
    const good = await w.backup();
    // A dump from a clock that ran 30 days ahead, authentic otherwise.
    const future = stampedName(30 * 86_400_000);
    await plantDump(w.config, w.backupDir, future, await readFile(join(w.backupDir, good.file)));
    const status = await collectStatus(w.config, undefined);
    const local = status.rows.find((r) => r.id === 'local-dump')!;
    assert.equal(local.state, 'failed');
    assert.match(local.summary, /in the future: a clock ran ahead/);
    const dry = await w.restore({ dryRun: true });
    assert.equal(dry.report?.dump, good.file);
    await rm(join(w.backupDir, future));

    // A forward clock jump of a year: pruning keeps the newest keepMin whatever the clock says.
    const second = await w.backup();
    const env = new MockActivityEnvironment();
    const acts = createActivities({ config: w.config, logger: quiet });
    const jumped = (await env.run(() => acts.pruneDumps({ keep: second.file, nowMs: Date.now() + 365 * 86_400_000 }))) as { pruned: string[] };
    assert.deepEqual(jumped.pruned, []);

    // The database emptied (a bad migration, an intruder): the next backup is kept but flagged.
    await stack.pg.psql('TRUNCATE assets CASCADE;', 'immich');
    const emptied = await w.backup();
    {
      assert.match(emptied.flagged ?? '', /table\(s\) emptied .*immich: public\.assets/);
      assert.deepEqual(emptied.pruned, [], 'nothing older pruned while the newest is flagged');
      const after = await collectStatus(w.config, undefined);
      const row = after.rows.find((r) => r.id === 'local-dump')!;
      assert.equal(row.state, 'failed');
      assert.match(row.summary, new RegExp(`${emptied.file}: flagged`));
      const restoreLatest = await w.restore({ dryRun: true });
      assert.equal(restoreLatest.report?.dump, second.file, 'restore latest passes over the flagged dump');
      const drill = await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, w.config, 'RestoreDrill');
      assert.equal(drill.report?.dump, second.file, 'the drill too');
    }
    assert.ok((await readdir(w.backupDir)).includes(good.file));
    await recordFault('a dump stamped 30 days in the future', 'never "latest" (restore, drill, status); status alarm "in the future: a clock ran ahead"');
    await recordFault('clock jumped a year ahead before pruning', `pruned nothing of the newest backup.keepMin`);
    await recordFault('backup of a database whose assets were emptied', 'kept but flagged (report, status alarm); restore and drill take the previous dump; nothing older pruned');
  });
});
