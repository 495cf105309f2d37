import { resolve } from 'node:path';
import { CommandFailedError, StalledError } from '../src/errors.js';
import { remoteVersionsDirOf } from '../src/library-layout.js';
import { requireAuthorizedRun } from './authorize.js';
import type { ActivityDeps } from './deps.js';
import { expiredVersionSets } from './library-versions.js';
import { runRsync } from './rsync.js';
import { runRemote, sshCommandString, sshError, sshTarget } from './ssh.js';
import type { LibraryOffsiteResult } from './types.js';

// library.offsite: the library's third copy, on the NAS, over the same batch-mode ssh as the dumps
// (offsite.host, user, port, identityFile, knownHostsFile), versioned like the drive: what a run
// overwrites or deletes there moves into <remoteDir>.versions/<version set>, pruned after
// library.keepVersionsWeeks. Remote paths are from the config's safe character set and version
// set names (digits, T, Z): nothing else reaches the NAS's shell.

export function createLibraryOffsiteActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;
  const offsite = config.offsite;
  const priority = [...(lib.ioniceClass ? ['ionice', '-c', String(lib.ioniceClass)] : []), ...(lib.nice ? ['nice', '-n', String(lib.nice)] : [])];

  return {
    /** rsync -a of the library to library.offsite.remoteDir with --backup-dir, then the NAS's expired version sets removed. */
    async mirrorLibraryOffsite({ versionSet, nowMs }: { versionSet: string; nowMs: number }): Promise<LibraryOffsiteResult> {
      if (lib.delete) await requireAuthorizedRun(config.security.keyFile, 'mirror the library to the NAS with deletion');
      const remoteDir = lib.offsite.remoteDir.replace(/\/+$/, '');
      const versions = remoteVersionsDirOf(remoteDir);
      const destination = `${sshTarget(offsite)}:${offsite.port}:${remoteDir}`;
      await runRemote(offsite, ['mkdir', '-p', '--', remoteDir, versions], { label: 'ssh mkdir' });
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
      const stats = await runRsync(args, { step: 'copying the library to the NAS', prefix: priority, stall, okExitCodes: [24] }).catch((err: unknown) => {
        if (err instanceof CommandFailedError && /\(exit code 30\)/.test(err.message)) {
          throw new StalledError(`${stall.what} stalled: rsync saw no data move for ${offsite.stallSeconds} s (offsite.stallSeconds) and stopped: ${stall.advice}`);
        }
        throw sshError(err, offsite);
      });
      const { stdout } = await runRemote(offsite, ['ls', '-1A', '--', versions], { label: 'ssh ls' });
      const expired = expiredVersionSets(stdout.split('\n').map((l) => l.trim()), nowMs, lib.keepVersionsWeeks, versionSet);
      // Oldest first, one at a time: an interrupted prune leaves the newest sets.
      for (const name of expired) await runRemote(offsite, ['rm', '-rf', '--', `${versions}/${name}`], { label: 'ssh rm' });
      const result = { destination, filesTransferred: stats.filesTransferred, bytesTransferred: stats.bytesTransferred, deleted: stats.deleted, prunedVersionSets: expired };
      logger.info({ ...result, versionSet }, 'library copied to the NAS, versioned');
      return result;
    },
  };
}
