import type { Command } from 'commander';
import { parseAcceptance } from '../../adapters/mirror/library-versions.js';
import type { WorkflowType } from '../../core/ids.js';
import { configFileOf, configOf, usageCheck } from '../context.js';
import { printReport } from '../report-text.js';
import { runAndFollow } from '../run-and-follow.js';

/** `backup db|offsite|library`: start a backup now and follow it to its report. */
export function registerBackup(program: Command): void {
  const backup = program.command('backup').description('Start a backup now and follow it to the end');

  /** `backup <name>`: start the workflow now, follow it, print its report (human or --json). */
  const backupCommand = (name: string, description: string, workflowType: WorkflowType): void => {
    backup
      .command(name)
      .description(description)
      .option('--json', 'print the report as JSON')
      .action(async (opts: { json?: boolean }, cmd: Command) => {
        printReport(workflowType, await runAndFollow(configOf(cmd), configFileOf(cmd), workflowType), opts.json);
      });
  };

  backupCommand('db', 'Run NightlyDbBackup now: pg_dumpall + the configured compressor into backup.dir, validate, record row counts, prune; prints the report', 'NightlyDbBackup');
  backupCommand('offsite', 'Run OffsiteSync now: copy validated dumps the NAS lacks, verify each by sha256 there; prints the report', 'OffsiteSync');

  backup
    .command('library')
    .description('Run WeeklyLibraryMirror now: rsync the photo library to the mounted drive, keeping what it overwrites or deletes in a dated version set; prints the report')
    .option('--accept-rewrites <count:digest>', 'approve the rewritten originals a refused run found (it printed COUNT:DIGEST): this run overwrites exactly those, keeping the old versions', usageCheck(parseAcceptance))
    .option('--json', 'print the report as JSON')
    .action(async (opts: { acceptRewrites?: ReturnType<typeof parseAcceptance>; json?: boolean }, cmd: Command) => {
      const input = opts.acceptRewrites !== undefined ? { acceptRewrites: opts.acceptRewrites } : {};
      printReport('WeeklyLibraryMirror', await runAndFollow(configOf(cmd), configFileOf(cmd), 'WeeklyLibraryMirror', input), opts.json);
    });
}
