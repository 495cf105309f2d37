import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { UnauthenticatedDumpError, UnsafePathError } from '../../core/errors.js';

// What the tool trusts: one key of its own. Every dump it writes carries an HMAC-SHA256 tag
// (`<dump>.hmac`) over its name and sha256, and its row counts a tag over their bytes; a dump whose
// tag does not verify is not ours, whatever its .sha256 says (anyone who can write a folder can
// write a self-consistent .sha256). Destructive runs and approvals need tokens derived from the
// same key (adapters/files/authorization.ts), so only who can read the key can restore.

const KEY_BYTES = 32;
export const TAG_SUFFIX = '.hmac';
export const tagFileName = (file: string) => `${file}${TAG_SUFFIX}`;

/** Group or others may write it, or it belongs to someone other than root and this process's user. */
function unsafeMode(st: { mode: number; uid: number }, sticky = false): string | undefined {
  const me = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== me) return `is owned by uid ${st.uid}, not by root or this user`;
  if (st.mode & 0o022 && !(sticky && st.mode & 0o1000)) return `is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)})`;
  return undefined;
}

/**
 * Refuses a path that someone other than root and this user could change: the path itself, and
 * every directory above it (a sticky one such as /tmp is fine). `what` names it: "backup.dir", …
 */
export async function assertNotWritableByOthers(path: string, what: string): Promise<void> {
  const full = resolve(path);
  const st = await lstat(full).catch(() => undefined);
  if (st) {
    if (st.isSymbolicLink()) throw new UnsafePathError(`${what} ${full} is a symbolic link: point the config at the real path`);
    const problem = unsafeMode(st);
    if (problem) throw new UnsafePathError(`${what} ${full} ${problem}: refusing to trust it; chmod go-w it (or chown it to root)`);
  }
  for (let dir = dirname(full); ; dir = dirname(dir)) {
    const d = await stat(dir).catch(() => undefined);
    if (d) {
      const problem = unsafeMode(d, true);
      if (problem) throw new UnsafePathError(`${what} ${full}: the directory ${dir} above it ${problem}, so others could replace it; chmod go-w ${dir}`);
    }
    if (dir === dirname(dir)) break;
  }
}

/**
 * A small file's bytes, read only when it is a regular file reached without a symlink (a FIFO or
 * device named like it never blocks or floods the reader); undefined otherwise. Every file beside
 * a dump (.sha256, .hmac, .rows.json) is read this way: others may have put something else there.
 */
export async function readRegular(path: string, limit = 16 << 20): Promise<Buffer | undefined> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!fh) return undefined;
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > limit) return undefined;
    return await fh.readFile();
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

const keys = new Map<string, Buffer>();

function parseKey(text: string, path: string): Buffer {
  const hex = text.trim();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new UnsafePathError(`key file ${path} does not hold a key (64 hex digits): restore it from your safe copy, or see the README ("Lost key")`);
  return Buffer.from(hex, 'hex');
}

/** The key, made on first use (owner-only, in an owner-only folder); refused when others can read or write it. */
export async function ensureKey(path: string): Promise<Buffer> {
  const cached = keys.get(path);
  if (cached) return cached;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(randomBytes(KEY_BYTES).toString('hex') + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readKey(path);
}

/** The key as it is: missing, unreadable or readable by others is a one-line UnsafePathError. */
export async function readKey(path: string): Promise<Buffer> {
  const cached = keys.get(path);
  if (cached) return cached;
  const st = await lstat(path).catch(() => undefined);
  if (!st) throw new UnsafePathError(`key file ${path} (security.keyFile) does not exist: the worker makes it on its first start; run the CLI as the user the worker runs as (root)`);
  if (!st.isFile()) throw new UnsafePathError(`key file ${path} (security.keyFile) is not a regular file`);
  if (st.mode & 0o077) throw new UnsafePathError(`key file ${path} (security.keyFile) can be read or written by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it, and since it may have leaked, see the README ("Lost key")`);
  await assertNotWritableByOthers(path, 'security.keyFile');
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new UnsafePathError(`cannot read key file ${path} (security.keyFile): ${err.code === 'EACCES' ? 'permission denied: run as the user the worker runs as (root)' : err.message}`);
  });
  const key = parseKey(text, path);
  keys.set(path, key);
  return key;
}

export function hmac(key: Buffer, ...parts: string[]): string {
  return createHmac('sha256', key).update(parts.join('\0')).digest('hex');
}

export function sameHex(a: string, b: string): boolean {
  return a.length === b.length && /^[0-9a-f]*$/.test(a) && /^[0-9a-f]*$/.test(b) && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

export const dumpTag = (key: Buffer, file: string, sha256: string) => hmac(key, 'immich-backup dump v1', file, sha256);
export const rowsTag = (key: Buffer, file: string, rowsSha256: string) => hmac(key, 'immich-backup rows v1', file, rowsSha256);
export const sha256Hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

interface Tags {
  dump?: string;
  rows?: string;
}

async function readTags(dir: string, file: string): Promise<Tags> {
  const text = (await readRegular(join(dir, tagFileName(file)), 4096))?.toString('utf8') ?? '';
  const tags: Tags = {};
  for (const line of text.split('\n')) {
    const m = /^(dump|rows) ([0-9a-f]{64})$/.exec(line);
    if (m) tags[m[1] as keyof Tags] = m[2]!;
  }
  return tags;
}

async function writeTags(dir: string, file: string, tags: Tags): Promise<void> {
  const path = join(dir, tagFileName(file));
  const temp = join(dir, `.${tagFileName(file)}.partial`);
  await rm(temp, { force: true });
  const fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(Object.entries(tags).map(([k, v]) => `${k} ${v}\n`).join(''));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(temp, path);
}

/** Tags a validated dump (its name and sha256); any earlier rows tag is dropped with it. */
export async function tagDump(key: Buffer, dir: string, file: string, sha256: string): Promise<void> {
  await writeTags(dir, file, { dump: dumpTag(key, file, sha256) });
}

/** Adds the tag of the row counts just written (the bytes of `<dump>.rows.json`). */
export async function tagRows(key: Buffer, dir: string, file: string, rowsBytes: string | Buffer): Promise<void> {
  const tags = await readTags(dir, file);
  await writeTags(dir, file, { ...tags, rows: rowsTag(key, file, sha256Hex(rowsBytes)) });
}

/** The dump's tag verifies for this name and sha256; otherwise an UnauthenticatedDumpError naming the file. */
export async function verifyDumpTag(key: Buffer, dir: string, file: string, sha256: string, consequence = 'refusing it (nothing was changed)'): Promise<void> {
  const { dump } = await readTags(dir, file);
  if (!dump) throw new UnauthenticatedDumpError(`dump ${file} in ${dir} has no provenance tag (${tagFileName(file)}): it was not written by this tool with this key; ${consequence}`);
  if (!sameHex(dump, dumpTag(key, file, sha256))) throw new UnauthenticatedDumpError(`dump ${file} in ${dir}: its provenance tag does not verify (forged, altered, renamed, or tagged with another key); ${consequence}`);
}

/** The tag line a fetched or uploaded dump carries, checked without a folder (NAS copies). */
export function dumpTagMatches(key: Buffer, file: string, sha256: string, tagFileText: string): boolean {
  const m = /^dump ([0-9a-f]{64})$/m.exec(tagFileText);
  return !!m && sameHex(m[1]!, dumpTag(key, file, sha256));
}

/** True when the row counts file's bytes carry a valid tag. */
export async function rowsAuthentic(key: Buffer, dir: string, file: string, rowsBytes: string | Buffer): Promise<boolean> {
  const { rows } = await readTags(dir, file);
  return !!rows && sameHex(rows, rowsTag(key, file, sha256Hex(rowsBytes)));
}
