import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';
import type { Logger } from '../config/logger.js';

const LEVELS = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' } as const;

let installed = false;

/**
 * Sends the SDK's own logs, workflow and activity context logs, and the native core's logs into
 * our pino stream, so one JSON log holds everything. Once per process, before any worker.
 */
export function installRuntime(logger: Logger): void {
  if (installed) return;
  installed = true;
  const sdk = logger.child({ source: 'temporal' });
  Runtime.install({
    logger: new DefaultLogger('INFO', (entry: LogEntry) => {
      sdk[LEVELS[entry.level]]({ ...(entry.meta ?? {}) }, entry.message);
    }),
    telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } },
    shutdownSignals: ['SIGINT', 'SIGTERM'],
  });
}
