import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { execa } from 'execa';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createActivities } from '../../activities/index.js';
import type { PruneResult } from '../../core/types.js';
import { createLogger } from '../../config/logger.js';
import type { OffsiteSyncReport } from '../../workflows/index.js';
import { stepReached } from '../helpers/restore-stack.js';
import { activityAttempts, runWorkflow } from '../helpers/run-workflow.js';
import { listDir, tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { tagWithTestKey } from '../helpers/trust.js';
import { decryptedOnNas } from '../helpers/transfer.js';

// OffsiteSync against a real sshd on loopback standing in for the NAS, with real rsync, scp and
// ssh; a real Temporal dev server runs the workflow.

const stack = useStack({ sshd: true });

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A validated-looking local dump: gzip bytes and their .sha256, as NightlyDbBackup leaves them. */
async function localDump(dir: string, stamp: string, size = 200_000): Promise<{ name: string; body: Buffer }> {
  const name = `immich_${stamp}.sql.gz`;
  const body = gzipSync(Buffer.from(Array.from({ length: size }, (_, i) => String.fromCharCode(32 + ((i * 7919 + stamp.length) % 95))).join('')));
  await writeFile(join(dir, name), body, { mode: 0o600 });
  await writeFile(join(dir, `${name}.sha256`), `${sha(body)}  ${name}\n`, { mode: 0o600 });
  await tagWithTestKey(dir, name, sha(body));
  return { name, body };
}

/** What the NAS holds for one dump uploaded by this version: the ciphertext, its checksum (last) and the tag. */
const encrypted = (name: string) => [`${name}.age`, `${name}.age.sha256`, `${name}.hmac`];

async function setup(extra: Record<string, unknown> = {}, remoteDir?: string) {
  const local = await tempDir('offsite-local');
  const remote = remoteDir ?? join(await tempDir('offsite-nas'), 'volume1', 'backups', 'immich', 'postgres');
  const config = testConfig({ backupDir: local, extra: { offsite: { ...stack.sshd.offsite, remoteDir: remote, retryWindowMinutes: 0.25, ...extra } } });
  return { local, remote, config, keyFile: config.security.keyFile, run: (during?: (id: string) => Promise<void>) => runWorkflow<OffsiteSyncReport>(stack.client, stack.temporal.address, config, 'OffsiteSync', during) };
}

describe('OffsiteSync', () => {
  test('copies only the dumps the NAS lacks, verified there; a second run copies nothing and says so', async () => {
    const { local, remote, run, keyFile } = await setup();
    const dumps = [await localDump(local, '20261120_030000'), await localDump(local, '20261121_030000'), await localDump(local, '20261122_030000')];
    await mkdir(remote, { recursive: true });
    // The NAS already has the first one (encrypted: its ciphertext and the checksum written last).
    await writeFile(join(remote, `${dumps[0]!.name}.age`), 'ciphertext');
    await writeFile(join(remote, `${dumps[0]!.name}.age.sha256`), `${sha(Buffer.from('ciphertext'))}  ${dumps[0]!.name}.age\n`);
    // A file the NAS holds that is not ours, and a local dump that never validated (no .sha256).
    await writeFile(join(remote, 'notes.txt'), 'keep');
    await writeFile(join(local, 'immich_20261123_030000.sql.gz'), 'unvalidated');

    const first = await run();
    assert.equal(first.error, undefined, String(first.error));
    assert.deepEqual(first.report!.copied, [dumps[2]!.name, dumps[1]!.name], 'newest first');
    assert.equal(first.report!.alreadyOffsite, 1);
    // What went over the wire: the ciphertexts (age adds a header and 16 bytes per 64 KiB).
    const cipherBytes = (await stat(join(remote, `${dumps[1]!.name}.age`))).size + (await stat(join(remote, `${dumps[2]!.name}.age`))).size;
    assert.equal(first.report!.bytesCopied, cipherBytes);
    assert.ok(cipherBytes > dumps[1]!.body.length + dumps[2]!.body.length);
    // The first came without a tag (copied there by hand): left as it is; the two uploaded carry theirs.
    const names = [`${dumps[0]!.name}.age`, `${dumps[0]!.name}.age.sha256`, ...dumps.slice(1).flatMap((d) => encrypted(d.name))];
    assert.deepEqual(await listDir(remote), [...names, 'keyring', 'notes.txt'].sort());
    for (const d of dumps.slice(1)) {
      assert.deepEqual(await decryptedOnNas(remote, d.name, keyFile), d.body, 'decrypts to the dump');
      assert.equal(sha(await readFile(join(remote, `${d.name}.age`))), (await readFile(join(remote, `${d.name}.age.sha256`), 'utf8')).split(' ')[0]);
      assert.equal((await stat(join(remote, `${d.name}.age`))).mode & 0o777, 0o600, 'owner-only on the NAS too');
    }

    const second = await run();
    assert.equal(second.error, undefined);
    assert.deepEqual(second.report!.copied, []);
    assert.match(second.report!.message, /^nothing to copy: .* already has all 3 local dump\(s\)$/);
  });

  test('scp works for NAS units without rsync, with the same temporary-name discipline', async () => {
    const { local, remote, run, keyFile } = await setup({ method: 'scp' });
    const dump = await localDump(local, '20261124_030000');
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.method, 'scp');
    assert.deepEqual(await listDir(remote), [...encrypted(dump.name), 'keyring'].sort());
    assert.deepEqual(await decryptedOnNas(remote, dump.name, keyFile), dump.body);
  });

  test('a corrupted copy on the NAS is caught by its sha256 there, removed, and sent again', async () => {
    const { local, remote, run, keyFile } = await setup();
    const dump = await localDump(local, '20261125_030000');
    // A leftover partial upload of the right size and time but wrong bytes: rsync's quick check
    // takes it as done, so only the checksum computed on the NAS can tell. (A ciphertext's size
    // follows from the dump's; it carries the dump's time.)
    await mkdir(remote, { recursive: true });
    const anyRecipient = /^# public key: (age1\S+)$/m.exec((await execa('age-keygen')).stdout)![1]!;
    const cipherSize = (await execa('age', ['-e', '-r', anyRecipient, join(local, dump.name)], { encoding: 'buffer' })).stdout.length;
    const partial = join(remote, `.${dump.name}.age.partial`);
    await writeFile(partial, Buffer.alloc(cipherSize, 0x55));
    const { mtime } = await stat(join(local, dump.name));
    await utimes(partial, mtime, mtime);

    const { report, error, workflowId } = await run();
    assert.equal(error, undefined, String(error));
    assert.deepEqual(report!.copied, [dump.name]);
    assert.deepEqual(await decryptedOnNas(remote, dump.name, keyFile), dump.body);
    assert.ok((await activityAttempts(stack.client, workflowId)).includes(2), 'the upload was retried after the mismatch');
    assert.deepEqual(await listDir(remote), [...encrypted(dump.name), 'keyring'].sort());
  });

  test('an unreachable NAS is retried for the window, then fails in one line; nothing lands under a final name', async () => {
    const { local, remote, run } = await setup({ retryWindowMinutes: 0.2 });
    await localDump(local, '20261126_030000');
    await stack.sshd.stop();
    try {
      const started = Date.now();
      const { error } = await run();
      assert.ok(error instanceof WorkflowFailedError);
      const failure = error.cause;
      assert.ok(failure instanceof ApplicationFailure);
      assert.equal(failure.type, 'NasUnreachableError');
      assert.match(failure.message, /^the NAS .*127\.0\.0\.1:\d+:.* is unreachable: .*Connection refused.* \(retried for \d+ s\)$/);
      assert.doesNotMatch(failure.message, /\n/);
      assert.ok(Date.now() - started >= 5_000, 'it waited and retried before giving up');
      assert.deepEqual(await listDir(remote).catch(() => []), []);
    } finally {
      await stack.sshd.start();
    }
  });

  test('a NAS that comes back within the window gets the dumps', async () => {
    const { local, remote, run } = await setup({ retryWindowMinutes: 2 });
    const dump = await localDump(local, '20261126_040000');
    await stack.sshd.stop();
    const { report, error } = await run(async (id) => {
      // The wait is visible, with its reason and its deadline.
      const step = await stepReached(stack.client.workflow.getHandle(id), (s) => s.startsWith('waiting for the NAS'), 30_000);
      assert.match(step, /^waiting for the NAS: the NAS \S+ is unreachable: .*Connection refused.*; next try at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, gives up at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      await stack.sshd.start();
    });
    assert.equal(error, undefined, String(error));
    assert.deepEqual(report!.copied, [dump.name]);
    assert.deepEqual(await listDir(remote), [...encrypted(dump.name), 'keyring'].sort());
  });

  test('an unknown host key is refused at once: ssh never prompts and never trusts it', async () => {
    const empty = join(await tempDir('known-hosts'), 'known_hosts');
    await writeFile(empty, '');
    const { local, remote, run } = await setup({ knownHostsFile: empty });
    await localDump(local, '20261126_050000');
    const { error } = await run();
    assert.ok(error instanceof WorkflowFailedError);
    const failure = (error.cause as { cause?: unknown }).cause;
    assert.ok(failure instanceof ApplicationFailure);
    assert.equal(failure.type, 'HostKeyVerificationError');
    await recordFault('check: ssh with an unknown NAS host key', 'BatchMode ssh never prompted; refused at once (HostKeyVerificationError, not retried); nothing copied');
    assert.deepEqual(await listDir(remote).catch(() => []), []);
  });

  test('remote retention, when configured, prunes old NAS dumps but never the newest backup.keepMin (3)', async () => {
    const { local, remote, run } = await setup({ retentionDays: 7 });
    await mkdir(remote, { recursive: true });
    const old = ['immich_20200101_030000.sql.gz', 'immich_20200102_030000.sql.gz'];
    // Just as expired, but among the newest three there: kept.
    const kept = ['immich_20200103_030000.sql.gz', 'immich_20200104_030000.sql.gz'];
    for (const name of [...old, ...kept]) {
      await writeFile(join(remote, name), 'old');
      await writeFile(join(remote, `${name}.sha256`), 'x');
    }
    // An old encrypted one: every file of it goes, its checksum first.
    const oldEncrypted = 'immich_20200101_040000.sql.gz';
    for (const f of [...encrypted(oldEncrypted), `${oldEncrypted}.rows.json.age`]) await writeFile(join(remote, f), 'old');
    const fresh = await localDump(local, '20261126_060000');
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.deepEqual(report!.prunedRemote.sort(), [...old, oldEncrypted].sort());
    assert.deepEqual(await listDir(remote), [...kept.flatMap((n) => [n, `${n}.sha256`]), ...encrypted(fresh.name), 'keyring'].sort());
  });
  test('a new host prunes none of the dumps a former host (another key) left on the NAS, however old: its own do not push them out', async () => {
    const { local, remote, run } = await setup({ retentionDays: 7 });
    await mkdir(remote, { recursive: true });
    // The former host's dumps, older than offsite.retentionDays: the only copies of its data until `recover`.
    const former = ['20200101', '20200102', '20200103', '20200104', '20200105'].map((d) => `immich_${d}_030000.sql.gz`);
    for (const name of former) {
      for (const f of [`${name}.age`, `${name}.age.sha256`]) await writeFile(join(remote, f), 'old');
      await writeFile(join(remote, `${name}.hmac`), `key 0123456789abcdef\ndump ${'1'.repeat(64)}\n`);
    }
    // This host's own dumps, enough to fill backup.keepMin (3) on their own.
    const own = [await localDump(local, '20261124_060000'), await localDump(local, '20261125_060000'), await localDump(local, '20261126_060000')];
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.deepEqual(report!.prunedRemote, []);
    assert.deepEqual(await listDir(remote), [...former.flatMap(encrypted), ...own.flatMap((d) => encrypted(d.name)), 'keyring'].sort());
  });

  test('finding 11: one damaged older dump is moved into rejected/ with an alarm, and the newer ones are still copied, newest first', async () => {
    const { local, remote, run } = await setup();
    const [oldest, middle, newest] = [await localDump(local, '20261101_030000'), await localDump(local, '20261102_030000'), await localDump(local, '20261103_030000')];
    // The oldest dump's bytes change after validation wrote its .sha256 (a bad sector, a stray write).
    const damaged = Buffer.from(oldest.body);
    damaged[100] = damaged[100]! ^ 0xff;
    await writeFile(join(local, oldest.name), damaged);
    const { report, error, workflowId } = await run();
    assert.equal(error, undefined, String(error));
    assert.deepEqual(report!.copied, [newest.name, middle.name], 'newest first');
    assert.deepEqual(report!.rejected.map((r) => r.file), [oldest.name]);
    assert.match(report!.rejected[0]!.reason, new RegExp(`^local dump ${oldest.name.replace(/\./g, '\\.')} has sha256 [0-9a-f]{64}, but its .*\\.sha256 records ${sha(oldest.body)}: damaged after validation, not uploaded: moved to .*/rejected$`));
    assert.match(report!.message, new RegExp(`^copied 2 dump\\(s\\) to .*; ALARM: 1 local dump\\(s\\) damaged since validation, not copied, moved to rejected/: ${oldest.name.replace(/\./g, '\\.')}$`));
    assert.deepEqual(await listDir(join(local, 'rejected')), [oldest.name, `${oldest.name}.hmac`, `${oldest.name}.sha256`]);
    assert.equal(existsSync(join(local, oldest.name)), false);
    assert.deepEqual(await listDir(remote), [...[middle, newest].flatMap((d) => encrypted(d.name)), 'keyring'].sort());
    // Upload order in the history: the newest dump's upload was scheduled first.
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    const uploads = (history.events ?? []).flatMap((e) => {
      const a = e.activityTaskScheduledEventAttributes;
      return a?.activityType?.name === 'uploadDump' ? [JSON.parse(Buffer.from(a.input!.payloads![0]!.data!).toString('utf8')).file as string] : [];
    });
    assert.deepEqual(uploads, [newest.name, middle.name, oldest.name]);
    await recordFault('a local dump damaged after validation, older than two good ones', 'moved into rejected/ with an error-level alarm, listed in the OffsiteSync report and its notification; the two newer dumps copied, newest first');
  });

  test('finding 11: NAS pruning keeps the newest backup.keepMin dumps there whatever the clock says', async () => {
    const { remote, config } = await setup({ retentionDays: 7 });
    await mkdir(remote, { recursive: true });
    const names = ['20261101', '20261102', '20261103', '20261104', '20261105'].map((d) => `immich_${d}_030000.sql.gz`);
    for (const name of names) {
      await writeFile(join(remote, name), 'dump');
      await writeFile(join(remote, `${name}.sha256`), 'x');
    }
    const activities = createActivities({ config, logger: createLogger({ level: 'fatal', fd: 2 }) });
    const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR', () => undefined) });
    // A clock that jumped 74 years ahead: every dump there looks expired.
    const result = (await env.run(() => activities.pruneRemoteDumps({ nowMs: Date.parse('2100-01-01T00:00:00Z') }))) as PruneResult;
    assert.equal(config.backup.keepMin, 3);
    assert.deepEqual(result.pruned.sort(), names.slice(0, 2));
    assert.deepEqual(result.kept, names.slice(2).reverse());
    assert.deepEqual(await listDir(remote), names.slice(2).flatMap((n) => [n, `${n}.sha256`]).sort());
    await recordFault('clock jumped 74 years ahead before NAS pruning', 'the newest backup.keepMin (3) dumps on the NAS kept; only older ones pruned');
  });
});
