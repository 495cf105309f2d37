import type { Command } from 'commander';
import { openDumpStore } from '../../adapters/dump-store/index.js';
import { formatBytes } from '../../core/format.js';
import { configOf } from '../context.js';

/** `adopt <dump>`: vouch for an untagged dump in backup.dir after checking it in full. */
export function registerAdopt(program: Command): void {
  program
    .command('adopt <dump>')
    .description("Vouch for a dump in backup.dir that has no valid provenance tag (made before tags existed, or tagged with a lost key): check it in full (stream, completion marker, strict filter, its .sha256), then tag it with the worker's key")
    .action((file: string, _opts, cmd: Command) => adopt(file, cmd));
}

/** Checks `file` in backup.dir in full, records its .sha256 if it has none, and tags it with the worker's key (the dump store's adopt). */
async function adopt(file: string, cmd: Command): Promise<void> {
  const verified = await openDumpStore(configOf(cmd)).adopt(file, () => process.stderr.write(`checking ${file} in full (decode, completion marker, strict filter) …\n`));
  process.stdout.write(`adopted ${file}: sha256 ${verified.sha256}, ${formatBytes(verified.bytes)}, databases ${verified.databases.join(', ') || 'unknown'}; it is tagged with the worker's key now (row counts were not recorded for it)\n`);
}
