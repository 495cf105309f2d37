import type { ActivityDeps } from './deps.js';
import { discoverPostgresContainer } from '../adapters/postgres/container.js';
import type { PostgresTarget } from '../core/types.js';

export function createContainerActivities({ config, logger }: ActivityDeps) {
  return {
    /** The one running container whose name matches postgres.containerPattern (runbook: `immich.*postgres`). */
    async discoverPostgresContainer(): Promise<PostgresTarget> {
      return discoverPostgresContainer(config, logger);
    },
  };
}
