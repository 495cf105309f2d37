import type { Config } from '../config/config.js';
import type { Logger } from '../config/logger.js';

/** What every activity factory receives: config parsed once at start-up, and the process logger. */
export interface ActivityDeps {
  config: Config;
  logger: Logger;
}
