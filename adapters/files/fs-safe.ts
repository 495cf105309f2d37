import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { partialFileName } from '../../core/dump-names.js';
import { NoSpaceError, UnsafePathError } from '../../core/errors.js';

// Filesystem primitives every adapter shares (the dump store, the library mirror's state and
// pairings): how a file is written whole or not at all, how a folder of the worker's own is made,
// how a small file that someone else may have planted is read.

/** Makes a rename durable: the directory entry itself is flushed. */
export async function fsyncDir(path: string): Promise<void> {
  const dir = await open(path, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * The one way a small file is replaced: written under a temporary name (by default `.<name>.partial`
 * beside it) created afresh, never through whatever sits there (O_EXCL, O_NOFOLLOW), flushed,
 * renamed into place, and the directory flushed so the rename survives a crash. On any failure
 * the temporary file is removed and the old file stays as it was.
 */
export async function writeFileAtomic(path: string, content: string | Buffer, { temp = join(dirname(path), partialFileName(basename(path))), mode = 0o600 }: { temp?: string; mode?: number } = {}): Promise<void> {
  await rm(temp, { force: true });
  const fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
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

/** ENOSPC and EDQUOT become one clear, non-retryable message; anything else passes through. */
export function diskError(err: unknown, where: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new NoSpaceError(`no space left on the filesystem of ${where}: free space or point backup.dir elsewhere`);
  }
  return err;
}

/**
 * A folder of the worker's own (restore-points/, rejected/, salvage/ in backup.dir; loading/ beside the key):
 * made owner-only if missing; refused when it is a symlink, not a directory, or someone else's,
 * so nothing is ever written through a link planted under its name.
 */
export async function ownDir(path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  const st = await lstat(path);
  const me = process.getuid?.() ?? 0;
  if (st.isSymbolicLink() || !st.isDirectory()) throw new UnsafePathError(`${path} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}: never written through; remove it`);
  if (st.uid !== me) throw new UnsafePathError(`${path} belongs to uid ${st.uid}, not to the worker: refusing to write there; remove it`);
  if (st.mode & 0o022) await chmod(path, st.mode & 0o7755);
  return path;
}

/** What a directory entry that is not a regular file is, for messages: "a symbolic link", "a directory", … */
export function notRegular(st: { isSymbolicLink(): boolean; isDirectory(): boolean }): string {
  return st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a directory' : 'not a regular file';
}
