import type { Command } from 'commander';
import { configFileOf, configOf } from '../context.js';
import { printReport } from '../report-text.js';
import { runAndFollow } from '../run-and-follow.js';

/** `audit library` and `drill`: the checks a schedule runs, started now and followed to their report. */
export function registerChecks(program: Command): void {
  program
    .command('audit')
    .description('Library checks')
    .command('library')
    .description('Run LibraryAudit now: each original Immich\'s database lists, checked on the library and the mirror against Immich\'s SHA-1; goes on with the pass under way (--full: a new whole pass); exits 1 naming missing or damaged files')
    .option('--full', 'start a new pass and check every asset')
    .option('--json', 'print the report as JSON')
    .action(async (opts: { full?: boolean; json?: boolean }, cmd: Command) => {
      printReport('LibraryAudit', await runAndFollow(configOf(cmd), configFileOf(cmd), 'LibraryAudit', opts.full ? { full: true } : {}), opts.json);
    });

  program
    .command('drill')
    .description('Run RestoreDrill now: restore the newest dump into a throwaway PostgreSQL and compare row counts with those recorded at dump time')
    .option('--json', 'print the report as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      printReport('RestoreDrill', await runAndFollow(configOf(cmd), configFileOf(cmd), 'RestoreDrill'), opts.json);
    });
}
