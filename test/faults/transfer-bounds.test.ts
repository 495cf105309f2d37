import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import type { StatusReport } from '../../core/reports.js';
import { parseConfig } from '../../config/config.js';
import type { OffsiteSyncReport, WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { cli, spawnCli } from '../helpers/cli.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { makeLibrary, mountLoopExt4, mountTmpfs } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { failureType } from '../helpers/restore-stack.js';
import { activityAttempts, runWorkflow } from '../helpers/run-workflow.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { bigDump, sshProcessesFor, unfinishedNames } from '../helpers/transfer.js';

// Transfers that must end: a hung NAS (ssh connects, then nothing), a NAS that stops taking an
// upload, a frozen drive (fsfreeze), a full NAS. Each fails in one line within its bound, and
// nothing is left running. (A file of its own: each waits out its stall windows.)

// scripts/test.sh: alone (it freezes a loop-mounted filesystem, and its stall windows of a few
// seconds are measured against progress that the load of other files would slow down)

// Two sick NASes besides the sound one: `hung` takes the login, then runs nothing (every command
// sleeps); `freezing` freezes its rsync (SIGSTOP) a second into each upload, other commands run.
// The rsync server is started in its own session, so the whole of it (generator and receiver) can be
// stopped; stopped processes are SIGKILLed by the helper's stop(). (An asynchronous command's stdin
// is /dev/null unless redirected: fd 3 carries the session's.)
const FREEZE_RSYNC = `case "$SSH_ORIGINAL_COMMAND" in
  rsync\\ --server*) exec 3<&0; setsid sh -c "exec $SSH_ORIGINAL_COMMAND" <&3 & pid=$!; sleep 1; /bin/kill -STOP -- -$pid; wait $pid ;;
  *) exec sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac`;

const stack = useStack({ sshd: true, sickSshds: { hung: { forceCommand: 'exec sleep 3600' }, freezing: { forceCommand: FREEZE_RSYNC } }, boundedCleanup: true });

describe('faults: bounded transfers', () => {
  test('finding 9: status with a hung NAS (ssh connects, then nothing) answers within status.rowTimeoutSeconds; the NAS row reads unreachable; no ssh is left running', async () => {
    const root = await tempDir('fault-status-hung');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { offsite: { ...stack.sshds.hung.offsite, remoteDir: join(root, 'nas') }, status: { rowTimeoutSeconds: 3 }, library: { mountPoint: join(root, 'wd'), destination: join(root, 'wd', 'immich') } } });
    const file = await writeConfigFile(root, raw);
    const started = Date.now();
    const r = await cli(['-c', file, 'status', '--json']);
    const tookMs = Date.now() - started;
    assert.equal(r.exitCode, 1, String(r.stderr));
    const report = JSON.parse(String(r.stdout)) as StatusReport;
    const nas = report.rows.find((row) => row.id === 'nas-copy');
    assert.equal(nas?.state, 'unreachable');
    assert.match(nas!.summary, /^NAS \S+ not checked: no answer within 3 s \(status\.rowTimeoutSeconds\)$/);
    assert.ok(tookMs < 20_000, `answered in ${tookMs} ms`);
    // The killed ssh leaves no process behind (it ran in its own process group, out of the CLI's).
    await waitFor('ssh to the hung NAS gone', async () => ((await sshProcessesFor(stack.sshds.hung.port)).length === 0 ? true : undefined), 10_000, 200);
    await recordFault('hung NAS (sshd ForceCommand sleep): immich-backup status', `answered in ${(tookMs / 1000).toFixed(1)} s: nas-copy "unreachable" after status.rowTimeoutSeconds (3 s); no ssh left running (ps)`);
  });

  test('finding 9: status interrupted (SIGTERM) while a hung NAS holds its ssh: it exits at once and leaves no ssh behind', async () => {
    const root = await tempDir('fault-status-term');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { offsite: { ...stack.sshds.hung.offsite, remoteDir: join(root, 'nas') }, status: { rowTimeoutSeconds: 60 }, library: { mountPoint: join(root, 'wd'), destination: join(root, 'wd', 'immich') } } });
    const status = spawnCli(['-c', await writeConfigFile(root, raw), 'status']);
    await waitFor('status to have its ssh open', async () => ((await sshProcessesFor(stack.sshds.hung.port)).length ? true : undefined), 20_000, 100);
    const killedAt = Date.now();
    status.process.kill('SIGTERM');
    const { exitCode } = await status.process;
    assert.ok(Date.now() - killedAt < 10_000, 'it exited promptly');
    assert.equal(exitCode, 143);
    assert.match(status.stdout(), /nas-copy.*status was interrupted/);
    await waitFor('ssh to the hung NAS gone', async () => ((await sshProcessesFor(stack.sshds.hung.port)).length === 0 ? true : undefined), 10_000, 200);
    await recordFault('immich-backup status SIGTERMed while its ssh to a hung NAS waits', 'exit 143 at once, the rows so far printed (NAS: interrupted); no ssh left running (ps)');
  });

  test('finding 9: an upload the NAS stops taking mid-transfer fails as stalled after offsite.stallSeconds, in one line; no partial file is left on the NAS', async () => {
    const root = await tempDir('fault-upload-stall');
    const remote = join(root, 'nas');
    await bigDump(join(root, 'dumps'), '20261127_030000');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { offsite: { ...stack.sshds.freezing.offsite, remoteDir: remote, bwLimitKiB: 256, stallSeconds: 3, retryWindowMinutes: 0.05 } } });
    const started = Date.now();
    // The NAS side's rsync stays stopped (SIGSTOP) once the client gave up: killed here, so no stopped
    // rsync outlives the test (later tests look for rsync processes).
    const { error } = await runWorkflow<OffsiteSyncReport>(stack.client, stack.temporal.address, parseConfig(raw), 'OffsiteSync').finally(() => execa('pkill', ['-KILL', '-f', remote], { reject: false }));
    const tookMs = Date.now() - started;
    const failure = failureType(error);
    assert.equal(failure.type, 'StalledError', failure.message);
    assert.match(failure.message, /^the upload of immich_20261127_030000\.sql\.gz\.age to \S+ stalled: (nothing moved for \d+ s \(offsite\.stallSeconds 3\) at .* transferred; stopped rsync|rsync saw no data move for 3 s \(offsite\.stallSeconds\) and stopped): check the NAS/);
    assert.doesNotMatch(failure.message, /\n/);
    assert.ok(tookMs < 60_000, `failed in ${tookMs} ms`);
    assert.deepEqual(await unfinishedNames(remote), [], 'no partial upload left on the NAS');
    assert.deepEqual((await readdir(remote)).filter((n) => n.startsWith('.')), []);
    await recordFault('NAS stops taking an upload mid-transfer (remote rsync SIGSTOPped)', `StalledError after offsite.stallSeconds (3 s), whole run ${(tookMs / 1000).toFixed(1)} s instead of hours; rsync killed; no partial file left on the NAS`);
  });

  test('finding 9: a frozen drive (fsfreeze) under the library mirror fails it as stalled after library.stallSeconds; heartbeats say how long nothing moved', async () => {
    const root = await tempDir('fault-freeze');
    const source = join(root, 'library');
    await makeLibrary(source, 40, () => 30_000);
    const mountPoint = join(root, 'wd-backup');
    const drive = await mountLoopExt4(mountPoint);
    stack.mounted(drive);
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { library: { source, destination: join(mountPoint, 'immich'), mountPoint, bwLimitKiB: 150, stallSeconds: 3 } } });
    let heartbeat: Record<string, unknown> | undefined;
    try {
      const started = Date.now();
      const { error } = await runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, parseConfig(raw), 'WeeklyLibraryMirror', async (id) => {
        await waitFor('rsync under way', async () => ((await readdir(join(mountPoint, 'immich'), { recursive: true }).catch(() => [])).length > 3 ? true : undefined), 30_000, 100);
        await drive.freeze();
        heartbeat = await waitFor('a heartbeat saying nothing moves', async () => {
          const { raw: described } = await stack.client.workflow.getHandle(id).describe();
          const payload = described.pendingActivities?.[0]?.heartbeatDetails?.payloads?.[0]?.data;
          const details = payload ? (JSON.parse(Buffer.from(payload).toString('utf8')) as Record<string, unknown>) : undefined;
          return details && typeof details.nothingMovedForSeconds === 'number' ? details : undefined;
        }, 30_000, 250);
      });
      const tookMs = Date.now() - started;
      const failure = failureType(error);
      assert.equal(failure.type, 'StalledError', failure.message);
      assert.match(failure.message, /^the library mirror onto \S+ stalled: (nothing moved for \d+ s \(library\.stallSeconds 3\)|rsync saw no data move for 3 s)/);
      assert.doesNotMatch(failure.message, /\n/);
      assert.equal(heartbeat!.step, 'mirroring library');
      assert.equal(heartbeat!.stallsAfterSeconds, 3);
      assert.ok(tookMs < 90_000, `failed in ${tookMs} ms`);
      await recordFault('drive frozen (fsfreeze on a loop-mounted ext4) mid-mirror', `StalledError after library.stallSeconds (3 s) instead of a 24 h heartbeat of stale progress; heartbeats read "nothing moved for N s"; not retried (${failure.message.includes('stuck in the kernel') ? 'rsync stuck in the kernel left to exit on thaw' : 'rsync killed'})`);
    } finally {
      await drive.thaw();
    }
  });

  test('finding 11: a full NAS fails the upload at once with one line (NasFullError, not retried) and leaves no partial file there', async () => {
    const root = await tempDir('fault-nas-full');
    const remote = join(root, 'nas');
    stack.mounted(await mountTmpfs(remote, '1m'));
    const dump = await bigDump(join(root, 'dumps'), '20261127_040000');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { offsite: { ...stack.sshd.offsite, remoteDir: remote } } });
    const { error, workflowId } = await runWorkflow<OffsiteSyncReport>(stack.client, stack.temporal.address, parseConfig(raw), 'OffsiteSync');
    const failure = failureType(error);
    assert.equal(failure.type, 'NasFullError');
    assert.match(failure.message, /^the NAS \S+ is full \(No space left on device\): free space there or prune old dumps \(offsite\.retentionDays\), then run OffsiteSync again$/);
    assert.equal((await activityAttempts(stack.client, workflowId)).length, 2, 'the plan, then one upload attempt: not retried');
    // The wrapped keyring (a few hundred bytes) went first, in the plan: it is all there is.
    assert.deepEqual(await readdir(remote), ['keyring'], 'nothing left on the NAS: no .partial, no rsync partial dir');
    assert.ok(existsSync(join(root, 'dumps', dump.name)), 'the local dump stays');
    await recordFault('NAS full (its dir a 1 MiB tmpfs) during an upload', 'NasFullError in one line, not retried; no partial file or rsync partial dir left on the NAS');
  });
});
