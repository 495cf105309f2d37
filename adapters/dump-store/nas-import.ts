import { link, lstat, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { Logger } from '../../config/logger.js';
import { checksumFileName, partialFileName } from '../../core/dump-names.js';
import { DumpConflictError, UnauthenticatedDumpError } from '../../core/errors.js';
import type { ResolvedDump } from '../../core/types.js';
import { withHeartbeats } from '../commands/run-command.js';
import { runRsync } from '../commands/rsync.js';
import { sha256OfFile } from '../files/checksums.js';
import { fsyncDir, readRegular } from '../files/fs-safe.js';
import { sshCommandString, sshError, sshTarget } from '../nas/ssh.js';
import { checkRestorable } from '../postgres/load.js';
import { readChecksumFile } from './authentic.js';
import { dumpTagMatches, tagFileName, type KeysLike } from './tags.js';

/** Links `from` to `to` unless `to` exists: never replaces a file. True when it linked. */
async function linkIfAbsent(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/**
 * Copies a dump, its .sha256 and its tag from the NAS into the staging dir under temporary names
 * and verifies it there in full (tag, checksum, stream, marker, scan). It gets its final name only
 * where none exists: a local file of that name is never replaced; one that differs is reported.
 */
export async function importFromNas(config: Config, logger: Logger, key: () => Promise<KeysLike>, file: string): Promise<ResolvedDump> {
  const dir = config.backup.dir;
  const offsite = config.offsite;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, partialFileName(file));
  const sumTemp = join(dir, partialFileName(checksumFileName(file)));
  const tagTemp = join(dir, partialFileName(tagFileName(file)));
  const cleanUp = () => Promise.all([rm(temp, { force: true }), rm(sumTemp, { force: true }), rm(tagTemp, { force: true })]);
  try {
    await cleanUp(); // whatever sits under those names (a symlink planted there) is never written through
    try {
      for (const [name, target] of [[file, temp], [checksumFileName(file), sumTemp]] as const) {
        await runRsync(['-t', '--chmod=F600', '-e', sshCommandString(offsite), `${sshTarget(offsite)}:${offsite.remoteDir}/${name}`, target], { step: `fetching ${name} from the NAS` });
      }
    } catch (err) {
      throw sshError(err, offsite);
    }
    // A copy without its tag (uploaded before tags, or planted) is refused just below, as one whose tag does not verify.
    await runRsync(['-t', '--chmod=F600', '-e', sshCommandString(offsite), `${sshTarget(offsite)}:${offsite.remoteDir}/${tagFileName(file)}`, tagTemp], { step: `fetching ${tagFileName(file)} from the NAS` }).catch((err: Error) => {
      logger.warn({ file, reason: err.message.split('\n')[0] }, 'no provenance tag fetched from the NAS');
    });
    const recorded = await readChecksumFile(sumTemp);
    // The NAS is someone else's disk: its copy is ours only when its tag verifies with the worker's key.
    const theKey = await key();
    if (!dumpTagMatches(theKey, file, recorded, (await readRegular(tagTemp))?.toString('utf8') ?? '')) {
      throw new UnauthenticatedDumpError(`the NAS copy of ${file} has no provenance tag that verifies with the worker's key (forged, altered or renamed on the NAS): not restoring it; nothing was changed`);
    }
    const local = join(dir, file);
    const present = await lstat(local).catch(() => undefined);
    if (present && !present.isFile()) throw new DumpConflictError(`${local} is ${present.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: it is never followed nor replaced; remove it and try again`);
    if (present) {
      const [fetched, present] = await withHeartbeats(Promise.all([sha256OfFile(temp), sha256OfFile(local)]), () => ({ step: `comparing the NAS copy of ${file} with the local one` }));
      if (fetched !== present) {
        throw new DumpConflictError(`the NAS copy of ${file} (sha256 ${fetched}) differs from the local file of that name (sha256 ${present}): neither was replaced; restore the local one (without --from offsite), or move it aside first to restore the NAS copy`);
      }
      logger.info({ file }, 'the NAS copy equals the local dump: restoring the local file');
      return { file, path: local, format: 'cluster', origin: 'offsite', checksum: fetched };
    }
    await checkRestorable({ file, path: temp, format: 'cluster', checksum: recorded });
    // The checksum first: a dump under its final name always has its .sha256 beside it.
    if (!(await linkIfAbsent(sumTemp, join(dir, checksumFileName(file)))) && (await readChecksumFile(join(dir, checksumFileName(file)))) !== recorded) {
      throw new DumpConflictError(`${checksumFileName(file)} already exists in ${dir} with another checksum: neither was replaced; move it aside and try again`);
    }
    await linkIfAbsent(tagTemp, join(dir, tagFileName(file)));
    if (!(await linkIfAbsent(temp, local))) throw new DumpConflictError(`${file} appeared in ${dir} while it was fetched: neither was replaced; try again`);
    await fsyncDir(dir);
    logger.info({ file }, 'dump fetched from the NAS and verified');
    return { file, path: local, format: 'cluster', origin: 'offsite', checksum: recorded };
  } finally {
    await cleanUp();
  }
}
