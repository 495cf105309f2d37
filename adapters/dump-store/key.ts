import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { UnsafePathError } from '../../core/errors.js';

// What the tool trusts: one key of its own (security.keyFile), apart from the dumps it vouches for.
// Every dump the tool writes carries an HMAC-SHA256 tag made with it (tags.ts), and destructive runs
// and approvals need tokens derived from it (adapters/run-auth/), so only who can read the key can
// restore. These functions read it once per process (the store keeps what they return, index.ts).

const KEY_BYTES = 32;

// One key per process and path, as read first: a key file deleted or replaced while the worker runs
// is not made or read again (the next dump would be tagged with a key the rest of the run does not
// hold); a restart reads it anew.
const keys = new Map<string, Buffer>();

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

/** Forgets the key read from `path` (the keyring replaced it: a rotation, a recovery), so the next read is fresh. */
export function forgetKey(path: string): void {
  keys.delete(path);
}

export function hmac(key: Buffer, ...parts: string[]): string {
  return createHmac('sha256', key).update(parts.join('\0')).digest('hex');
}

export function sameHex(a: string, b: string): boolean {
  return a.length === b.length && /^[0-9a-f]*$/.test(a) && /^[0-9a-f]*$/.test(b) && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

export const sha256Hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
