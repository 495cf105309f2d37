import { resolve } from 'node:path';
import type { Config } from '../../config/config.js';
import { MirrorSafetyError, SourceEmptyError } from '../../core/errors.js';
import { remoteVersionsDirOf } from '../../core/library-layout.js';
import type { LibraryOffsiteResult } from '../../core/types.js';
import { withHeartbeats } from '../commands/run-command.js';
import { ioPriority, RSYNC_VANISHED, runRsync } from '../commands/rsync.js';
import { countFiles, hasFiles } from '../mirror/drive.js';
import { planVersionPrune } from '../mirror/library-versions.js';
import { runRemote, sshCommandString, sshError, sshTarget } from './ssh.js';

// library.offsite: the library's third copy, on the NAS, over the same batch-mode ssh as the dumps
// (offsite.host, user, port, identityFile, knownHostsFile), versioned like the drive: what a run
// overwrites or deletes there moves into <remoteDir>.versions/<version set>, pruned after
// library.keepVersionsWeeks. Remote paths are from the config's safe character set and version
// set names (digits, T, Z): nothing else reaches the NAS's shell.

/**
 * rsync -a of the library to library.offsite.remoteDir with --backup-dir=<versions>/<versionSet>,
 * then the NAS's expired version sets removed. The drive's checks again, right before this copy
 * (the library may have gone since): the library holds files and, with deletion on, at least
 * library.minSourceFraction of the NAS copy's. Pruning is by this host's clock, keeps the newest
 * keepVersionsWeeks sets and stops while a set is named in the future. `versions`: the NAS's
 * versions folder, for the caller's log.
 */
export async function copyLibraryToNas(config: Config, versionSet: string): Promise<LibraryOffsiteResult & { versions: string }> {
  const lib = config.library;
  const offsite = config.offsite;
  const remoteDir = lib.offsite.remoteDir.replace(/\/+$/, '');
  const versions = remoteVersionsDirOf(remoteDir);
  const destination = `${sshTarget(offsite)}:${offsite.port}:${remoteDir}`;
  if (!(await hasFiles(lib.source))) {
    throw new SourceEmptyError(`the library ${lib.source} is missing or holds no files: is it mounted? Nothing was copied to the NAS (${destination})`);
  }
  await runRemote(offsite, ['mkdir', '-p', '--', remoteDir, versions], { label: 'ssh mkdir' });
  if (lib.delete) {
    const [sourceFiles, nasFiles] = await withHeartbeats(
      Promise.all([countFiles(lib.source), runRemote(offsite, ['find', remoteDir, '-type', 'f'], { label: 'ssh find' }).then(({ stdout }) => stdout.split('\n').filter(Boolean).length)]),
      () => ({ step: 'counting files on the library and the NAS' }),
    );
    if (sourceFiles < lib.minSourceFraction * nasFiles) {
      throw new MirrorSafetyError(
        `refusing to copy the library to the NAS with deletion: the library holds ${sourceFiles} files, the NAS copy ${nasFiles} ` +
          `(below library.minSourceFraction ${lib.minSourceFraction}); nothing was copied or deleted there; check the library before it erases its backup`,
      );
    }
  }
  const stall = { what: `the library copy to ${destination}`, setting: 'offsite.stallSeconds', seconds: offsite.stallSeconds, advice: 'check the NAS (its disk and its ssh server)' };
  const args = [
    '-a',
    `--timeout=${offsite.stallSeconds}`,
    ...(offsite.bwLimitKiB ? [`--bwlimit=${offsite.bwLimitKiB}`] : []),
    ...lib.excludes.map((pattern) => `--exclude=${pattern}`),
    ...(lib.delete ? ['--delete'] : []),
    '--backup',
    `--backup-dir=${versions}/${versionSet}`,
    '-e',
    sshCommandString(offsite),
    '--',
    `${resolve(lib.source)}/`,
    `${sshTarget(offsite)}:${remoteDir}/`,
  ];
  const stats = await runRsync(args, { step: 'copying the library to the NAS', prefix: ioPriority(lib), stall, okExitCodes: [RSYNC_VANISHED] }).catch((err: unknown) => {
    throw sshError(err, offsite);
  });
  // -p marks real directories with a slash (a symlink named like a set gets none): only those count among the newest kept.
  const { stdout } = await runRemote(offsite, ['ls', '-1Ap', '--', versions], { label: 'ssh ls' });
  const entries = stdout.split('\n').map((l) => l.trim());
  const directories = new Set(entries.filter((l) => l.endsWith('/')).map((l) => l.slice(0, -1)));
  const plan = planVersionPrune(entries.map((l) => l.replace(/\/$/, '')), Date.now(), lib.keepVersionsWeeks, versionSet, (n) => directories.has(n));
  // Oldest first, one at a time: an interrupted prune leaves the newest sets.
  for (const name of plan.expired) await runRemote(offsite, ['rm', '-rf', '--', `${versions}/${name}`], { label: 'ssh rm' });
  return { destination, filesTransferred: stats.filesTransferred, bytesTransferred: stats.bytesTransferred, deleted: stats.deleted, prunedVersionSets: plan.expired, ...(plan.future.length ? { futureVersionSets: plan.future } : {}), versions };
}
