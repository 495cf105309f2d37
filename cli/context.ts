import type { Client } from '@temporalio/client';
import { InvalidArgumentError, type Command } from 'commander';
import { loadConfig, type Config } from '../config/config.js';
import { connectClient } from '../temporal/client.js';
import { configDriftWarnings } from '../temporal/worker-identity.js';

// What most commands do first: read the config, check their arguments, connect to Temporal.

/** The global -c/--config, else $IMMICH_BACKUP_CONFIG (commander reads both). */
export const configFileOf = (cmd: Command): string | undefined => cmd.optsWithGlobals<{ config?: string }>().config;

/** Parsed once per command, before anything connects: a bad config fails here. */
export function configOf(cmd: Command): Config {
  return loadConfig({ path: configFileOf(cmd) });
}

/** An option or argument value the CLI refuses before it starts anything: a usage error (exit 2). */
export function usageCheck<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError(`${(err as Error).message.replace(/; nothing was started$/, '')}; nothing was started`);
    }
  };
}

export async function withClient<T>(config: Config, use: (client: Awaited<ReturnType<typeof connectClient>>['client']) => Promise<T>): Promise<T> {
  const { client, connection } = await connectClient(config);
  try {
    return await use(client);
  } finally {
    await connection.close();
  }
}

/** Says on stderr, in one line each, when a worker runs with another config than this command read (from `configFile`). Never fails the command. */
export async function warnOnConfigDrift(client: Client, config: Config, configFile: string | undefined): Promise<void> {
  // Bounded: a slow server must not hold up status, which promises each row within its own bound.
  const warnings = await client.connection.withDeadline(Date.now() + 5000, () => configDriftWarnings(client, config, configFile)).catch(() => []);
  for (const line of warnings) process.stderr.write(`${line}\n`);
}
