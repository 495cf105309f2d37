import { requireAuthorizedRun } from '../adapters/run-auth/index.js';
import type { ActivityDeps } from './deps.js';
import { restoreSelection, type SelectionRequest, type SelectionResult } from '../adapters/mirror/selective-restore.js';
export { selectionPathProblem } from '../core/library-layout.js';
export type { LibrarySelection, SelectionResult } from '../adapters/mirror/selective-restore.js';

// A library restore of less than the whole tree (--missing, --path, --as-of), from the drive: the
// plan and the copies are adapters/mirror/selective-restore.ts's.

export function createLibraryRestoreActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * A selective library restore, or (dryRun) what it would bring back. The plan is made again for
     * the real run (the library may have changed since the dry run), and never copies more files
     * than the approved dry run counted (`maxFiles`).
     */
    async restoreLibrarySelection(request: SelectionRequest): Promise<SelectionResult> {
      const { selection, dryRun } = request;
      if (!dryRun) await requireAuthorizedRun(config.security.keyFile, 'restore part of the library from the drive');
      const { result, planned } = await restoreSelection(config, request);
      logger.info({ selection, dryRun, files: result.files, fromVersions: result.fromVersions, notFound: result.notFound, planned }, dryRun ? 'selective library restore dry run' : 'selective library restore done');
      return result;
    },
  };
}
