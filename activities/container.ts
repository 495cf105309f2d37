import { join } from 'node:path';
import type { Config } from '../src/config.js';
import { AmbiguousContainerError, ContainerNotFoundError } from '../src/errors.js';
import type { ActivityDeps } from './deps.js';
import { runCommand } from './run-command.js';
import type { PostgresTarget } from './types.js';

// Docker container names: anything else from `docker ps` is refused rather than passed on.
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export function createContainerActivities({ config, logger }: ActivityDeps) {
  return {
    /** The one running container whose name matches postgres.containerPattern (runbook: `immich.*postgres`). */
    async discoverPostgresContainer(): Promise<PostgresTarget> {
      if (config.postgres.runtime === 'none') return { runtime: 'none' };
      const pattern = config.postgres.containerPattern;
      const { stdout } = await runCommand(config.docker.command, ['ps', '--filter', `name=${pattern}`, '--format', '{{.Names}}'], {
        label: `${config.docker.command} ps`,
      });
      // Docker's name filter is loose (substring, leading slash); apply the pattern ourselves too.
      const regex = new RegExp(pattern);
      const names = stdout
        .split('\n')
        .map((line) => line.trim())
        .filter((name) => name && regex.test(name));
      if (names.length === 0) {
        throw new ContainerNotFoundError(
          `no running container matches /${pattern}/: start Immich's database container, or set postgres.containerPattern (or postgres.runtime: none)`,
        );
      }
      if (names.length > 1) {
        throw new AmbiguousContainerError(
          `${names.length} running containers match /${pattern}/ (${names.join(', ')}): make postgres.containerPattern match exactly one`,
        );
      }
      const container = names[0]!;
      if (!CONTAINER_NAME.test(container)) {
        throw new ContainerNotFoundError(`docker ps returned an unexpected container name ${JSON.stringify(container)}`);
      }
      logger.info({ container, pattern }, 'postgres container found');
      return { runtime: 'docker', container };
    },
  };
}

/**
 * How to run one PostgreSQL client tool against the database: through `docker exec -i` (never
 * -t: a TTY would mangle the binary stream) or on the host. The password travels in the
 * environment; `-e PGPASSWORD` without a value makes the docker CLI forward it from its own.
 */
export function postgresCommand(
  config: Config,
  target: PostgresTarget,
  tool: string,
  toolArgs: readonly string[],
): { file: string; args: string[]; env: Record<string, string> } {
  const env: Record<string, string> = config.postgres.password ? { PGPASSWORD: config.postgres.password } : {};
  if (target.runtime === 'docker') {
    const passEnv = config.postgres.password ? ['-e', 'PGPASSWORD'] : [];
    return { file: config.docker.command, args: ['exec', '-i', ...passEnv, target.container, tool, ...toolArgs], env };
  }
  const file = config.postgres.binDir ? join(config.postgres.binDir, tool) : tool;
  return { file, args: [...toolArgs], env };
}
