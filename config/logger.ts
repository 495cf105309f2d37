import { pino, type Logger } from 'pino';
import { redactSecrets } from '../core/redact.js';

export type { Logger } from 'pino';

// Fields that may carry a secret wherever they appear in a log object.
const REDACT = [
  'password',
  '*.password',
  'postgres.password',
  'config.postgres.password',
  'env.PGPASSWORD',
  'PGPASSWORD',
  '*.PGPASSWORD',
  'identityFile',
  'privateKey',
];

export interface LoggerOptions {
  level?: string;
  /** 1: stdout (worker, start). Commands that print results log to stderr (2) instead. */
  fd?: 1 | 2;
}

export function createLogger({ level = 'info', fd = 1 }: LoggerOptions = {}): Logger {
  return pino(
    {
      level,
      base: { app: 'immich-backup' },
      redact: { paths: REDACT, censor: '[redacted]' },
      // The finished line, so no field escapes: messages, err.message and err.stack, the SDK's and
      // the native core's entries (an HTTP client's error names the URL it failed on, credentials and all).
      hooks: { streamWrite: redactSecrets },
    },
    // Synchronous so the last lines are written before a failing command exits.
    pino.destination({ fd, sync: true }),
  );
}
