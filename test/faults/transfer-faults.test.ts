import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { DefaultLogger } from '@temporalio/worker';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities/index.js';
import type { MirrorOutcome } from '../../core/types.js';
import { parseConfig } from '../../config/config.js';
import { createLogger } from '../../config/logger.js';
import type { OffsiteSyncReport, WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { rawTestConfig, tempDir } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { bigDump, decryptedOnNas, sha, unfinishedNames, worker } from '../helpers/transfer.js';

// Faults in transfers, injected into real processes: worker processes killed with SIGKILL in the
// middle of rsync, the NAS's sshd killed mid-upload, the USB drive unmounted under a run.

const stack = useStack({ sshd: true, boundedCleanup: true });

describe('faults: transfers', () => {
  test('worker killed mid-rsync of the library mirror: a new worker completes it; no partial file under a final name', async () => {
    const root = await tempDir('fault-mirror');
    const source = join(root, 'library');
    await makeLibrary(source, 40, () => 30_000);
    const mountPoint = join(root, 'wd-backup');
    stack.mounted(await mountTmpfs(mountPoint));
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { library: { source, destination: join(mountPoint, 'immich'), mountPoint, bwLimitKiB: 200 }, log: { level: 'info' } } });
    const first = await worker(root, raw);
    const handle = await stack.client.workflow.start('WeeklyLibraryMirror', { taskQueue: raw.temporal!.taskQueue as string, workflowId: `fault-mirror-${Date.now()}`, args: [{}] });
    await waitFor('rsync under way', async () => ((await readdir(join(mountPoint, 'immich'), { recursive: true }).catch(() => [])).length > 3 ? true : undefined), 30_000, 200);
    first.process.kill('SIGKILL');
    await first.process;
    const second = await worker(root, raw);
    try {
      const report = (await handle.result()) as WeeklyLibraryMirrorReport;
      assert.deepEqual(await treeDigest(join(mountPoint, 'immich')), await treeDigest(source));
      assert.deepEqual(await unfinishedNames(join(mountPoint, 'immich')), []);
      await recordFault('worker killed (SIGKILL) mid-rsync: library mirror', `a new worker's attempt completed it (${report.filesTransferred} file(s) left for it: the killed worker's rsync, in its own process group, ran on until its output pipe broke); mirror equals library; no partial file`);
    } finally {
      second.process.kill('SIGTERM');
      await second.process;
    }
  });

  test('worker killed mid-upload to the NAS: a new worker completes it; no partial file under a final name; checksums match', async () => {
    const root = await tempDir('fault-upload');
    const remote = join(root, 'nas');
    const dump = await bigDump(join(root, 'dumps'), '20261126_030000');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { offsite: { ...stack.sshd.offsite, remoteDir: remote, bwLimitKiB: 256 }, log: { level: 'info' } } });
    const first = await worker(root, raw);
    const handle = await stack.client.workflow.start('OffsiteSync', { taskQueue: raw.temporal!.taskQueue as string, workflowId: `fault-upload-${Date.now()}`, args: [{}] });
    // The dump's upload (its ciphertext's temporary name), not the keyring's before it.
    await waitFor('the upload under way', async () => ((await readdir(remote, { recursive: true }).catch(() => [])).some((n) => n.startsWith(`.${dump.name}`) || n.startsWith(`.rsync-partial/.${dump.name}`)) ? true : undefined), 30_000, 100);
    assert.ok(!(await readdir(remote)).includes(`${dump.name}.age`), 'no final name while uploading');
    first.process.kill('SIGKILL');
    await first.process;
    const second = await worker(root, raw);
    try {
      const report = (await handle.result()) as OffsiteSyncReport;
      assert.deepEqual(report.copied, [dump.name]);
      assert.equal(sha(await decryptedOnNas(remote, dump.name, `${join(root, 'dumps')}.key`)), sha(dump.body));
      assert.deepEqual((await readdir(remote)).filter((n) => !n.startsWith('.rsync-partial')).sort(), [`${dump.name}.age`, `${dump.name}.age.sha256`, `${dump.name}.hmac`, 'keyring']);
      await recordFault('worker killed (SIGKILL) mid-rsync: offsite upload', 'new worker completed the upload; NAS copy sha256 matches; no partial file under a final name');
    } finally {
      second.process.kill('SIGTERM');
      await second.process;
    }
  });

  test('the NAS (sshd) killed mid-upload and started later: the retry succeeds; no partial file under a final name; checksums match; no key material in the logs', async () => {
    const root = await tempDir('fault-sshd');
    const remote = join(root, 'nas');
    const dump = await bigDump(join(root, 'dumps'), '20261126_040000');
    const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { offsite: { ...stack.sshd.offsite, remoteDir: remote, bwLimitKiB: 256, retryWindowMinutes: 2 }, log: { level: 'debug' } } });
    const w = await worker(root, raw);
    try {
      const handle = await stack.client.workflow.start('OffsiteSync', { taskQueue: raw.temporal!.taskQueue as string, workflowId: `fault-sshd-${Date.now()}`, args: [{}] });
      await waitFor('the upload under way', async () => ((await readdir(remote).catch(() => [])).some((n) => n.startsWith(`.${dump.name}`)) ? true : undefined), 30_000, 100);
      await stack.sshd.kill();
      await new Promise((r) => setTimeout(r, 3000));
      assert.ok(!(await readdir(remote)).includes(`${dump.name}.age`), 'no final name after the cut');
      await stack.sshd.start();
      const report = (await handle.result()) as OffsiteSyncReport;
      assert.deepEqual(report.copied, [dump.name]);
      assert.equal(sha(await decryptedOnNas(remote, dump.name, `${join(root, 'dumps')}.key`)), sha(dump.body));
      const key = await readFile(stack.sshd.identityFile, 'utf8');
      const keyBody = key.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
      for (const text of [w.stdout(), w.stderr()]) {
        assert.ok(!text.includes('PRIVATE KEY') && !text.includes(keyBody.slice(0, 40)), 'no key material in any log line');
      }
      await recordFault('sshd (NAS) killed mid-upload, started 3 s later', 'upload failed as NAS unreachable, retried with backoff, completed; sha256 matches; no partial under a final name; no key material in the worker\'s logs');
    } finally {
      await stack.sshd.start().catch(() => undefined);
      w.process.kill('SIGTERM');
      await w.process;
    }
  });

  test('the drive unmounted after a mirror and before the next: nothing is written to the bare mount point; the run says the drive is not there', async () => {
    const root = await tempDir('fault-unmount');
    const source = join(root, 'library');
    await makeLibrary(source, 10);
    const mountPoint = join(root, 'wd-backup');
    const mount = await mountTmpfs(mountPoint);
    const config = parseConfig(rawTestConfig({ backupDir: join(root, 'dumps'), extra: { library: { source, destination: join(mountPoint, 'immich'), mountPoint } } }));
    const activities = createActivities({ config, logger: createLogger({ level: 'fatal', fd: 2 }) });
    const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR', () => undefined) });
    const first = (await env.run(() => activities.mirrorLibrary())) as MirrorOutcome;
    assert.deepEqual([first.ready, first.ready && first.filesTransferred], [true, 10]);
    await mount.unmount();
    assert.deepEqual(await env.run(() => activities.mirrorLibrary()), { ready: false, reason: `drive not mounted at ${mountPoint}` });
    assert.deepEqual(await readdir(mountPoint), [], 'the bare mount point stays empty');
    await recordFault('drive unmounted before a mirror run', 'the run reports "drive not mounted at …" (the workflow waits for it, then fails saying so); bare mount point empty');
  });});
