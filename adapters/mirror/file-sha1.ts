import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync } from 'node:fs';

// The part of LibraryAudit's reader (sha1-reader.ts) that reads a file: Node's own modules only.

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
