import type { Config } from '../src/config.js';
import type { Logger } from '../src/logger.js';

/** What every activity factory receives: config parsed once at start-up, and the process logger. */
export interface ActivityDeps {
  config: Config;
  logger: Logger;
}
