import { createAuthorizeActivities } from './authorize.js';
import { createContainerActivities } from './container.js';
import type { ActivityDeps } from './deps.js';
import { createDrillActivities } from './drill.js';
import { createDumpActivities } from './dump.js';
import { createHealthActivities } from './health.js';
import { createLibraryOffsiteActivities } from './library-offsite.js';
import { createLibraryAuditActivities } from './library-audit.js';
import { createLibraryRestoreActivities } from './library-restore.js';
import { createLockActivities } from './locks.js';
import { createMirrorActivities } from './mirror.js';
import { createNotifyActivities } from './notify.js';
import { createOffsiteActivities } from './offsite.js';
import { createPruneActivities } from './prune.js';
import { createRestoreActivities } from './restore.js';
import { createValidateActivities } from './validate.js';

export type { ActivityDeps } from './deps.js';

/** Every activity the worker registers, bound to the config parsed at start-up. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...createContainerActivities(deps),
    ...createDumpActivities(deps),
    ...createValidateActivities(deps),
    ...createPruneActivities(deps),
    ...createOffsiteActivities(deps),
    ...createMirrorActivities(deps),
    ...createLibraryRestoreActivities(deps),
    ...createRestoreActivities(deps),
    ...createDrillActivities(deps),
    ...createHealthActivities(deps),
    ...createNotifyActivities(deps),
    ...createLockActivities(deps),
    ...createAuthorizeActivities(deps),
    ...createLibraryOffsiteActivities(deps),
    ...createLibraryAuditActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
