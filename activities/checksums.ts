import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { checksumFileName, isDumpName } from '../src/dump-names.js';

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
