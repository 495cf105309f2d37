import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { PostgresTarget } from '../../core/types.js';

/**
 * How to run one PostgreSQL client tool against the database, never as root: through `docker exec
 * -i -u postgres.containerUser` (never -t: a TTY would mangle the binary stream), or on the host as
 * postgres.runAs when the worker is root. The password travels in the environment; `-e PGPASSWORD`
 * without a value makes the docker CLI forward it from its own.
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
    return { file: config.docker.command, args: ['exec', '-i', '-u', config.postgres.containerUser, ...passEnv, target.container, tool, ...toolArgs], env };
  }
  const file = config.postgres.binDir ? join(config.postgres.binDir, tool) : tool;
  if (process.getuid?.() === 0) return { file: 'runuser', args: ['-u', config.postgres.runAs, '--', file, ...toolArgs], env };
  return { file, args: [...toolArgs], env };
}
