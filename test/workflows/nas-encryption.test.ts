import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createActivities } from '../../activities/index.js';
import { privateCopyDir } from '../../adapters/dump-store/private-copy.js';
import { createLogger } from '../../config/logger.js';
import type { OffsitePlan } from '../../core/types.js';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { keyId, openDumpStore, openKeyring } from '../../adapters/dump-store/index.js';
import { makeCurrent, replaceKeyring } from '../../adapters/dump-store/keyring.js';
import { envelopeForNas, parseEnvelope, recoveryStatus, unwrap } from '../../adapters/dump-store/recovery.js';
import type { OffsiteSyncReport } from '../../workflows/index.js';
import { failureType, useRestoreStack } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { mountTmpfs } from '../helpers/library.js';
import { listDir } from '../helpers/setup.js';

// What goes to the NAS for the database is encrypted on the host (age) and authenticated (the
// tag), and what comes back is decrypted and verified: real pg_dumpall, a real sshd as the NAS,
// real age, a real Temporal dev server running NightlyDbBackup, OffsiteSync and RestoreDatabase.

const stack = useRestoreStack(50);
const { world } = stack;

type World = Awaited<ReturnType<typeof world>>;

const offsiteSync = async (w: World) => {
  const { report, error } = await runWorkflow<OffsiteSyncReport>(stack.client, stack.temporal.address, w.config, 'OffsiteSync');
  assert.equal(error, undefined, String(error));
  return report!;
};

/** Every regular file under `dir`, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(path)));
    else if (e.isFile()) out.push(path);
  }
  return out;
}

/** The bytes of a file, and what they decompress to when they are gzip. */
async function readable(path: string): Promise<Buffer[]> {
  const bytes = await readFile(path);
  try {
    return [bytes, gunzipSync(bytes)];
  } catch {
    return [bytes];
  }
}

const nasFilesOf = (file: string) => [`${file}.age`, `${file}.age.sha256`, `${file}.hmac`, `${file}.rows.json.age`];

describe('NAS copies of the database are encrypted and verified', () => {
  test('the NAS holds no plaintext: no table name, no e-mail address in any file there, decompressed or not', async () => {
    const w = await world();
    const email = `nas-secret-${randomBytes(4).toString('hex')}@family.example`;
    await stack.pg.psql(`INSERT INTO users SELECT md5('${email}')::uuid, '${email}', 'Secret', now();`, 'immich');
    const dump = await w.backup();
    // The control: the local dump holds both, so a NAS copy of it in the clear would too.
    const local = Buffer.concat(await readable(dump.path)).toString('latin1');
    assert.ok(local.includes(email) && local.includes('asset_faces'));
    const report = await offsiteSync(w);
    assert.deepEqual(report.copied, [dump.file]);
    const nas = w.config.offsite.remoteDir;
    assert.deepEqual((await listDir(nas)).filter((f) => f !== 'keyring'), nasFilesOf(dump.file).sort());
    const files = await filesUnder(nas);
    assert.ok(files.length >= 5, files.join(', '));
    for (const path of files) {
      for (const bytes of await readable(path)) {
        const text = bytes.toString('latin1');
        for (const secret of [email, 'asset_faces', 'smart_search', 'CREATE TABLE', 'COPY public.']) assert.ok(!text.includes(secret), `${path} contains ${secret}`);
      }
    }
  });

  test('a NAS copy whose ciphertext was altered (one byte) is refused at import, clearly; nothing changes', async () => {
    const w = await world();
    const dump = await w.backup();
    await offsiteSync(w);
    const nas = w.config.offsite.remoteDir;
    for (const f of [dump.file, `${dump.file}.sha256`, `${dump.file}.hmac`, `${dump.file}.rows.json`]) await rm(join(w.backupDir, f));
    const before = await listDir(w.backupDir);
    const cipher = join(nas, `${dump.file}.age`);
    const good = await readFile(cipher);
    const bad = Buffer.from(good);
    bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 0x01;
    await writeFile(cipher, bad);
    const altered = await w.restore({ dump: dump.file, from: 'offsite', dryRun: true });
    assert.equal(failureType(altered.error).type, 'ChecksumMismatchError');
    assert.match(failureType(altered.error).message, new RegExp(`^the NAS copy of ${dump.file.replace(/\./g, '\\.')} \\(\\S+\\.age\\) has sha256 [0-9a-f]{64}, but its \\S+\\.age\\.sha256 records [0-9a-f]{64}: altered or damaged on the NAS; not restoring it; nothing was changed$`));
    assert.deepEqual(await listDir(w.backupDir), before, 'nothing fetched into the staging dir');
    // Altered with a matching .age.sha256 (whoever can write the NAS can write both): age refuses the chunk.
    await writeFile(join(nas, `${dump.file}.age.sha256`), `${createHash('sha256').update(bad).digest('hex')}  ${dump.file}.age\n`);
    const forged = await w.restore({ dump: dump.file, from: 'offsite', dryRun: true });
    assert.equal(failureType(forged.error).type, 'UnauthenticatedDumpError');
    assert.match(failureType(forged.error).message, /^the NAS copy of \S+ does not decrypt \(age failed .*\): altered or damaged where it was kept; not restoring it; nothing was changed$/);
    assert.deepEqual(await listDir(w.backupDir), before);
    assert.deepEqual(await listDir(join(w.config.security.keyFile, '..', 'loading')).catch(() => []), [], 'no fetched copy left in the private folder');
  });

  test('a NAS copy tagged with another key: refused naming both fingerprints and what to do; `dumps` offers recover, not a restore', async () => {
    const mine = await world();
    const dump = await mine.backup();
    await offsiteSync(mine);
    // Another host (its own key) looks at the same NAS copies.
    const other = await world();
    const theirs = (await openKeyring(other.config.security.keyFile, { create: true })).current.id;
    const ours = (await openKeyring(mine.config.security.keyFile)).current.id;
    await mkdir(other.config.offsite.remoteDir, { recursive: true });
    for (const f of nasFilesOf(dump.file)) await copyFile(join(mine.config.offsite.remoteDir, f), join(other.config.offsite.remoteDir, f));
    const refused = await other.restore({ dump: dump.file, from: 'offsite', dryRun: true });
    assert.equal(failureType(refused.error).type, 'UnauthenticatedDumpError');
    const message = failureType(refused.error).message;
    assert.ok(message.includes(ours) && message.includes(theirs), message);
    assert.match(message, new RegExp(`^dump ${dump.file.replace(/\./g, '\\.')} on the NAS \\S+ was tagged with key ${ours}, which this host does not hold \\(its keys: ${theirs} \\(current\\)\\): put that key back \\(security\\.keyFile\\), recover the keys with the recovery code \\(immich-backup recover\\), or .*adopt --from offsite`));
    const listed = (await openDumpStore(other.config).list()).entries.find((e) => e.origin === 'offsite' && e.file === dump.file)!;
    assert.equal(listed.restore, 'recover');
    assert.ok(listed.verified.includes(ours) && listed.verified.includes(theirs), listed.verified);
    // adopt --from offsite cannot open it either, and says why.
    await assert.rejects(openDumpStore(other.config).adopt(dump.file, undefined, { from: 'offsite' }), (err: Error) => err.name === 'UnauthenticatedDumpError' && /encrypted to a key this host does not hold: .*immich-backup recover/.test(err.message));
    // A plain copy from before encryption, tagged with the other key: offered to adopt, which
    // checks it in full and makes it a local dump of this host's (tagged with its key).
    for (const f of nasFilesOf(dump.file)) await rm(join(other.config.offsite.remoteDir, f));
    for (const f of [dump.file, `${dump.file}.sha256`, `${dump.file}.hmac`]) await copyFile(join(mine.backupDir, f), join(other.config.offsite.remoteDir, f));
    const plain = (await openDumpStore(other.config).list()).entries.find((e) => e.origin === 'offsite' && e.file === dump.file)!;
    assert.equal(plain.restore, `adopt --from offsite ${dump.file}`);
    const adopted = await openDumpStore(other.config).adopt(dump.file, undefined, { from: 'offsite' });
    assert.equal(adopted.sha256, dump.sha256);
    const local = await openDumpStore(other.config).authentic();
    assert.deepEqual(local.dumps, [{ file: dump.file, sha256: dump.sha256 }]);
    // The host that made it lists it as restorable, and restores it.
    const own = (await openDumpStore(mine.config).list()).entries.find((e) => e.origin === 'offsite' && e.file === dump.file)!;
    assert.equal(own.restore, `restore db --dump ${dump.file} --from offsite`);
  });

  test('a plain NAS copy from before encryption still restores; OffsiteSync replaces it by an encrypted one, and keeps a plain one it has no dump for', async () => {
    const w = await world();
    const dump = await w.backup();
    const nas = w.config.offsite.remoteDir;
    await mkdir(nas, { recursive: true });
    for (const f of [dump.file, `${dump.file}.sha256`, `${dump.file}.hmac`]) await copyFile(join(w.backupDir, f), join(nas, f));
    // A plain copy whose local dump is gone: no plaintext to encrypt here.
    const orphan = 'immich_20200101_030000.sql.gz';
    await writeFile(join(nas, orphan), 'old');
    await writeFile(join(nas, `${orphan}.sha256`), `${'0'.repeat(64)}  ${orphan}\n`);
    // The plain copy restores (the local one set aside).
    const aside = join(w.root, 'aside');
    await mkdir(aside);
    for (const f of [dump.file, `${dump.file}.sha256`]) await copyFile(join(w.backupDir, f), join(aside, f)).then(() => rm(join(w.backupDir, f)));
    const restored = await w.restore({ dump: dump.file, from: 'offsite', dryRun: true });
    assert.equal(restored.error, undefined, String(restored.error));
    assert.equal(restored.report!.origin, 'offsite');
    assert.deepEqual(await readFile(join(w.backupDir, dump.file)), await readFile(join(aside, dump.file)));
    // Whoever writes the NAS plants an <X>.age with a matching .age.sha256 (the tag beside them,
    // the plain copy's, names this host's key): the plan neither removes the plain copy for it nor
    // counts it as present; only this run's own verified upload replaces it.
    const planted = randomBytes(4096);
    await writeFile(join(nas, `${dump.file}.age`), planted);
    await writeFile(join(nas, `${dump.file}.age.sha256`), `${createHash('sha256').update(planted).digest('hex')}  ${dump.file}.age\n`);
    const activities = createActivities({ config: w.config, logger: createLogger({ level: 'fatal', fd: 2 }) });
    const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR', () => undefined) });
    const plan = (await env.run(() => activities.planOffsiteSync())) as OffsitePlan;
    assert.deepEqual(plan.toCopy.map((d) => d.file), [dump.file], 'uploaded again: the planted .age is not vouched for');
    for (const f of [dump.file, `${dump.file}.sha256`]) assert.ok(existsSync(join(nas, f)), `${f} kept: the planted .age was not verified by this run`);
    const report = await offsiteSync(w);
    assert.deepEqual(report.copied, [dump.file]);
    assert.deepEqual((await listDir(nas)).filter((f) => f !== 'keyring'), [...nasFilesOf(dump.file), orphan, `${orphan}.sha256`].sort(), 'the plain copy went once the encrypted one was verified; the orphan stays');
    const entry = (await openDumpStore(w.config).list()).entries.find((e) => e.origin === 'offsite' && e.file === orphan)!;
    assert.match(entry.verified, /PLAIN copy from before encryption/);
    // And what is there now restores from the NAS (decrypted, verified) with its row counts.
    for (const f of [dump.file, `${dump.file}.sha256`, `${dump.file}.hmac`, `${dump.file}.rows.json`]) await rm(join(w.backupDir, f));
    const copy = await openDumpStore(w.config).fetchNasCopy(dump.file);
    try {
      assert.equal(copy.encrypted, true);
      assert.deepEqual(await readFile(copy.path), await readFile(join(aside, dump.file)));
      assert.ok(copy.rows && Object.keys(copy.rows.tables).length > 0 && copy.rows.digests);
      assert.equal((await stat(copy.path)).mode & 0o077, 0);
    } finally {
      await copy.dispose();
    }
    assert.equal(await openDumpStore(w.config).newestNasCopy(), dump.file);
  });

  test('a huge file planted on the NAS is never fetched onto the disk: refused by its size first; the drill prefers a copy under a key this host holds', async () => {
    const w = await world();
    const dump = await w.backup();
    await offsiteSync(w);
    const nas = w.config.offsite.remoteDir;
    // Newer than the good copy, tagged with a key this host does not hold, and 1 GiB (sparse): more than the private folder holds.
    const planted = `immich_${new Date().toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15)}.sql.gz`;
    assert.ok(planted > dump.file, planted);
    await writeFile(join(nas, `${planted}.age`), '');
    await truncate(join(nas, `${planted}.age`), 2 ** 30);
    await writeFile(join(nas, `${planted}.age.sha256`), `${'0'.repeat(64)}  ${planted}.age\n`);
    await writeFile(join(nas, `${planted}.hmac`), `key 0123456789abcdef\ndump ${'1'.repeat(64)}\n`);
    const store = openDumpStore(w.config);
    assert.equal(await store.newestNasCopy(), dump.file, 'the drill takes the newest copy under a key this host holds');
    const loading = privateCopyDir(w.config.security.keyFile);
    const tmpfs = await mountTmpfs(loading, '64m');
    try {
      await assert.rejects(store.fetchNasCopy(planted), (err: Error) => {
        assert.equal(err.name, 'NoSpaceError');
        assert.match(err.message, new RegExp(`^refusing to fetch the NAS copy of ${planted.replace(/\./g, '\\.')}: \\S+\\.age on the NAS \\S+ is 1(\\.0)? ?GiB \\(.* needed to fetch and decrypt it\\), but the filesystem of ${loading} has .* free and keeps .* of it: free space there, or check that file on the NAS \\(one this large may be planted or damaged\\); nothing was fetched$`));
        return true;
      });
      assert.deepEqual(await listDir(loading), [], 'nothing fetched into the private folder');
      // A real copy still fits and is fetched there.
      const copy = await store.fetchNasCopy(dump.file);
      await copy.dispose();
      assert.deepEqual(await listDir(loading), []);
    } finally {
      await tmpfs.unmount();
    }
    // With no copy under a key this host holds, the newest is still the drill's (which then fails, as it should).
    for (const f of nasFilesOf(dump.file)) await rm(join(nas, f));
    assert.equal(await store.newestNasCopy(), planted);
  });

  test('the wrapped keyring is on the NAS after OffsiteSync, opens with the recovery code, and is replaced when the keys change', async () => {
    const w = await world();
    await w.backup();
    await offsiteSync(w);
    const keyFile = w.config.security.keyFile;
    const dir = join(w.config.offsite.remoteDir, 'keyring');
    const { name } = await envelopeForNas(keyFile);
    assert.deepEqual(await listDir(dir), [name]);
    const code = (await recoveryStatus(keyFile))!.code!;
    const first = await readFile(join(dir, name), 'utf8');
    const opened = await unwrap(parseEnvelope(first, name), code, name);
    assert.equal(opened.current, (await openKeyring(keyFile)).current.id);
    // A rotation: a new current key, the old one retired; the next OffsiteSync replaces the envelope.
    const ring = await openKeyring(keyFile);
    const next = randomBytes(32);
    await replaceKeyring(keyFile, await makeCurrent(ring.file, next));
    await offsiteSync(w);
    assert.deepEqual(await listDir(dir), [name], 'replaced in place, no temporary file left');
    const second = await readFile(join(dir, name), 'utf8');
    assert.notEqual(second, first);
    const reopened = await unwrap(parseEnvelope(second, name), code, name);
    assert.equal(reopened.current, keyId(next));
    assert.equal(reopened.keys.length, 2);
    // Unchanged keys: the envelope is not uploaded again.
    const { mtimeMs } = await stat(join(dir, name));
    await offsiteSync(w);
    assert.equal((await stat(join(dir, name))).mtimeMs, mtimeMs);
  });
});
