import type { Command } from 'commander';
import { openDumpStore } from '../../adapters/dump-store/index.js';
import { UsageError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { configOf } from '../context.js';

/** `adopt <dump>`: vouch for an untagged dump in backup.dir (or on the NAS) after checking it in full. */
export function registerAdopt(program: Command): void {
  program
    .command('adopt <dump>')
    .description(
      "Vouch for a dump that has no valid provenance tag (made before tags existed, or tagged with a lost key): check it in full (stream, completion marker, strict filter, its .sha256), then tag it with the worker's key. --from offsite: the NAS copy, fetched and decrypted, becomes a local dump of ours",
    )
    .option('--from <where>', 'local (backup.dir) or offsite (the NAS copy)', 'local')
    .action((file: string, opts: { from: string }, cmd: Command) => adopt(file, opts.from, cmd));
}

/** Checks `file` in full, records its .sha256 if it has none, and tags it with the worker's key (the dump store's adopt). */
async function adopt(file: string, from: string, cmd: Command): Promise<void> {
  if (from !== 'local' && from !== 'offsite') throw new UsageError(`--from ${JSON.stringify(from)}: give local or offsite`);
  const where = from === 'offsite' ? 'the NAS copy of ' : '';
  const verified = await openDumpStore(configOf(cmd)).adopt(file, () => process.stderr.write(`checking ${where}${file} in full (${from === 'offsite' ? 'fetch, decrypt, ' : ''}decode, completion marker, strict filter) …\n`), { from });
  process.stdout.write(`adopted ${where}${file}: sha256 ${verified.sha256}, ${formatBytes(verified.bytes)}, databases ${verified.databases.join(', ') || 'unknown'}; it is a local dump tagged with the worker's key now (row counts were not recorded for it)\n`);
}
