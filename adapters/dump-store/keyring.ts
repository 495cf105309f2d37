import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { stampOfName } from '../../core/dump-names.js';
import { UnsafePathError } from '../../core/errors.js';
import { runCommand } from '../commands/run-command.js';
import { fsyncDir, writeFileAtomic } from '../files/fs-safe.js';
import { ensureKey, forgetKey, readKey, sha256Hex } from './key.js';
import { dirname } from 'node:path';

// Every secret the tool holds, in one keyring beside security.keyFile (`<keyFile>.keyring.json`,
// owner-only): for each key, the tag key (HMAC: which dumps are ours, run authorization) and an age
// identity (what leaves the host is encrypted to its recipient), and one password for the
// library's encrypted NAS repository. One key is current: it tags and encrypts; the others are
// retired (a rotation): they still verify and decrypt what was made before, never anything new.
// security.keyFile itself stays the current tag key, as before, so what reads it alone (the
// CLI's run authorization) needs nothing else. The keyring is recoverable from the recovery code
// (recovery.ts): no secret here exists only on this host.

export const KEYRING_FORMAT = 'immich-backup keyring v1';

export interface KeyEntry {
  /** keyId(tag key): 16 hex digits, the key's fingerprint every tag names. */
  id: string;
  /** The HMAC key, 64 hex digits (what security.keyFile holds while the key is current). */
  tagKey: string;
  /** AGE-SECRET-KEY-1…: decrypts what was encrypted to ageRecipient. */
  ageIdentity: string;
  /** age1…: what leaves the host is encrypted to it (only the current key's). */
  ageRecipient: string;
  created: string;
  /** When a newer key took over: from then on it vouches only for what it made before. */
  retired?: string;
  /** Retired by a rotation: the tags (`dump <hex>`) of the dumps it had made, the only ones it still vouches for. */
  vouches?: string[];
}

export interface KeyringFile {
  format: typeof KEYRING_FORMAT;
  current: string;
  keys: KeyEntry[];
  /** The password of the library's restic repository on the NAS (library.offsite). */
  resticPassword: string;
}

/** One tag key as tags.ts uses it: its fingerprint, its bytes, and when it was retired (if it was). */
export interface TagKey {
  id: string;
  key: Buffer;
  retired?: string;
  vouches?: ReadonlySet<string>;
}

export interface TagKeys {
  current: TagKey;
  all: readonly TagKey[];
}

export interface Keyring extends TagKeys {
  file: KeyringFile;
  /** The current key's entry. */
  entry: KeyEntry;
  /** An owner-only file with every key's age identity (age -d -i FILE): decrypts old and new. */
  identitiesFile: string;
  resticPassword: string;
}

/** A key's fingerprint: never the key itself, safe to print, log and write beside a dump. */
export const keyId = (key: Buffer) => sha256Hex(Buffer.concat([Buffer.from('immich-backup key id\0'), key])).slice(0, 16);

/** The tag keys of a single key (what a bare key file gives, without a keyring). */
export function singleKey(key: Buffer): TagKeys {
  const only = { id: keyId(key), key };
  return { current: only, all: [only] };
}

/**
 * True when `key` may vouch for this dump: the current key always; a key retired by a rotation only
 * for the dumps it had made then (their tags, `dumpTag`), so a leaked old key makes nothing new that
 * verifies, not even under an old name; a key retired otherwise (a recovery's, one replaced by hand)
 * for dumps named (stamped) before its retirement.
 */
export function vouchesFor(key: TagKey, file: string, dumpTag?: string): boolean {
  if (!key.retired) return true;
  if (key.vouches) return dumpTag !== undefined && key.vouches.has(dumpTag);
  const stamp = stampOfName(file)?.getTime();
  return stamp !== undefined && stamp < Date.parse(key.retired);
}

/** Where the keyring's files live: beside the key file, named after it (tests keep many keys in one folder). */
export function keyringPaths(keyFile: string) {
  return {
    keyFile,
    ring: `${keyFile}.keyring.json`,
    identities: `${keyFile}.age-identities`,
    recovery: `${keyFile}.recovery.json`,
    code: `${keyFile}.recovery-code`,
    wrapped: `${keyFile}.keyring.wrapped`,
  };
}

/** A new age identity from age-keygen (the tool that will decrypt with it). */
async function newAgeIdentity(): Promise<{ ageIdentity: string; ageRecipient: string }> {
  // A missing age-keygen is the runner's CommandNotFoundError (it names the package); nothing is written before.
  const { stdout } = await runCommand('age-keygen', [], { label: 'age-keygen', stdin: 'ignore', progress: false });
  const ageIdentity = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(stdout)?.[0];
  const ageRecipient = /^# public key: (age1[0-9a-z]+)$/m.exec(stdout)?.[1];
  if (!ageIdentity || !ageRecipient) throw new UnsafePathError('age-keygen printed no key: is it the age from Debian (1.x)?');
  return { ageIdentity, ageRecipient };
}

/** A keyring entry for a tag key, with a new age identity. */
export async function newEntry(tagKey: Buffer, now = new Date()): Promise<KeyEntry> {
  return { id: keyId(tagKey), tagKey: tagKey.toString('hex'), ...(await newAgeIdentity()), created: now.toISOString() };
}

export function parseRing(text: string, path: string): KeyringFile {
  let file: KeyringFile;
  try {
    file = JSON.parse(text) as KeyringFile;
  } catch {
    throw new UnsafePathError(`keyring ${path} is not JSON: restore it from the recovery code (immich-backup recover)`);
  }
  const hex64 = /^[0-9a-f]{64}$/;
  const ok =
    file?.format === KEYRING_FORMAT &&
    typeof file.resticPassword === 'string' &&
    Array.isArray(file.keys) &&
    file.keys.length > 0 &&
    file.keys.every((k) => hex64.test(k?.tagKey) && k.id === keyId(Buffer.from(k.tagKey, 'hex')) && /^AGE-SECRET-KEY-1[0-9A-Z]+$/.test(k.ageIdentity) && /^age1[0-9a-z]+$/.test(k.ageRecipient) && (k.vouches === undefined || (Array.isArray(k.vouches) && k.vouches.every((v) => hex64.test(v))))) &&
    file.keys.some((k) => k.id === file.current);
  if (!ok) throw new UnsafePathError(`keyring ${path} is not a keyring this tool wrote (${KEYRING_FORMAT}): restore it from the recovery code (immich-backup recover)`);
  return file;
}

/** A keyring checked like the key file: a regular file, owner-only. Undefined when there is none. */
async function readRingFile(path: string): Promise<KeyringFile | undefined> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return undefined;
  if (!st.isFile()) throw new UnsafePathError(`keyring ${path} is not a regular file`);
  if (st.mode & 0o077) throw new UnsafePathError(`keyring ${path} can be read or written by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it, and since its keys may have leaked, rotate them (immich-backup keys rotate)`);
  return parseRing(await readFile(path, 'utf8'), path);
}

export function ringOf(file: KeyringFile, identitiesFile: string): Keyring {
  const tagKeys = file.keys.map((k) => ({ id: k.id, key: Buffer.from(k.tagKey, 'hex'), ...(k.retired ? { retired: k.retired } : {}), ...(k.vouches ? { vouches: new Set(k.vouches) } : {}) }));
  const entry = file.keys.find((k) => k.id === file.current)!;
  return { file, entry, current: tagKeys.find((k) => k.id === file.current)!, all: tagKeys, identitiesFile, resticPassword: file.resticPassword };
}

/**
 * A file of the keyring written whole under a temporary name of this process's own: the worker and
 * a CLI command writing the same file at once never rename each other's half-written file into place.
 */
export function writePrivate(path: string, content: string): Promise<void> {
  return writeFileAtomic(path, content, { temp: `${path}.${process.pid}.${randomBytes(4).toString('hex')}.partial` });
}

/** The identities file age reads, rewritten only when the keyring's identities changed. */
async function writeIdentities(path: string, file: KeyringFile): Promise<void> {
  const text = file.keys.map((k) => `# key ${k.id}${k.retired ? ` (retired ${k.retired})` : ''}\n${k.ageIdentity}\n`).join('');
  const now = await readFile(path, 'utf8').catch(() => undefined);
  if (now !== text) await writePrivate(path, text);
}

/**
 * Writes a keyring. `firstOnly`: only when there is none yet (a link, not a rename: two processes
 * making the first keyring at once both end up with the one that landed). Returns what is on disk.
 */
export async function saveRing(keyFile: string, file: KeyringFile, { firstOnly = false } = {}): Promise<KeyringFile> {
  const paths = keyringPaths(keyFile);
  const text = JSON.stringify(file, null, 2) + '\n';
  if (!firstOnly) {
    await writePrivate(paths.ring, text);
    return file;
  }
  const temp = `${paths.ring}.${process.pid}.${randomBytes(4).toString('hex')}.partial`;
  const fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(temp, paths.ring);
    await fsyncDir(dirname(paths.ring));
    return file;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readRingFile(paths.ring))!;
  } finally {
    await rm(temp, { force: true });
  }
}

/** The key file written from the keyring's current key (it was missing, or a rotation replaced it). */
async function writeKeyFile(keyFile: string, entry: KeyEntry, replace: boolean): Promise<void> {
  if (replace) await writePrivate(keyFile, `${entry.tagKey}\n`);
  else {
    const fh = await open(keyFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EEXIST') return undefined;
      throw err;
    });
    if (!fh) return;
    try {
      await fh.writeFile(`${entry.tagKey}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  forgetKey(keyFile);
}

/**
 * `file` with `key` current (added when new) and the one before retired now; `vouches`: the tags of
 * the dumps the one before made, the only ones it vouches for from now on (a rotation).
 */
export async function makeCurrent(file: KeyringFile, key: Buffer, now = new Date(), vouches?: readonly string[]): Promise<KeyringFile> {
  const id = keyId(key);
  const known = file.keys.find((k) => k.id === id);
  const keys = file.keys.map((k): KeyEntry => {
    if (k.id === id) return Object.fromEntries(Object.entries(k).filter(([f]) => f !== 'retired' && f !== 'vouches')) as unknown as KeyEntry;
    if (k.id === file.current && !k.retired) return { ...k, retired: now.toISOString(), ...(vouches ? { vouches: [...vouches] } : {}) };
    return k;
  });
  return { ...file, current: id, keys: known ? keys : [...keys, await newEntry(key, now)] };
}

async function load(keyFile: string, create: boolean): Promise<KeyringFile> {
  const paths = keyringPaths(keyFile);
  let file = await readRingFile(paths.ring);
  const keyPresent = !!(await lstat(keyFile).catch(() => undefined));
  if (!file) {
    // A key from before keyrings (or none: the worker's first start): the keyring grows around it.
    const key = keyPresent || !create ? await readKey(keyFile) : await ensureKey(keyFile);
    return saveRing(keyFile, { format: KEYRING_FORMAT, current: keyId(key), keys: [await newEntry(key)], resticPassword: randomBytes(32).toString('hex') }, { firstOnly: true });
  }
  const current = file.keys.find((k) => k.id === file!.current)!;
  if (!keyPresent) {
    // The keyring holds the key: the file is put back from it, never a new key made beside a keyring.
    await writeKeyFile(keyFile, current, false);
    return file;
  }
  const key = await readKey(keyFile);
  if (file.keys.some((k) => k.id === keyId(key) && k.retired)) {
    // A key the keyring retired: a rotation or recovery stopped between writing the keyring and the
    // key file (or a reader came in between). The keyring is the truth: the key file follows it.
    await writeKeyFile(keyFile, current, true);
    return file;
  }
  if (keyId(key) !== file.current) {
    // The key file was replaced by hand (an old key put back, as the README's "Lost key" says): it is
    // the current key now; the one before is retired, so what it tagged still verifies.
    file = await saveRing(keyFile, await makeCurrent(file, key));
  }
  return file;
}

const rings = new Map<string, { stamp: string; ring: Keyring }>();

async function stampOf(path: string): Promise<string> {
  const st = await stat(path).catch(() => undefined);
  return st ? `${st.ino}:${st.mtimeMs}:${st.size}` : 'none';
}

/**
 * The keyring of security.keyFile, read once per process and again only when the keyring file
 * changed (a rotation, a recovery: written whole, by rename). `create`: the worker's first start
 * makes the key and keyring when there are none; without it a missing key is the key file's
 * one-line UnsafePathError. A key file from before keyrings gets a keyring around it.
 */
export async function openKeyring(keyFile: string, { create = false }: { create?: boolean } = {}): Promise<Keyring> {
  const paths = keyringPaths(keyFile);
  const stamp = await stampOf(paths.ring);
  const cached = rings.get(keyFile);
  if (cached && cached.stamp === stamp && stamp !== 'none') return cached.ring;
  if (cached) forgetKey(keyFile);
  const file = await load(keyFile, create);
  await writeIdentities(paths.identities, file);
  const ring = ringOf(file, paths.identities);
  rings.set(keyFile, { stamp: await stampOf(paths.ring), ring });
  return ring;
}

/** Replaces the keyring (a rotation, a recovery) and the key file with its current key. */
export async function replaceKeyring(keyFile: string, file: KeyringFile): Promise<Keyring> {
  parseRing(JSON.stringify(file), keyringPaths(keyFile).ring);
  // A new host's first keyring: its folder made owner-only, as the worker's first start makes it.
  await mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
  await saveRing(keyFile, file);
  await writeKeyFile(keyFile, file.keys.find((k) => k.id === file.current)!, true);
  return openKeyring(keyFile);
}
