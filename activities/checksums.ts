import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { checksumFileName, isDumpName } from '../src/dump-names.js';
import { DumpCorruptError } from '../src/errors.js';
import { formatBytes } from '../src/format.js';
import { withHeartbeats } from './run-command.js';

/** The hex digest a .sha256 file records (sha256sum format), or '' when it is missing or unreadable. */
export function readChecksumFile(path: string): Promise<string> {
  return readFile(path, 'utf8').then(
    (text) => text.split(/\s+/)[0] ?? '',
    () => '',
  );
}

export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** Our dumps in dir that carry a well-formed .sha256 (only validated dumps get one), oldest first. */
export async function checksummedDumps(dir: string): Promise<Array<{ file: string; sha256: string }>> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter(isDumpName).sort();
  const dumps: Array<{ file: string; sha256: string }> = [];
  for (const file of names) {
    const sha256 = await readChecksumFile(join(dir, checksumFileName(file)));
    if (/^[0-9a-f]{64}$/.test(sha256)) dumps.push({ file, sha256 });
  }
  return dumps;
}

/**
 * One pass over a .sql.gz: the compressed bytes are hashed while their SQL streams into `sql`,
 * with heartbeats of how far it got. A gzip stream that does not decode to its end is a
 * DumpCorruptError whose message ends with `consequence`.
 */
export async function gunzipAndHash(path: string, file: string, sql: Writable, step: string, consequence: string): Promise<{ sha256: string; size: number }> {
  const { size } = await stat(path);
  const hash = createHash('sha256');
  let read = 0;
  const source = createReadStream(path);
  source.on('data', (chunk: Buffer | string) => {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    hash.update(buf);
    read += buf.length;
  });
  try {
    await withHeartbeats(pipeline(source, createGunzip(), sql), () => ({
      step,
      file,
      checked: `${formatBytes(read)} of ${formatBytes(size)}`,
      percent: Math.floor((read / size) * 100),
    }));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (code.startsWith('Z_') || code === 'ERR_PADDING_1') {
      throw new DumpCorruptError(`dump ${file} is not a complete gzip stream (${(err as Error).message}): ${consequence}`);
    }
    throw err;
  }
  return { sha256: hash.digest('hex'), size };
}
