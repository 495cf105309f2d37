import { createContainerActivities } from './container.js';
import type { ActivityDeps } from './deps.js';
import { createDumpActivities } from './dump.js';
import { createMirrorActivities } from './mirror.js';
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
    ...createRestoreActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
