import type { Command } from 'commander';
import { constants } from 'node:fs';
import { lstat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readChecksumFile } from '../../adapters/files/checksums.js';
import { readKey, tagDump } from '../../adapters/files/provenance.js';
import { checkRestorable } from '../../adapters/postgres/load.js';
import { checksumFileName, DUMP_NAME_HINT, isDumpName } from '../../core/dump-names.js';
import { ChecksumMismatchError, ConfigError, DumpNotFoundError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { configOf } from '../context.js';

/** `adopt <dump>`: vouch for an untagged dump in backup.dir after checking it in full. */
export function registerAdopt(program: Command): void {
  program
    .command('adopt <dump>')
    .description("Vouch for a dump in backup.dir that has no valid provenance tag (made before tags existed, or tagged with a lost key): check it in full (stream, completion marker, strict filter, its .sha256), then tag it with the worker's key")
    .action((file: string, _opts, cmd: Command) => adopt(file, cmd));
}

/** Checks `file` in backup.dir in full, records its .sha256 if it has none, and tags it with the worker's key. */
async function adopt(file: string, cmd: Command): Promise<void> {
  const config = configOf(cmd);
  const dir = config.backup.dir;
  if (!isDumpName(file)) throw new ConfigError(`${JSON.stringify(file)} is not a dump name (${DUMP_NAME_HINT}): give a file's name in ${dir}, not a path`);
  const key = await readKey(config.security.keyFile);
  const path = join(dir, file);
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isFile()) throw new DumpNotFoundError(`${path} is ${st ? 'not a regular file (never followed)' : 'missing'}: expected a dump file in ${dir}; nothing adopted`);
  process.stderr.write(`checking ${file} in full (decode, completion marker, strict filter) …\n`);
  const verified = await checkRestorable({ file, path, format: 'cluster' });
  const recorded = await readChecksumFile(join(dir, checksumFileName(file)));
  if (recorded && recorded !== verified.sha256) throw new ChecksumMismatchError(`${file} hashes to ${verified.sha256} but its .sha256 records ${recorded}: it changed after it was written; nothing adopted`);
  // Never through whatever sits under that name (a symlink planted there): created afresh, or refused.
  if (!recorded) await writeFile(join(dir, checksumFileName(file)), `${verified.sha256}  ${file}\n`, { mode: 0o600, flag: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW });
  await tagDump(key, dir, file, verified.sha256);
  process.stdout.write(`adopted ${file}: sha256 ${verified.sha256}, ${formatBytes(verified.bytes)}, databases ${verified.databases.join(', ') || 'unknown'}; it is tagged with the worker's key now (row counts were not recorded for it)\n`);
}
