import { constants } from 'node:fs';
import { copyFile, link, lstat, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { Logger } from '../../config/logger.js';
import { checksumFileName, partialFileName, rowCountsFileName } from '../../core/dump-names.js';
import { DumpConflictError } from '../../core/errors.js';
import type { ResolvedDump } from '../../core/types.js';
import { withHeartbeats } from '../commands/run-command.js';
import { sha256OfFile } from '../files/checksums.js';
import { fsyncDir, writeFileAtomic } from '../files/fs-safe.js';
import { readChecksumFile } from './authentic.js';
import type { NasCopy } from './nas-copy.js';
import { tagFileName } from './tags.js';

/** Links `from` to `to` unless `to` exists: never replaces a file. True when it linked. */
export async function linkIfAbsent(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** `source` copied into `dir` under the temporary name of `name` (created afresh: never through what sits there). */
export async function copyIntoTemp(source: string, dir: string, name: string): Promise<string> {
  const temp = join(dir, partialFileName(name));
  await rm(temp, { force: true });
  await withHeartbeats(copyFile(source, temp, constants.COPYFILE_EXCL), () => ({ step: `copying ${name} into ${dir}` }));
  return temp;
}

/**
 * The NAS copy of a dump (fetched, decrypted and verified in full by `fetch`: nas-copy.ts) put into
 * the staging dir with its .sha256, its tag and its row counts. It gets its final name only where
 * none exists: a local file of that name is never replaced; one that differs is reported.
 */
export async function importFromNas(config: Config, logger: Logger, fetch: (file: string) => Promise<NasCopy>, file: string): Promise<ResolvedDump> {
  const dir = config.backup.dir;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const local = join(dir, file);
  const notRegular = (st: { isSymbolicLink(): boolean }) => new DumpConflictError(`${local} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: it is never followed nor replaced; remove it and try again`);
  const before = await lstat(local).catch(() => undefined);
  if (before && !before.isFile()) throw notRegular(before);
  const copy = await fetch(file);
  const temps: string[] = [];
  try {
    const present = await lstat(local).catch(() => undefined);
    if (present && !present.isFile()) throw notRegular(present);
    if (present) {
      const local256 = await withHeartbeats(sha256OfFile(local), () => ({ step: `comparing the NAS copy of ${file} with the local one` }));
      if (copy.sha256 !== local256) {
        throw new DumpConflictError(`the NAS copy of ${file} (sha256 ${copy.sha256}) differs from the local file of that name (sha256 ${local256}): neither was replaced; restore the local one (without --from offsite), or move it aside first to restore the NAS copy`);
      }
      logger.info({ file }, 'the NAS copy equals the local dump: restoring the local file');
      return { file, path: local, format: 'cluster', origin: 'offsite', checksum: copy.sha256 };
    }
    // The bytes that land here were verified in the private folder; whatever changes them in the
    // staging dir afterwards is caught by the load's private copy, which checks this sha256.
    const temp = await copyIntoTemp(copy.path, dir, file);
    temps.push(temp);
    // The checksum first: a dump under its final name always has its .sha256 beside it.
    const sumTemp = join(dir, partialFileName(checksumFileName(file)));
    temps.push(sumTemp);
    await writeFileAtomic(sumTemp, `${copy.sha256}  ${file}\n`);
    if (!(await linkIfAbsent(sumTemp, join(dir, checksumFileName(file)))) && (await readChecksumFile(join(dir, checksumFileName(file)))) !== copy.sha256) {
      throw new DumpConflictError(`${checksumFileName(file)} already exists in ${dir} with another checksum: neither was replaced; move it aside and try again`);
    }
    const tagTemp = join(dir, partialFileName(tagFileName(file)));
    temps.push(tagTemp);
    await writeFileAtomic(tagTemp, copy.tagText);
    await linkIfAbsent(tagTemp, join(dir, tagFileName(file)));
    if (copy.rowsPath) {
      const rowsTemp = await copyIntoTemp(copy.rowsPath, dir, rowCountsFileName(file));
      temps.push(rowsTemp);
      await linkIfAbsent(rowsTemp, join(dir, rowCountsFileName(file)));
    }
    if (!(await linkIfAbsent(temp, local))) throw new DumpConflictError(`${file} appeared in ${dir} while it was fetched: neither was replaced; try again`);
    await fsyncDir(dir);
    logger.info({ file, encrypted: copy.encrypted }, 'dump fetched from the NAS and verified');
    return { file, path: local, format: 'cluster', origin: 'offsite', checksum: copy.sha256 };
  } finally {
    await Promise.all(temps.map((t) => rm(t, { force: true })));
    await copy.dispose();
  }
}
