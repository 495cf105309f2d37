import { MirrorSafetyError } from '../core/errors.js';
import { versionSetProblem } from '../core/library-layout.js';
import { requireAuthorizedRun } from '../adapters/run-auth/index.js';
import type { ActivityDeps } from './deps.js';
import { copyLibraryToNas } from '../adapters/library-offsite/library-copy.js';
import type { LibraryOffsiteResult } from '../core/types.js';

// library.offsite: the library's third copy, on the NAS, as an encrypted restic repository (see
// adapters/library-offsite/library-copy.ts).

export function createLibraryOffsiteActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;

  return {
    /**
     * A restic snapshot of the library in its encrypted repository on the NAS (made when there is
     * none), verified by `restic check`, then (library.delete on) the snapshots beyond
     * library.keepVersionsWeeks forgotten. The drive's checks again, right before (the library may
     * have gone since): the library holds files and, with deletion on, at least
     * library.minSourceFraction of the newest snapshot's. The retention never reads a clock handed
     * to it (older workflows send nowMs: ignored). `versionSet` names this run's snapshot (a tag).
     */
    async mirrorLibraryOffsite({ versionSet }: { versionSet: string; nowMs?: number }): Promise<LibraryOffsiteResult> {
      const setProblem = versionSetProblem(versionSet, Date.now());
      if (setProblem) throw new MirrorSafetyError(`version set ${JSON.stringify(versionSet).slice(0, 40)} ${setProblem}: nothing was copied to the NAS`);
      if (lib.delete) await requireAuthorizedRun(config.security.keyFile, 'mirror the library to the NAS with deletion');
      const result = await copyLibraryToNas(config, versionSet);
      if (result.plaintextCopy) {
        logger.warn(
          { plaintext: result.plaintextCopy },
          'the NAS still holds the PLAINTEXT copy of the library from before the encrypted repository (readable by anyone who can read the NAS): ' +
            'it is left in place; once this encrypted copy is verified (it is), remove it by hand on the NAS',
        );
      }
      if (result.futureVersionSets) logger.warn({ future: result.futureVersionSets, destination: result.destination }, 'NAS snapshots dated in the future (the clock ran ahead, or runs behind now): restic\'s "latest" is the newest date; check the clock');
      logger.info({ ...result, versionSet }, 'library copied to the NAS (encrypted restic snapshot, checked)');
      return result;
    },
  };
}
