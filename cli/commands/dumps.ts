import type { Command } from 'commander';
import { openDumpStore } from '../../adapters/dump-store/index.js';
import { ageText, formatBytes } from '../../core/format.js';
import { configOf } from '../context.js';

/** `dumps`: what a restore can load, wherever it lies. */
export function registerDumps(program: Command): void {
  program
    .command('dumps')
    .description('What a restore can load: local dumps, restore points, NAS copies, Immich\'s own backups, with age, size, verified state and recorded row counts')
    .option('--json', 'print as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const catalog = await openDumpStore(configOf(cmd)).list();
      if (opts.json) return void process.stdout.write(JSON.stringify(catalog, null, 2) + '\n');
      const where = { local: 'staging dir', offsite: 'NAS', 'restore-point': 'restore point', immich: "Immich's own" } as const;
      const lines = catalog.entries.map((e) =>
        `${e.file}\n    ${where[e.origin]}; ${e.ageHours !== undefined ? `${ageText(e.ageHours * 3_600_000)} old` : 'age unknown'}; ${e.bytes !== undefined ? formatBytes(e.bytes) : 'size unknown'}; ${e.verified}` +
          `${e.tables !== undefined ? `; ${e.rows} rows in ${e.tables} tables recorded` : ''}${e.immichVersion ? `; Immich ${e.immichVersion}` : ''}\n    immich-backup ${e.restore}`,
      );
      process.stdout.write(`${lines.length ? lines.join('\n') : 'no dump found'}\n${catalog.problems.map((p) => `! ${p}\n`).join('')}`);
      if (!catalog.entries.length) process.exitCode = 1;
    });
}
