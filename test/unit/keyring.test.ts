import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { privateCopyDir, trustedSetup } from '../../adapters/dump-store/index.js';
import { keyId, keyringPaths, openKeyring } from '../../adapters/dump-store/keyring.js';
import { changeRecoveryCode, confirmRecoveryCode, ensureRecovery, envelopeForNas, normalizeCode, parseEnvelope, planEnvelopes, recoverKeyring, recoveryStatus, rotateKeys, unwrap } from '../../adapters/dump-store/recovery.js';
import { tagDump, verifyDumpTag } from '../../adapters/dump-store/tags.js';
import { parseConfig } from '../../config/config.js';
import { RecoveryCodeError, UnauthenticatedDumpError } from '../../core/errors.js';
import { rawTestConfig } from '../helpers/setup.js';

// The keyring and the recovery code at the adapter that makes them: real age-keygen and age, real
// files with their modes; no worker, no Temporal.

const keyDir = async () => join(await mkdtemp(join(tmpdir(), 'immich-backup-keyring-')), 'config', 'key');
const envelopeOf = async (keyFile: string) => {
  const text = await readFile(keyringPaths(keyFile).wrapped, 'utf8');
  return { name: 'keyring-x.json', text, envelope: parseEnvelope(text, 'the envelope') };
};

/** The keyring as a new process reads it (a restart): its current key and its retired ones. */
async function openInNewProcess(keyFile: string): Promise<{ current: string; retired: string[] }> {
  const module = new URL('../../adapters/dump-store/keyring.js', import.meta.url).href;
  const script = `const { openKeyring } = await import(${JSON.stringify(module)}); const r = await openKeyring(process.argv[1]); console.log(JSON.stringify({ current: r.current.id, retired: r.all.filter((k) => k.retired).map((k) => k.id) }));`;
  return JSON.parse((await execa('node', ['--input-type=module', '-e', script, keyFile])).stdout) as { current: string; retired: string[] };
}

describe('the keyring', () => {
  test('the first start makes the key, an age identity and the keyring, owner-only; a second open reads the same', async () => {
    const keyFile = await keyDir();
    const ring = await openKeyring(keyFile, { create: true });
    assert.equal(ring.current.id, keyId(Buffer.from((await readFile(keyFile, 'utf8')).trim(), 'hex')));
    assert.match(ring.entry.ageRecipient, /^age1/);
    for (const path of [keyFile, keyringPaths(keyFile).ring, keyringPaths(keyFile).identities]) assert.equal((await stat(path)).mode & 0o777, 0o600, path);
    assert.equal((await openKeyring(keyFile)).current.id, ring.current.id);
  });

  test('a key file from before keyrings keeps its key: the keyring grows around it, and dumps it tagged still verify', async () => {
    const keyFile = await keyDir();
    const old = Buffer.alloc(32, 7);
    await execa('mkdir', ['-p', '-m', '700', join(keyFile, '..')]);
    await writeFile(keyFile, `${old.toString('hex')}\n`, { mode: 0o600 });
    const dir = await mkdtemp(join(tmpdir(), 'immich-backup-dumps-'));
    await tagDump(old, dir, 'immich_20261201_030000.sql.gz', 'a'.repeat(64));
    const ring = await openKeyring(keyFile);
    assert.equal(ring.current.id, keyId(old));
    await verifyDumpTag(ring, dir, 'immich_20261201_030000.sql.gz', 'a'.repeat(64));
  });

  test('a key file put back by hand becomes current; the key before is retired, and it is put back from the keyring when deleted', async () => {
    const keyFile = await keyDir();
    const first = await openKeyring(keyFile, { create: true });
    const other = Buffer.alloc(32, 9);
    await writeFile(keyFile, `${other.toString('hex')}\n`, { mode: 0o600 });
    // A running process keeps what it read (as before keyrings); a restart reads the file anew.
    assert.equal((await openKeyring(keyFile)).current.id, first.current.id);
    const ring = await openInNewProcess(keyFile);
    assert.equal(ring.current, keyId(other));
    assert.ok(ring.retired.includes(first.current.id), 'the earlier key is kept, retired');
    await rm(keyFile);
    assert.equal((await openInNewProcess(keyFile)).current, keyId(other));
    assert.equal((await readFile(keyFile, 'utf8')).trim(), other.toString('hex'));
  });
});

describe('a rotation cut short', () => {
  test('a key file still holding the key a rotation retired (stopped between the keyring and the key file) follows the keyring: the retired key never comes back', async () => {
    const keyFile = await keyDir();
    const before = await openKeyring(keyFile, { create: true });
    await ensureRecovery(keyFile);
    const { current } = await rotateKeys(keyFile, []);
    await writeFile(keyFile, `${before.entry.tagKey}\n`, { mode: 0o600 });
    const ring = await openInNewProcess(keyFile);
    assert.equal(ring.current, current);
    assert.deepEqual(ring.retired, [before.current.id]);
    assert.equal(keyId(Buffer.from((await readFile(keyFile, 'utf8')).trim(), 'hex')), current);
  });
});

describe('the recovery code', () => {
  test('made with the keyring, shown until typed back; a wrong code confirms nothing; the right one is then no longer kept', async () => {
    const keyFile = await keyDir();
    await openKeyring(keyFile, { create: true });
    const made = await ensureRecovery(keyFile);
    assert.equal(made.made, true);
    assert.equal(made.confirmed, false);
    assert.match(made.code!, /^([0-9A-HJKMNP-TV-Z]{4}-){5}[0-9A-HJKMNP-TV-Z]{4}$/);
    await assert.rejects(confirmRecoveryCode(keyFile, 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA'), RecoveryCodeError);
    assert.equal((await recoveryStatus(keyFile))!.confirmed, false);
    // Typed as a person types it: lower case, spaces, O for 0.
    await confirmRecoveryCode(keyFile, made.code!.toLowerCase().replace(/-/g, ' ').replace(/0/g, 'o'));
    assert.deepEqual(await recoveryStatus(keyFile), { confirmed: true, created: made.created });
    await assert.rejects(stat(keyringPaths(keyFile).code), { code: 'ENOENT' });
    assert.throws(() => normalizeCode('7KQ2-M9XD'), /24 letters and digits/);
    assert.throws(() => normalizeCode('7KQ2-M9XD-7KQ2-M9XD-7KQ2-M9X!'), /"!" is not one of them/);
  });

  test('the envelope opens with the code and holds every key; a changed code re-wraps it: the old code no longer opens it', async () => {
    const keyFile = await keyDir();
    const ring = await openKeyring(keyFile, { create: true });
    const { code } = await ensureRecovery(keyFile);
    const first = await envelopeOf(keyFile);
    assert.deepEqual(first.envelope.ids, [ring.current.id]);
    assert.ok(!first.text.includes(ring.entry.tagKey) && !first.text.includes(ring.entry.ageIdentity), 'no key in the clear');
    assert.equal((await unwrap(first.envelope, code!, 'it')).keys[0]!.tagKey, ring.entry.tagKey);
    const next = await changeRecoveryCode(keyFile);
    const second = await envelopeOf(keyFile);
    await assert.rejects(unwrap(second.envelope, code!, 'it'), RecoveryCodeError);
    assert.equal((await unwrap(second.envelope, next, 'it')).current, ring.current.id);
    // One byte of the sealed keyring changed: refused, as a wrong code is.
    const altered = { ...second.envelope, data: Buffer.from(Buffer.from(second.envelope.data, 'base64').map((b, i) => (i === 5 ? b ^ 1 : b))).toString('base64') };
    await assert.rejects(unwrap(altered, next, 'it'), RecoveryCodeError);
  });

  test('a rotation retires the old key: what it tagged before still verifies, a dump named after the rotation does not; the envelope follows', async () => {
    const keyFile = await keyDir();
    const before = await openKeyring(keyFile, { create: true });
    const { code } = await ensureRecovery(keyFile);
    const dir = await mkdtemp(join(tmpdir(), 'immich-backup-dumps-'));
    const sha = 'b'.repeat(64);
    await tagDump(before, dir, 'immich_20260101_030000.sql.gz', sha);
    await tagDump(before, dir, 'immich_20991231_030000.sql.gz', sha);
    // What the old key had made: the first dump's tag (the second, named in the future, it never made before the rotation).
    const made = /^dump ([0-9a-f]{64})$/m.exec(await readFile(join(dir, 'immich_20260101_030000.sql.gz.hmac'), 'utf8'))![1]!;
    const { retired, current, code: next } = await rotateKeys(keyFile, [made]);
    assert.notEqual(next, code, 'a rotation makes a new recovery code');
    assert.equal(retired, before.current.id);
    const after = await openKeyring(keyFile);
    assert.equal(after.current.id, current);
    assert.equal(keyId(Buffer.from((await readFile(keyFile, 'utf8')).trim(), 'hex')), current, 'the key file holds the new key');
    await verifyDumpTag(after, dir, 'immich_20260101_030000.sql.gz', sha);
    await assert.rejects(verifyDumpTag(after, dir, 'immich_20991231_030000.sql.gz', sha), (err: Error) => err instanceof UnauthenticatedDumpError && err.message.includes(`retired on`) && err.message.includes(retired));
    // Whoever holds the leaked old key forges a dump under an OLD name: a retired key vouches for nothing new.
    await tagDump(before, dir, 'immich_20250101_030000.sql.gz', 'd'.repeat(64));
    await assert.rejects(verifyDumpTag(after, dir, 'immich_20250101_030000.sql.gz', 'd'.repeat(64)), /not one of the dumps it had made by then/);
    const { envelope } = await envelopeOf(keyFile);
    assert.deepEqual(envelope.ids, [retired, current]);
    await assert.rejects(unwrap(envelope, code!, 'it'), RecoveryCodeError, 'the old code no longer opens the new keyring');
    assert.equal((await unwrap(envelope, next, 'it')).current, current);
    // The identities file decrypts what either key encrypted.
    const plain = join(dir, 'plain');
    await writeFile(plain, 'hello');
    for (const k of after.file.keys) {
      await execa('age', ['-r', k.ageRecipient, '-o', `${plain}.${k.id}.age`, plain]);
      assert.equal((await execa('age', ['-d', '-i', after.identitiesFile, `${plain}.${k.id}.age`])).stdout, 'hello');
    }
  });

  test('a new host gets the keys back from the envelope and the code alone; a wrong code writes nothing', async () => {
    const oldHost = await keyDir();
    const ring = await openKeyring(oldHost, { create: true });
    const { code } = await ensureRecovery(oldHost);
    const envelope = await envelopeOf(oldHost);
    const newHost = await keyDir();
    await assert.rejects(recoverKeyring(newHost, [envelope], 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA'), (err: Error) => err instanceof RecoveryCodeError && /nothing was changed/.test(err.message));
    await assert.rejects(stat(newHost), { code: 'ENOENT' });
    await assert.rejects(recoverKeyring(newHost, [], code!), /holds no keyring/);
    const recovered = await recoverKeyring(newHost, [envelope], code!);
    assert.equal(recovered.ring.current.id, ring.current.id);
    assert.equal((await readFile(newHost, 'utf8')).trim(), ring.entry.tagKey);
    assert.equal(recovered.ring.resticPassword, ring.resticPassword);
    assert.equal((await recoveryStatus(newHost))!.confirmed, true, 'the code just typed is confirmed');
    assert.equal((await stat(join(newHost, '..'))).mode & 0o777, 0o700);
  });

  test('a tag made with a key this host does not hold names both fingerprints and says what to do', async () => {
    const keyFile = await keyDir();
    const ring = await openKeyring(keyFile, { create: true });
    const dir = await mkdtemp(join(tmpdir(), 'immich-backup-dumps-'));
    const foreign = Buffer.alloc(32, 3);
    await tagDump(foreign, dir, 'immich_20261201_030000.sql.gz', 'c'.repeat(64));
    await assert.rejects(verifyDumpTag(ring, dir, 'immich_20261201_030000.sql.gz', 'c'.repeat(64)), (err: Error) =>
      err.message.includes(`tagged with key ${keyId(foreign)}`) && err.message.includes(`${ring.current.id} (current)`) && err.message.includes('immich-backup recover') && err.message.includes('immich-backup adopt'));
    // A tag from before fingerprints (no key line) still verifies with the key that made it.
    const tag = await readFile(join(dir, 'immich_20261201_030000.sql.gz.hmac'), 'utf8');
    await writeFile(join(dir, 'immich_20261201_030000.sql.gz.hmac'), tag.replace(/^key .*\n/m, ''));
    await verifyDumpTag(foreign, dir, 'immich_20261201_030000.sql.gz', 'c'.repeat(64));
  });
});

describe("the worker's start", () => {
  test('removes what a killed worker left beside the key (a fetched NAS copy, a sealed upload) once it is hours old, never a younger one', async () => {
    const root = await mkdtemp(join(tmpdir(), 'immich-backup-sweep-'));
    const config = parseConfig(rawTestConfig({ backupDir: join(root, 'dumps') }));
    await trustedSetup(config);
    const loading = privateCopyDir(config.security.keyFile);
    for (const name of ['nas-AAAAAA', 'upload-BBBBBB', 'nas-CCCCCC', 'other-DDDDDD']) {
      await mkdir(join(loading, name), { recursive: true });
      await writeFile(join(loading, name, 'immich_20261201_030000.sql.gz'), 'decrypted');
    }
    const hoursAgo = new Date(Date.now() - 7 * 3_600_000);
    for (const name of ['nas-AAAAAA', 'upload-BBBBBB', 'other-DDDDDD']) await utimes(join(loading, name), hoursAgo, hoursAgo);
    await trustedSetup(config);
    assert.deepEqual((await readdir(loading)).sort(), ['nas-CCCCCC', 'other-DDDDDD']);
  });
});

describe('the keyrings on the NAS', () => {
  const remoteOf = async (keyFile: string) => {
    const { name, text } = await envelopeForNas(keyFile);
    return { name, text };
  };

  test("a host that lost its keyring (the key file put back alone) never replaces the NAS envelope holding the old identities", async () => {
    const keyFile = await keyDir();
    await openKeyring(keyFile, { create: true });
    await ensureRecovery(keyFile);
    const onNas = await remoteOf(keyFile);
    assert.match(onNas.name, /^keyring-[0-9a-f]{16}-[0-9a-f]{8}\.json$/);
    assert.deepEqual(await planEnvelopes(keyFile, [onNas]), { remove: [] }, 'nothing to do when the NAS has it as it is');
    // The keyring is lost; the key file and the recovery state are still there: a new keyring grows
    // around the old tag key, with a NEW age identity and library password.
    await rm(keyringPaths(keyFile).ring);
    const plan = await planEnvelopesInNewProcess(keyFile, [onNas]);
    assert.match(plan.conflict ?? '', /holds keys this host does not .*immich-backup recover/);
  });

  test("a new code's envelope goes beside the old one; the old one goes only once the new code is confirmed; another host's is never touched", async () => {
    const keyFile = await keyDir();
    await openKeyring(keyFile, { create: true });
    const { code } = await ensureRecovery(keyFile);
    await confirmRecoveryCode(keyFile, code!);
    const old = await remoteOf(keyFile);
    const otherHost = await keyDir();
    await openKeyring(otherHost, { create: true });
    const foreign = await remoteOf(otherHost);
    const next = await changeRecoveryCode(keyFile);
    const pending = await planEnvelopes(keyFile, [old, foreign]);
    assert.notEqual(pending.upload?.name, old.name);
    assert.deepEqual(pending.remove, [], 'the confirmed code\'s envelope stays while the new code is unconfirmed');
    await confirmRecoveryCode(keyFile, next);
    const confirmed = await planEnvelopes(keyFile, [old, foreign, pending.upload!]);
    assert.deepEqual(confirmed, { remove: [old.name] });
  });
});

/** planEnvelopes as a restarted worker runs it (a fresh process reads the keyring anew). */
async function planEnvelopesInNewProcess(keyFile: string, remote: Array<{ name: string; text: string }>): Promise<{ conflict?: string }> {
  const module = new URL('../../adapters/dump-store/recovery.js', import.meta.url).href;
  const script = `const { planEnvelopes } = await import(${JSON.stringify(module)}); const p = await planEnvelopes(process.argv[1], JSON.parse(process.argv[2])); console.log(JSON.stringify(p));`;
  return JSON.parse((await execa('node', ['--input-type=module', '-e', script, keyFile, JSON.stringify(remote)])).stdout) as { conflict?: string };
}
