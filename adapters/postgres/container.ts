import type { Config } from '../../config/config.js';
import type { Logger } from '../../config/logger.js';
import { AmbiguousContainerError, ContainerNotFoundError } from '../../core/errors.js';
import type { PostgresTarget } from '../../core/types.js';
import { runCommand } from '../commands/run-command.js';

// Where Immich's PostgreSQL runs: the one container whose name matches postgres.containerPattern,
// or this host (postgres.runtime: none). The dump and the drill (for its image) both ask here.

// Docker container names: anything else from `docker ps` is refused rather than passed on.
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The one running container whose name matches postgres.containerPattern (runbook: `immich.*postgres`). */
export async function discoverPostgresContainer(config: Config, logger: Logger): Promise<PostgresTarget> {
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
}
