import type { Command } from 'commander';
import { collectStatus } from '../../status/status.js';
import { connectClient } from '../../temporal/client.js';
import { configFileOf, configOf, warnOnConfigDrift } from '../context.js';
import { formatStatus } from '../report-text.js';

/** `status`: the one screen an operator reads, and its exit code for a monitor. */
export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('One screen: newest local dump, newest NAS copy, library mirror, schedules, last result of each workflow; exits 1 when anything is stale, missing, failed or unreachable')
    .option('--json', 'print the report as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      let connected: Awaited<ReturnType<typeof connectClient>> | undefined;
      let reason: string | undefined;
      try {
        connected = await connectClient(config);
      } catch (err) {
        reason = (err as Error).message.split('\n')[0];
      }
      // Interrupted (Ctrl-C, a timeout's SIGTERM): every check stops its commands (ssh runs in its own
      // process group, out of the terminal's reach), the rows so far are printed, and status exits.
      const interrupted = new AbortController();
      const interrupt = (signal: NodeJS.Signals) => {
        process.exitCode = signal === 'SIGINT' ? 130 : 143;
        interrupted.abort();
      };
      process.once('SIGINT', interrupt).once('SIGTERM', interrupt);
      try {
        if (connected) await warnOnConfigDrift(connected.client, config, configFileOf(cmd));
        const report = await collectStatus(config, connected?.client, Date.now(), reason, interrupted.signal);
        process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
        if (!report.ok && !interrupted.signal.aborted) process.exitCode = 1;
      } finally {
        process.off('SIGINT', interrupt).off('SIGTERM', interrupt);
        await connected?.connection.close();
      }
    });
}
