import type { Command } from 'commander';
import { trustedSetup } from '../../adapters/dump-store/index.js';
import { createLogger } from '../../config/logger.js';
import { connectClient, temporalAddress } from '../../temporal/client.js';
import { findTemporalBinary, startDevServer } from '../../temporal/dev-server.js';
import { applySchedules } from '../../temporal/schedules.js';
import { runBackupWorker } from '../../workers/worker.js';
import { configFileOf, configOf } from '../context.js';

/** `start` (the embedded dev server when no address is configured, then the worker) and `worker`. */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('Run the worker; with no temporal.address configured, first start an embedded Temporal dev server (Web UI on :8233)')
    .action(async (_opts, cmd: Command) => {
      const config = configOf(cmd);
      const logger = createLogger({ level: config.log.level });
      let address = temporalAddress(config);
      let stopServer: (() => Promise<void>) | undefined;
      if (!config.temporal.address) {
        const server = await startDevServer({
          binary: findTemporalBinary(config.temporal.binary),
          ...config.temporal.devServer,
          namespace: config.temporal.namespace,
          logger,
        });
        address = server.address;
        stopServer = server.stop;
        process.stderr.write(`Temporal Web UI: ${server.uiUrl}  (server ${server.address}, state in ${server.dbFile})\n`);
      }
      try {
        if (config.schedules.applyOnStart) {
          const { client, connection } = await connectClient(config, address);
          try {
            // Schedules set no search attributes; the worker started below registers them before its first task.
            for (const s of await applySchedules(client, config)) logger.info({ schedule: s.id, action: s.action, cron: s.cron, timeZone: s.timeZone, paused: s.paused }, 'schedule applied');
          } finally {
            await connection.close();
          }
        }
        // The keys and the recovery code exist from here on; on a terminal (never into a log) the code is shown until confirmed.
        const { recovery } = await trustedSetup(config, configFileOf(cmd));
        if (!recovery.confirmed && recovery.code && process.stderr.isTTY) {
          process.stderr.write(`\nRECOVERY CODE  ${recovery.code}\n  write it down and keep it away from this host and the NAS: with it, a new host gets every key back from the NAS (immich-backup recover)\n  then confirm you hold it, in another terminal: npx immich-backup recovery-code confirm\n\n`);
        }
        await runBackupWorker({ config, logger, address, configFile: configFileOf(cmd) });
      } finally {
        await stopServer?.();
      }
    });

  program
    .command('worker')
    .description('Run the worker against temporal.address (default: the embedded dev server\'s address)')
    .action(async (_opts, cmd: Command) => {
      const config = configOf(cmd);
      await runBackupWorker({ config, logger: createLogger({ level: config.log.level }), address: temporalAddress(config), configFile: configFileOf(cmd) });
    });
}
