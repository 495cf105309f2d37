#!/usr/bin/env node
import { Command, Option } from 'commander';
import { runBackupWorker } from '../workers/worker.js';
import type { NightlyDbBackup, NightlyDbBackupReport } from '../workflows/index.js';
import { connectClient, follow, temporalAddress, type Progress } from './client.js';
import { loadConfig, redactConfig, type Config } from './config.js';
import { findTemporalBinary, startDevServer } from './dev-server.js';
import { ConfigError } from './errors.js';
import { formatBytes } from './format.js';
import { runId, WORKFLOW_KINDS } from './ids.js';
import { createLogger } from './logger.js';

const program = new Command('immich-backup')
  .description('Durable, verifiable, restorable backups of a self-hosted Immich server, run as Temporal workflows.')
  .addOption(new Option('-c, --config <file>', 'YAML config file').env('IMMICH_BACKUP_CONFIG'))
  .showHelpAfterError()
  .configureOutput({ outputError: (text, write) => write(text) });

/** Parsed once per command, before anything connects: a bad config fails here. */
function configOf(cmd: Command): Config {
  return loadConfig({ path: cmd.optsWithGlobals<{ config?: string }>().config });
}

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
      await runBackupWorker({ config, logger, address });
    } finally {
      await stopServer?.();
    }
  });

program
  .command('worker')
  .description('Run the worker against temporal.address (default: the embedded dev server\'s address)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(cmd);
    await runBackupWorker({ config, logger: createLogger({ level: config.log.level }), address: temporalAddress(config) });
  });

const backup = program.command('backup').description('Start a backup now and follow it to the end');

backup
  .command('db')
  .description('Run NightlyDbBackup now: pg_dumpall + gzip into backup.dir, validate, prune; prints the report')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { json?: boolean }, cmd: Command) => {
    const config = configOf(cmd);
    const { client, connection } = await connectClient(config);
    try {
      const handle = await client.workflow.start<typeof NightlyDbBackup>('NightlyDbBackup', {
        taskQueue: config.temporal.taskQueue,
        workflowId: runId(WORKFLOW_KINDS.NightlyDbBackup, 'cli', new Date()),
        args: [{ trigger: 'cli' }],
      });
      process.stderr.write(`started ${handle.workflowId}\n`);
      const report = await follow<NightlyDbBackupReport>(handle, printProgress);
      if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      else {
        process.stdout.write(
          `backup written: ${report.path}\n` +
            `  ${formatBytes(report.bytes)} (SQL ${formatBytes(report.sqlBytes)}), sha256 ${report.sha256}\n` +
            `  from ${report.source} in ${(report.durationMs / 1000).toFixed(1)} s; pruned ${report.pruned.length} old dump(s)${report.pruned.length ? `: ${report.pruned.join(', ')}` : ''}\n`,
        );
      }
    } finally {
      await connection.close();
    }
  });

program
  .command('config')
  .description('Validate the config and print it with defaults applied (secrets redacted)')
  .option('--json', 'print as JSON')
  .action((opts: { json?: boolean }, cmd: Command) => {
    const config = redactConfig(configOf(cmd));
    process.stdout.write(opts.json ? JSON.stringify(config, null, 2) + '\n' : `config OK\n${JSON.stringify(config, null, 2)}\n`);
  });

function printProgress(progress: Progress[]): void {
  for (const p of progress) {
    const details = p.details && typeof p.details === 'object' ? Object.entries(p.details).map(([k, v]) => `${k}=${String(v)}`).join(' ') : '';
    const retry = p.attempt > 1 ? ` (attempt ${p.attempt}${p.lastFailure ? `, last: ${p.lastFailure.split('\n')[0]}` : ''})` : '';
    process.stderr.write(`… ${p.activity}${retry} ${details}\n`);
  }
}

try {
  await program.parseAsync();
} catch (err) {
  // One line, then a non-zero exit: 2 for a config the operator must fix, 1 for everything else.
  process.stderr.write(`error: ${(err as Error).message.split('\n')[0]}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
}
