import { chmod, lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { NoSpaceError, UnsafePathError } from '../../core/errors.js';

/** Makes a rename durable: the directory entry itself is flushed. */
export async function fsyncDir(path: string): Promise<void> {
  const dir = await open(path, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Writes a small file under a temporary name, flushes it, then renames it into place. */
export async function writeFileAtomic(path: string, tempPath: string, content: string, mode = 0o600): Promise<void> {
  await rm(tempPath, { force: true });
  const fh = await open(tempPath, 'wx', mode);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tempPath, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tempPath, path);
  await fsyncDir(dirname(path));
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
