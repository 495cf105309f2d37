import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync } from 'node:fs';
import { open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

// Reading a file on a tree someone else can write (the drive, the library Immich's container
// writes) without being led elsewhere: LibraryAudit's reader (sha1-reader.ts), synchronously, and
// the selective library restore, by promise. Node's own modules only.

/** Bytes read per read(2): as fast as 1 MiB from the page cache (measured), a quarter of the memory. */
export const READ_CHUNK = 1 << 18;

/** Linux's O_PATH (not in fs.constants): a handle to the file itself, opening nothing behind it. */
const O_PATH = 0o10000000;

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // EIO from a network or FUSE close: the read is already decided
  }
}

/**
 * The SHA-1 (hex) of the regular file at `path` and the device it lies on (of the file opened, so
 * that a directory swapped for a symlink mid-way shows), or undefined when it cannot be read as a
 * regular file of at most `maxBytes` at exactly `path`, which must be canonical (absolute, no
 * symlink, `.`, `..` or doubled slash anywhere along it; the caller joins a realpath with plain names):
 * - the path is first opened with O_PATH|O_NOFOLLOW, which opens nothing (a device node swapped in
 *   is never opened, a final symlink never followed), and checked to be a regular file;
 * - where the file opened really is (/proc/self/fd's link) must be `path` itself: a directory along
 *   it that is, or was swapped for, a symlink (<library>/upload/<user>/link -> /etc) led elsewhere,
 *   and the file is refused, race-free, before a byte of it is read;
 * - only that file is then opened for reading, through /proc/self/fd (O_NONBLOCK);
 * - a file longer than `maxBytes` (a huge sparse file planted in its place) is not read to its end.
 */
export function sha1OfFile(path: string, buffer: Buffer, maxBytes = Number.MAX_SAFE_INTEGER): { sha1: string; dev: number } | undefined {
  let handle: number;
  try {
    handle = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  let fd: number | undefined;
  try {
    if (readlinkSync(`/proc/self/fd/${handle}`) !== path) return undefined;
    const st = fstatSync(handle);
    if (!st.isFile()) return undefined;
    fd = openSync(`/proc/self/fd/${handle}`, constants.O_RDONLY | constants.O_NONBLOCK);
    const hash = createHash('sha1');
    let total = 0;
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      total += n;
      if (total > maxBytes) return undefined;
      hash.update(buffer.subarray(0, n));
    }
    return { sha1: hash.digest('hex'), dev: st.dev };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeQuietly(fd);
    closeQuietly(handle);
  }
}

/**
 * The SHA-1 (hex) of the regular file `rel` under `root`, with sha1OfFile's checks (no symlink
 * anywhere from the root's real path down, no device or FIFO opened), by promise: for an
 * activity's own thread, whose heartbeats a long synchronous read would stop. `rel` is plain
 * names (no `.`, `..` or empty one: libraryRelativePath and selectionPathProblem see to it).
 * Undefined when the file is missing or not one to read; a read that fails once the file is open
 * (EIO from a dying drive) throws.
 */
export async function sha1OfPlainFile(root: string, rel: string): Promise<string | undefined> {
  const realRoot = await realpath(root).catch(() => undefined);
  if (realRoot === undefined) return undefined;
  const path = join(realRoot, rel);
  const handle = await open(path, O_PATH | constants.O_NOFOLLOW).catch(() => undefined);
  if (!handle) return undefined;
  let file: FileHandle | undefined;
  try {
    const at = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
    if (at !== path || !(await handle.stat()).isFile()) return undefined;
    file = await open(`/proc/self/fd/${handle.fd}`, constants.O_RDONLY | constants.O_NONBLOCK).catch(() => undefined);
    if (!file) return undefined;
    const hash = createHash('sha1');
    for await (const chunk of file.createReadStream({ autoClose: false, highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
    return hash.digest('hex');
  } finally {
    await file?.close().catch(() => undefined);
    await handle.close().catch(() => undefined);
  }
}
