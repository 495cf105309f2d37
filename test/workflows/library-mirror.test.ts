import assert from 'node:assert/strict';
import { mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { execa } from 'execa';
import { countFiles, hasFiles, isMountPoint } from '../../adapters/mirror/drive.js';
import { currentProgress } from '../../temporal/client.js';
import type { WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { ownProcessesNamed } from '../helpers/processes.js';
import { applicationFailure, stepReached } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { listDir, tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// WeeklyLibraryMirror with real rsync into a real tmpfs mount standing in for the WD drive, on a
// real Temporal dev server.

const stack = useStack();

async function setup(files: number, library: Record<string, unknown> = {}, mounted = true) {
  const root = await tempDir('mirror');
  const source = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  const bytes = await makeLibrary(source, files);
  if (mounted) stack.mounted(await mountTmpfs(mountPoint));
  else await mkdir(mountPoint, { recursive: true });
  const destination = join(mountPoint, 'immich');
  const config = testConfig({ backupDir: join(root, 'dumps'), extra: { library: { source, destination, mountPoint, mountWaitMinutes: 0.05, mountPollSeconds: 1, ...library } } });
  const run = (during?: (id: string) => Promise<void>, overrides = config, input: Record<string, unknown> = {}) => runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, overrides, 'WeeklyLibraryMirror', during, input);
  return { source, destination, mountPoint, bytes, config, run };
}

describe('WeeklyLibraryMirror', () => {
  test('review: a destination that is a symlink on the drive (to a host directory) is refused; with deletion on, the host directory keeps its files', async () => {
    const { destination, config, run } = await setup(5, { delete: true });
    const victim = await tempDir('victim');
    await writeFile(join(victim, 'keep.txt'), 'a host file rsync --delete would erase');
    await symlink(victim, destination);
    const { error } = await run();
    const failure = applicationFailure(error);
    assert.equal(failure.type, 'MirrorSafetyError');
    assert.match(failure.message, /^library\.destination \S+ leads to \S+, off the drive mounted at \S+ \(a symlink on the drive\?\): nothing was copied or deleted/);
    assert.deepEqual(await readdir(victim), ['keep.txt']);
    assert.ok(config.library.delete);
  });

  test('finding 4: a mirror that deletes, started without the CLI\'s token (nor by its schedule), fails at once and deletes nothing', async () => {
    const { destination, config, run } = await setup(5, { delete: true });
    await mkdir(destination, { recursive: true });
    await writeFile(join(destination, 'only-on-the-mirror.jpg'), 'x');
    const { error } = await run(undefined, config, { authorization: undefined });
    assert.equal(applicationFailure(error).type, 'UnauthorizedError');
    assert.deepEqual(await readdir(destination), ['only-on-the-mirror.jpg']);
  });

  test('the mount check tells a mounted drive from a bare directory', async () => {
    const root = await tempDir('mountcheck');
    const bare = join(root, 'bare');
    await mkdir(bare);
    stack.mounted(await mountTmpfs(join(root, 'drive')));
    assert.equal(await isMountPoint(join(root, 'drive')), true);
    assert.equal(await isMountPoint(bare), false);
    assert.equal(await isMountPoint(join(root, 'missing')), false);
  });

  test('hasFiles finds a file deep in a tree and reports empty or missing trees as empty', async () => {
    const root = await tempDir('hasfiles');
    await mkdir(join(root, 'a', 'b', 'c'), { recursive: true });
    assert.equal(await hasFiles(root), false);
    assert.equal(await hasFiles(join(root, 'missing')), false);
    await writeFile(join(root, 'a', 'b', 'c', 'photo.jpg'), 'x');
    assert.equal(await hasFiles(root), true);
  });

  test('mirrors the library onto the mounted drive and reports what it copied; a rerun copies nothing', async () => {
    const { source, destination, bytes, run } = await setup(300);
    const first = await run();
    assert.equal(first.error, undefined, String(first.error));
    assert.equal(first.report!.filesTransferred, 300);
    assert.equal(first.report!.bytesTransferred, bytes);
    assert.equal(first.report!.deleted, 0);
    assert.equal(first.report!.sourceFiles, 300);
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));

    const second = await run();
    assert.equal(second.error, undefined);
    assert.equal(second.report!.filesTransferred, 0);
    assert.equal(second.report!.bytesTransferred, 0);
    assert.equal(second.report!.sourceFiles, 300);
  });

  test('heartbeats carry rsync\'s progress while rsync runs at idle I/O and lowest CPU priority', async () => {
    const { run } = await setup(120, { bwLimitKiB: 200 }); // ~1.4 MB at 200 KiB/s: several heartbeats
    let seen: Record<string, unknown> | undefined;
    let priority = '';
    const { error } = await run(async (workflowId) => {
      const handle = stack.client.workflow.getHandle(workflowId);
      seen = await waitFor('progress in the heartbeat details', async () => {
        const details = (await currentProgress(handle)).find((p) => p.activity === 'mirrorLibrary')?.details as Record<string, unknown> | undefined;
        return details && typeof details.percent === 'number' ? details : undefined;
      }, 30_000, 200);
      const pid = String((await ownProcessesNamed({ name: 'rsync' })).pop());
      priority = `${(await execa('ps', ['-o', 'ni=', '-p', pid])).stdout.trim()} ${(await execa('ionice', ['-p', pid])).stdout.trim()}`;
    });
    assert.equal(error, undefined, String(error));
    assert.equal(seen!.step, 'mirroring library');
    assert.match(String(seen!.transferred), /B$/);
    assert.ok('bytes' in seen! && 'rate' in seen! && 'filesTransferred' in seen!);
    assert.equal(priority, '19 idle');
  });

  test('cancelling stops rsync promptly', async () => {
    const { run } = await setup(60, { bwLimitKiB: 50 });
    let pid = 0;
    let cancelledAt = 0;
    const { error } = await run(async (workflowId) => {
      pid = await waitFor('rsync', async () => (await ownProcessesNamed({ name: 'rsync' })).pop(), 30_000);
      cancelledAt = Date.now();
      await stack.client.workflow.getHandle(workflowId).cancel();
    });
    assert.ok(error instanceof WorkflowFailedError && error.cause instanceof CancelledFailure, String(error));
    assert.ok(Date.now() - cancelledAt < 5000, 'cancelled within seconds');
    await waitFor('rsync to exit', async () => ((await ownProcessesNamed({ name: 'rsync' })).length === 0 ? true : undefined), 5000);
    assert.ok(pid > 0);
  });

  test('a drive that is not mounted: nothing is written, and after the window it fails saying so', async () => {
    const { mountPoint, run } = await setup(20, {}, false);
    const started = Date.now();
    const { error } = await run(async (id) => {
      const step = await stepReached(stack.client.workflow.getHandle(id), (s) => s.startsWith('waiting for the drive'), 30_000);
      assert.match(step, new RegExp(`^waiting for the drive: drive not mounted at ${mountPoint}; next look at \\S+Z, gives up at \\S+Z$`));
    });
    const failure = applicationFailure(error);
    assert.equal(failure.type, 'DriveNotMountedError');
    assert.match(failure.message, new RegExp(`^drive not mounted at ${mountPoint} \\(checked for \\d+ s\\)`));
    assert.ok(Date.now() - started >= 2000, 'it kept checking for the window');
    assert.deepEqual(await listDir(mountPoint), []);
  });

  test('with deletion on, a library that lost most of its files is refused and the mirror keeps everything', async () => {
    const { source, destination, config, run } = await setup(100, { delete: true });
    assert.equal((await run()).error, undefined);
    // 90 of 100 files vanish from the library (an unmounted share, a bad script).
    for (const [i, path] of Object.keys(await treeDigest(source)).entries()) if (i < 90) await rm(join(source, path));
    const { error } = await run();
    const failure = applicationFailure(error);
    assert.equal(failure.type, 'MirrorSafetyError');
    assert.match(failure.message, /library holds 10 files, the mirror 100/);
    assert.equal(await countFiles(destination), 100);
    // An emptied library is refused whatever the settings.
    await rm(source, { recursive: true });
    await mkdir(source);
    const empty = applicationFailure((await run(undefined, config)).error);
    assert.equal(empty.type, 'SourceEmptyError');
    assert.equal(await countFiles(destination), 100);
  });

  test('with deletion on and a library that only lost a few files, the mirror follows it', async () => {
    // A deletion counts against library.writeOnce: on a 50-file library its default share (1%) would refuse one.
    const { source, destination, run } = await setup(50, { delete: true, writeOnce: { maxFiles: 100, maxShare: 1 } });
    assert.equal((await run()).error, undefined);
    const paths = Object.keys(await treeDigest(source));
    await rm(join(source, paths[0]!));
    await writeFile(join(source, 'new.jpg'), 'new');
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.deleted, 1);
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));
  });
});
