import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { PostgresTarget } from '../../core/types.js';

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
