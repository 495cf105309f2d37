import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rm, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ChecksumMismatchError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { withHeartbeats } from '../commands/run-command.js';
import { READ_CHUNK } from '../files/checksums.js';
import { ownDir } from '../files/fs-safe.js';

/**
 * The bytes a load reads, by construction the bytes verified: `source` is copied (and hashed as it
 * is read) into a file created in `dir` (owner-only, the worker's own, outside backup.dir) and
 * unlinked at once, so no path leads to it; the caller reads it through the returned handle, never
 * by a path re-opened. It is checked against the approved sha256 before it is handed over. Closing
 * the handle frees it; a worker that dies leaves nothing behind.
 */
export async function privateCopy(source: string, file: string, dir: string, sha256: string, step: string): Promise<FileHandle> {
  await ownDir(dir);
  const target = join(dir, `${file}.${randomBytes(6).toString('hex')}`);
  const input = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ELOOP' ? new ChecksumMismatchError(`${file} is now a symbolic link: never followed; nothing was loaded`) : err;
  });
  const hash = createHash('sha256');
  let copied = 0;
  let output: FileHandle | undefined;
  try {
    const st = await input.stat();
    if (!st.isFile()) throw new ChecksumMismatchError(`${file} is no longer a regular file: nothing was loaded`);
    const { size } = st;
    output = await open(target, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    await unlink(target);
    const out = output;
    const copy = async () => {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      for (;;) {
        const { bytesRead } = await input.read(buf, 0, buf.length, null);
        if (!bytesRead) return;
        const chunk = buf.subarray(0, bytesRead);
        hash.update(chunk);
        await out.write(chunk);
        copied += bytesRead;
      }
    };
    await withHeartbeats(copy(), () => ({ step, copied: `${formatBytes(copied)} of ${formatBytes(size)}` }));
    const actual = hash.digest('hex');
    if (actual !== sha256) throw new ChecksumMismatchError(`${file} changed since it was verified and approved (sha256 ${actual}, approved ${sha256}): not loaded`);
    return output;
  } catch (err) {
    await output?.close();
    await rm(target, { force: true });
    throw err;
  } finally {
    await input.close();
  }
}

/** Where private copies are made: beside the worker's key, owner-only, never inside backup.dir (which others may write). */
export const privateCopyDir = (keyFile: string) => join(dirname(keyFile), 'loading');
