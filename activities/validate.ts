import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumFileName, DUMP_NAME_HINT, isDumpName, isRestorePointName, RESTORE_POINT_NAME_HINT, RESTORE_POINTS_DIR } from '../core/dump-names.js';
import { COMPLETION_MARKER } from '../adapters/postgres/load.js';
import { ChecksumMismatchError, DumpCorruptError, DumpIncompleteError, DumpTooSmallError, NotOurDumpError } from '../core/errors.js';
import { decodeAndHash, sha256OfFile, sqlTailSink } from '../adapters/files/checksums.js';
import { openDumpStore, readChecksumFile } from '../adapters/dump-store/index.js';
import type { ActivityDeps } from './deps.js';
import type { ValidateDumpInput, ValidatedDump } from '../core/types.js';


export function createValidateActivities({ config, logger }: ActivityDeps) {
  const store = openDumpStore(config, logger);
  return {
    /**
     * A dump counts as a backup only when it is at least backup.minBytes, its bytes match its
     * .sha256, the compressed stream decodes to the end, and the SQL ends with pg_dumpall's
     * completion marker: decoded here, unless the compressor's test passed these bytes as they
     * were written (`testedSha256`) and the file on disk still hashes to them. A dump that fails
     * is moved aside into rejected/ (kept for a look, never pruned as ours).
     */
    async validateDump({ file, testedSha256, kind = 'backup' }: ValidateDumpInput): Promise<ValidatedDump> {
      const point = kind === 'restore-point';
      if (!(point ? isRestorePointName(file) : isDumpName(file))) throw new NotOurDumpError(`refusing to validate ${JSON.stringify(file)}: not a ${point ? 'restore point' : 'dump'} name (${point ? RESTORE_POINT_NAME_HINT : DUMP_NAME_HINT})`);
      const dir = point ? join(config.backup.dir, RESTORE_POINTS_DIR) : config.backup.dir;
      try {
        const valid = await checkDump(dir, file, config.backup.minBytes, testedSha256);
        // Validated: from now on it is ours, as its tag (keyed with the worker's key) says to every reader.
        await store.seal(file, valid.sha256, dir);
        return valid;
      } catch (err) {
        if (err instanceof DumpTooSmallError || err instanceof DumpCorruptError || err instanceof DumpIncompleteError || err instanceof ChecksumMismatchError) {
          const aside = await store.setAside(file, dir);
          logger.error({ file, reason: err.message, movedTo: aside }, 'dump failed validation');
        }
        throw err;
      }
    },
  };
}

async function checkDump(dir: string, file: string, minBytes: number, testedSha256?: string): Promise<ValidatedDump> {
  const path = join(dir, file);
  const { size } = await stat(path);
  if (size < minBytes) {
    throw new DumpTooSmallError(`dump ${file} is ${size} bytes, expected at least ${minBytes}: pg_dumpall wrote almost nothing; check the database and its logs`);
  }
  const recorded = await readChecksumFile(join(dir, checksumFileName(file)));
  // The compressor's own test decoded these very bytes to their end as they were written, after
  // pg_dumpall exited 0: when the file still hashes to them, decoding it again proves nothing new.
  if (testedSha256 && recorded === testedSha256 && (await sha256OfFile(path)) === testedSha256) {
    return { file, bytes: size, sha256: testedSha256 };
  }
  const sql = sqlTailSink();
  const { sha256 } = await decodeAndHash(path, file, sql.sink, 'validating', 'the dump was cut short or the file is damaged');
  if (recorded !== sha256) {
    throw new ChecksumMismatchError(
      recorded
        ? `dump ${file} has sha256 ${sha256}, but its ${checksumFileName(file)} records ${recorded}: the file changed after it was written`
        : `dump ${file} has no readable ${checksumFileName(file)} beside it`,
    );
  }
  if (!sql.tail().includes(COMPLETION_MARKER)) {
    throw new DumpIncompleteError(`dump ${file} does not end with pg_dumpall's "${COMPLETION_MARKER}" line: the dump stopped early`);
  }
  return { file, bytes: size, sqlBytes: sql.sqlBytes(), sha256 };
}
