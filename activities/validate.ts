import { mkdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { checksumFileName, isDumpName } from '../src/dump-names.js';
import { ChecksumMismatchError, DumpCorruptError, DumpIncompleteError, DumpTooSmallError, NotOurDumpError } from '../src/errors.js';
import { gunzipAndHash, readChecksumFile } from './checksums.js';
import type { ActivityDeps } from './deps.js';
import type { ValidateDumpInput, ValidatedDump } from './types.js';

/** pg_dumpall's last comment; its absence means the dump stopped early. */
export const COMPLETION_MARKER = 'PostgreSQL database cluster dump complete';
const TAIL_BYTES = 512;
export const REJECTED_DIR = 'rejected';

export function createValidateActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * A dump counts as a backup only when it is at least backup.minBytes, its bytes match its
     * .sha256, the gzip stream decodes to the end, and the SQL ends with pg_dumpall's completion
     * marker. A dump that fails is moved aside into rejected/ (kept for a look, never pruned as ours).
     */
    async validateDump({ file }: ValidateDumpInput): Promise<ValidatedDump> {
      if (!isDumpName(file)) throw new NotOurDumpError(`refusing to validate ${JSON.stringify(file)}: not a dump name (immich_YYYYMMDD_HHMMSS.sql.gz)`);
      const dir = config.backup.dir;
      const path = join(dir, file);
      try {
        return await checkDump(dir, file, config.backup.minBytes);
      } catch (err) {
        if (err instanceof DumpTooSmallError || err instanceof DumpCorruptError || err instanceof DumpIncompleteError || err instanceof ChecksumMismatchError) {
          const aside = join(dir, REJECTED_DIR);
          await mkdir(aside, { recursive: true, mode: 0o700 });
          await rename(path, join(aside, file));
          await rename(join(dir, checksumFileName(file)), join(aside, checksumFileName(file))).catch(() => undefined);
          logger.error({ file, reason: err.message, movedTo: aside }, 'dump failed validation');
        }
        throw err;
      }
    },
  };
}

async function checkDump(dir: string, file: string, minBytes: number): Promise<ValidatedDump> {
  const path = join(dir, file);
  const { size } = await stat(path);
  if (size < minBytes) {
    throw new DumpTooSmallError(`dump ${file} is ${size} bytes, expected at least ${minBytes}: pg_dumpall wrote almost nothing; check the database and its logs`);
  }
  const recorded = await readChecksumFile(join(dir, checksumFileName(file)));
  let sqlBytes = 0;
  let tail = Buffer.alloc(0);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      sqlBytes += chunk.length;
      tail = Buffer.concat([tail, chunk]).subarray(-TAIL_BYTES);
      callback();
    },
  });
  const { sha256 } = await gunzipAndHash(path, file, sink, 'validating', 'the dump was cut short or the file is damaged');
  if (recorded !== sha256) {
    throw new ChecksumMismatchError(
      recorded
        ? `dump ${file} has sha256 ${sha256}, but its ${checksumFileName(file)} records ${recorded}: the file changed after it was written`
        : `dump ${file} has no readable ${checksumFileName(file)} beside it`,
    );
  }
  if (!tail.toString('utf8').includes(COMPLETION_MARKER)) {
    throw new DumpIncompleteError(`dump ${file} does not end with pg_dumpall's "${COMPLETION_MARKER}" line: the dump stopped early`);
  }
  return { file, bytes: size, sqlBytes, sha256 };
}
