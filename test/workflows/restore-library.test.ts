import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, chmod, lstat, mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { execa } from 'execa';
import { parseConfig } from '../../config/config.js';
import type { RestoreLibraryReport, WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { runWorkflow, testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { failureType as restoreFailure, stepReached } from '../helpers/restore-stack.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { decisionFields, startAuthorized } from '../helpers/trust.js';

// RestoreLibrary: the mirror on a real tmpfs mount back onto the library with real rsync, on a real
// dev server; a real HTTP server answers Immich's ping; the fixture docker records stops and starts.

const stack = useStack({ ping: true, dockerLog: true });

const dockerCalls = async () => (existsSync(stack.dockerLog) ? (await readFile(stack.dockerLog, 'utf8')).split('\n').filter((l) => /^(stop|compose-up) /.test(l)).map((l) => l.split(' ')[0]) : []);

/** A library of 80 files, mirrored onto a mounted drive by WeeklyLibraryMirror. */
async function mirrored(mounted = true) {
  const root = await tempDir('restore-lib');
  const library = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  await makeLibrary(library, 80);
  if (mounted) stack.mounted(await mountTmpfs(mountPoint));
  else await mkdir(mountPoint);
  const raw = rawTestConfig({
    backupDir: join(root, 'dumps'),
    address: stack.temporal.address,
    extra: {
      library: { source: library, destination: join(mountPoint, 'immich'), mountPoint, mountWaitMinutes: 0 },
      immich: { composeDir: root, pingUrl: stack.ping.url, healthTimeoutSeconds: 5 },
      log: { level: 'info' },
    },
  });
  const config = parseConfig(raw);
  if (mounted) assert.equal((await runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror')).error, undefined);
  /** From here on, what the worker runs with (e.g. a bandwidth limit that slows the restore down). */
  const slowed = (library: Record<string, unknown>) => parseConfig({ ...raw, library: { ...raw.library, ...library } });
  const restore = (input: Record<string, unknown>, during?: (id: string) => Promise<void>, with_ = config) => runWorkflow<RestoreLibraryReport>(stack.client, stack.temporal.address, with_, 'RestoreLibrary', during, input);
  return { root, library, mirror: join(mountPoint, 'immich'), raw, config, slowed, restore };
}

async function loseFiles(library: string, count: number): Promise<string[]> {
  const paths = Object.keys(await treeDigest(library)).slice(0, count);
  for (const p of paths) await rm(join(library, p));
  return paths;
}

describe('RestoreLibrary', () => {
  test('files deleted from the library come back from the mirror, with Immich stopped meanwhile', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 12);
    await writeFile(join(w.library, 'user0', '2020', '01', 'IMG_000000.jpg'), 'damaged');
    await rm(stack.dockerLog, { force: true });
    const { report, error } = await w.restore({ approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.filesTransferred, 13);
    assert.equal(report!.deleted, 0);
    assert.equal(report!.healthy, true);
    assert.match(report!.message, /regenerates thumbnails/);
    assert.deepEqual(await treeDigest(w.library), await treeDigest(w.mirror));
    assert.deepEqual(await dockerCalls(), ['stop', 'compose-up']);
  });

  test('a dry run reports what would change and changes nothing', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 5);
    const before = await treeDigest(w.library);
    await rm(stack.dockerLog, { force: true });
    const { report, error } = await w.restore({ dryRun: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'dry-run');
    assert.equal(report!.filesTransferred, 5);
    assert.match(report!.message, /^dry run: the restore would copy 5 file\(s\) .*nothing was changed$/);
    assert.deepEqual(await treeDigest(w.library), before);
    assert.deepEqual(await dockerCalls(), []);
  });

  test('--delete also removes library files the mirror does not have', async () => {
    const w = await mirrored();
    await writeFile(join(w.library, 'stray.jpg'), 'not in the mirror');
    const { report, error } = await w.restore({ delete: true, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.deleted, 1);
    assert.deepEqual(await treeDigest(w.library), await treeDigest(w.mirror));
  });

  test('with the drive not mounted it refuses before stopping anything', async () => {
    const w = await mirrored(false);
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ approved: true });
    assert.ok(error instanceof WorkflowFailedError);
    const failure = (error.cause as { cause?: unknown }).cause;
    assert.ok(failure instanceof ApplicationFailure);
    assert.equal(failure.type, 'DriveNotMountedError');
    assert.match(failure.message, /^drive not mounted at .*: nothing was restored$/);
    assert.deepEqual(await dockerCalls(), []);
  });

  test('the CLI follows a restore: it shows the step, waits for approval, and `restore approve` lets it proceed', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 3);
    const configFile = await writeConfigFile(w.root, w.raw);
    const worker = spawnCli(['-c', configFile, 'worker']);
    try {
      await workerStarted(worker);
      const operator = spawnCli(['-c', configFile, 'restore', 'library', '--json']);
      const workflowId = await waitFor('the approval prompt', () => /^ +approve: +immich-backup restore approve (\S+)$/m.exec(operator.stderr())?.[1], 60_000);
      const approve = await cli(['-c', configFile, 'restore', 'approve', workflowId]);
      assert.equal(approve.exitCode, 0, approve.stderr);
      const { exitCode } = await operator.process;
      assert.equal(exitCode, 0, operator.stderr());
      const report = JSON.parse(operator.stdout()) as RestoreLibraryReport;
      assert.equal(report.outcome, 'restored');
      assert.equal(report.filesTransferred, 3);
      // The steps before the approval (each shown as the CLI sees it: a quick one may pass between two looks).
      assert.match(operator.stderr(), /^… (checking the authorization|checking the mirror|dry run)$/m);
      assert.match(operator.stderr(), /^… awaiting approval\n( {4}.*\n)* {4}approve: +immich-backup restore approve restore-library-cli-\S+\n {4}reject: +immich-backup restore reject restore-library-cli-\S+\n/m);
      assert.match(operator.stderr(), /^ {6}3\. copy 3 file\(s\) \(\d+ bytes\) from the mirror and delete 0 \(as the dry run counted it\)$/m);
    } finally {
      worker.process.kill('SIGTERM');
      await worker.process;
    }
  });

  test('problem 3: cancelled while waiting for approval: nothing changed', async () => {
    const w = await mirrored();
    const lost = await loseFiles(w.library, 4);
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({}, async (id) => {
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'awaiting approval');
      await handle.cancel();
    });
    assert.equal(restoreFailure(error).message, 'restore cancelled while awaiting approval: nothing was changed');
    for (const p of lost) assert.equal(existsSync(join(w.library, p)), false);
    assert.deepEqual(await dockerCalls(), []);
  });

  const cancelPoints: Array<{ step: string; delay?: string; library?: Record<string, unknown>; ends: RegExp; calls: string[] }> = [
    { step: 'stopping Immich', delay: 'stop=30', ends: /^restore cancelled while stopping Immich: the library was not touched; Immich started \(healthy\)$/, calls: ['compose-up'] },
    { step: 'restoring library', library: { bwLimitKiB: 20 }, ends: /^restore cancelled while restoring library: the library is partly restored \(files already copied stay; nothing else was removed\); run the restore again to finish: rsync resumes; Immich started \(healthy\)$/, calls: ['stop', 'compose-up'] },
    { step: 'starting Immich', delay: 'compose=4', ends: /^restored \d+ file\(s\) from the mirror/, calls: ['stop', 'compose-up'] },
  ];
  for (const point of cancelPoints) {
    test(`problem 3: cancelled while ${point.step}: Immich is started again and the end says what the library holds`, async () => {
      const w = await mirrored();
      await loseFiles(w.library, 40);
      await rm(stack.dockerLog, { force: true });
      if (point.delay) process.env.FIXTURE_DOCKER_DELAY = point.delay;
      try {
        const { report, error } = await w.restore({ approved: true }, async (id) => {
          const handle = stack.client.workflow.getHandle(id);
          await stepReached(handle, point.step);
          await new Promise((r) => setTimeout(r, 1500));
          await handle.cancel();
        }, point.library ? w.slowed(point.library) : w.config);
        assert.match(error ? restoreFailure(error).message : report!.message, point.ends);
      } finally {
        delete process.env.FIXTURE_DOCKER_DELAY;
      }
      assert.deepEqual(await dockerCalls(), point.calls);
    });
  }

  test('problem 9: a mirror run started during a library restore waits for it, saying so', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 40);
    const config = w.slowed({ bwLimitKiB: 40 });
    const restoreId = testWorkflowId('RestoreLibrary');
    const [restored, mirroredAfter] = await withWorker(stack.temporal.address, config, async () => {
      const restoring = await startAuthorized(stack.client, config, 'RestoreLibrary', restoreId, { approved: true });
      await stepReached(restoring, 'restoring library');
      const mirroring = await startAuthorized(stack.client, config, 'WeeklyLibraryMirror', testWorkflowId('WeeklyLibraryMirror'), {});
      // The step names the holder once the lock has answered (a moment after the wait begins): wait for that line, which must come.
      const waiting = await stepReached(mirroring, (s) => s.startsWith('waiting for the library: in use by'));
      assert.match(waiting, new RegExp(`^waiting for the library: in use by ${restoreId} \\(gives up at \\S+Z\\)$`));
      return Promise.all([restoring.result() as Promise<RestoreLibraryReport>, mirroring.result() as Promise<WeeklyLibraryMirrorReport>]);
    });
    assert.equal(restored.outcome, 'restored');
    assert.equal(restored.filesTransferred, 40);
    assert.equal(mirroredAfter.filesTransferred, 0, 'the mirror ran after the restore, on a library already whole');
    assert.deepEqual(await treeDigest(w.library), await treeDigest(w.mirror));
  });

  test('with --delete, no more files are deleted than the approved dry run counted', async () => {
    const w = await mirrored();
    await writeFile(join(w.library, 'stray.jpg'), 'not in the mirror');
    const { error } = await w.restore({ delete: true }, async (id) => {
      const handle = stack.client.workflow.getHandle(id);
      await stepReached(handle, 'awaiting approval');
      // After the operator saw "delete 1", three more files appear that the mirror lacks.
      for (const n of [1, 2, 3]) await writeFile(join(w.library, `late-${n}.jpg`), 'uploaded while the restore waited');
      await handle.executeUpdate('approveRestore', { args: [await decisionFields(w.config, handle)] });
    });
    const failure = restoreFailure(error);
    assert.equal(failure.type, 'RestoreFailedError');
    assert.match(failure.message, /^library restore failed \(the restore would delete more library files than the 1 the approved dry run counted: deletion stopped there; run the restore again to see and approve the new count\); the library is partly restored/);
    const left = ['stray.jpg', 'late-1.jpg', 'late-2.jpg', 'late-3.jpg'].filter((f) => existsSync(join(w.library, f)));
    assert.equal(left.length, 3, `one deletion, as approved: ${left.join(', ')} left`);
  });
  test('finding 6: hostile files on the drive (a device, a FIFO, a socket, a setuid-root binary, symlinks to /etc and above the tree) never reach the library; the report lists what was skipped', async () => {
    const w = await mirrored();
    // Written onto the mirror by anyone who had the drive in hand.
    const m = (p: string) => join(w.mirror, p);
    await execa('mknod', [m('disk'), 'b', '8', '0']);
    await execa('mknod', [m('user0/null'), 'c', '1', '3']);
    await execa('mkfifo', [m('user1/fifo')]);
    await execa('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', m('user2/sock')]);
    await copyFile('/bin/true', m('user3/suid-true'));
    await chmod(m('user3/suid-true'), 0o6755);
    await symlink('/etc', m('etc-link'));
    await symlink('../../..', m('user0/2020/up'));
    await symlink('01', m('user0/2020/inside')); // relative, stays inside: restored
    const hostile = ['disk', 'user0/null', 'user1/fifo', 'user2/sock', 'etc-link', 'user0/2020/up'];

    const dry = await w.restore({ dryRun: true });
    assert.equal(dry.error, undefined, String(dry.error));
    assert.equal(dry.report!.skipped.count, hostile.length);
    assert.match(dry.report!.message, /and skip 6 item\(s\) on the drive that a library never holds/);

    const { report, error } = await w.restore({ approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    for (const p of hostile) assert.equal(existsSync(join(w.library, p)) || (await lstat(join(w.library, p)).then(() => true, () => false)), false, `${p} not restored`);
    const suid = await lstat(join(w.library, 'user3/suid-true'));
    assert.ok(suid.isFile());
    assert.equal(suid.mode & 0o7777, 0o755, 'restored without its setuid and setgid bits');
    assert.equal(await readlink(join(w.library, 'user0/2020/inside')), '01');
    assert.equal(report!.skipped.count, hostile.length);
    assert.deepEqual([...report!.skipped.first].sort(), [
      'disk (non-regular file)',
      'etc-link -> /etc (unsafe symlink)',
      'user0/2020/up -> ../../.. (unsafe symlink)',
      'user0/null (non-regular file)',
      'user1/fifo (non-regular file)',
      'user2/sock (non-regular file)',
    ]);
    assert.match(report!.message, /; skipped 6 item\(s\) on the drive that a library never holds \(devices, FIFOs, sockets, symlinks leading out of it\): /);
    await recordFault('hostile mirror: device nodes, FIFO, socket, setuid-root binary, symlinks to /etc and ../../..', 'RestoreLibrary restored none of them (the binary without setuid/setgid), kept the inside symlink, and listed the 6 skipped in its report');
  });
});
