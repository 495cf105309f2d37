import { MirrorSafetyError } from '../core/errors.js';
import { versionSetProblem } from '../core/library-layout.js';
import { requireAuthorizedRun } from '../adapters/run-auth/index.js';
import type { ActivityDeps } from './deps.js';
import { copyLibraryToNas } from '../adapters/nas/library-copy.js';
import type { LibraryOffsiteResult } from '../core/types.js';

// library.offsite: the library's third copy, on the NAS, versioned like the drive (see
// adapters/nas/library-copy.ts).

export function createLibraryOffsiteActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;

  return {
    /**
     * rsync -a of the library to library.offsite.remoteDir with --backup-dir, then the NAS's expired
     * version sets removed. The drive's checks again, right before this copy (the library may have
     * gone since): the library holds files and, with deletion on, at least library.minSourceFraction
     * of the NAS copy's. Pruning is by the worker's clock, never a caller's (older workflows send
     * nowMs: ignored), keeps the newest keepVersionsWeeks sets and stops while a set is named in the future.
     */
    async mirrorLibraryOffsite({ versionSet }: { versionSet: string; nowMs?: number }): Promise<LibraryOffsiteResult> {
      const setProblem = versionSetProblem(versionSet, Date.now());
      if (setProblem) throw new MirrorSafetyError(`version set ${JSON.stringify(versionSet).slice(0, 40)} ${setProblem}: nothing was copied to the NAS`);
      if (lib.delete) await requireAuthorizedRun(config.security.keyFile, 'mirror the library to the NAS with deletion');
      const { versions, ...result } = await copyLibraryToNas(config, versionSet);
      if (result.futureVersionSets) logger.warn({ future: result.futureVersionSets, versions }, 'NAS version sets named in the future (the clock ran ahead, or runs behind now): nothing pruned there; check the clock, then remove or rename those sets');
      logger.info({ ...result, versionSet }, 'library copied to the NAS, versioned');
      return result;
    },
  };
}
