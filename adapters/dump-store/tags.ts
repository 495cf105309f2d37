import { join } from 'node:path';
import { UnauthenticatedDumpError } from '../../core/errors.js';
import { readRegular, writeFileAtomic } from '../files/fs-safe.js';
import { hmac, sameHex, sha256Hex } from './key.js';

// The file that proves a dump is ours, `<dump>.hmac`, made with the worker's key (key.ts): the tag
// of the dump's name and sha256 (`dump <hex>`), and once its row counts are recorded, the tag of
// their bytes (`rows <hex>`). A dump whose tag does not verify is not ours, whatever its .sha256
// says (anyone who can write a folder can write a self-consistent .sha256).

export const TAG_SUFFIX = '.hmac';
export const tagFileName = (file: string) => `${file}${TAG_SUFFIX}`;

const dumpTag = (key: Buffer, file: string, sha256: string) => hmac(key, 'immich-backup dump v1', file, sha256);
const rowsTag = (key: Buffer, file: string, rowsSha256: string) => hmac(key, 'immich-backup rows v1', file, rowsSha256);

interface Tags {
  dump?: string;
  rows?: string;
}

async function readTags(dir: string, file: string): Promise<Tags> {
  const text = (await readRegular(join(dir, tagFileName(file)), 4096))?.toString('utf8') ?? '';
  const tags: Tags = {};
  for (const line of text.split('\n')) {
    const m = /^(dump|rows) ([0-9a-f]{64})$/.exec(line);
    if (m) tags[m[1] as keyof Tags] = m[2]!;
  }
  return tags;
}

async function writeTags(dir: string, file: string, tags: Tags): Promise<void> {
  await writeFileAtomic(join(dir, tagFileName(file)), Object.entries(tags).map(([k, v]) => `${k} ${v}\n`).join(''));
}

/** Tags a validated dump (its name and sha256); any earlier rows tag is dropped with it. */
export async function tagDump(key: Buffer, dir: string, file: string, sha256: string): Promise<void> {
  await writeTags(dir, file, { dump: dumpTag(key, file, sha256) });
}

/** Adds the tag of the row counts just written (the bytes of `<dump>.rows.json`). */
export async function tagRows(key: Buffer, dir: string, file: string, rowsBytes: string | Buffer): Promise<void> {
  const tags = await readTags(dir, file);
  await writeTags(dir, file, { ...tags, rows: rowsTag(key, file, sha256Hex(rowsBytes)) });
}

/** The dump's tag verifies for this name and sha256; otherwise an UnauthenticatedDumpError naming the file. */
export async function verifyDumpTag(key: Buffer, dir: string, file: string, sha256: string, consequence = 'refusing it (nothing was changed)'): Promise<void> {
  const { dump } = await readTags(dir, file);
  if (!dump) throw new UnauthenticatedDumpError(`dump ${file} in ${dir} has no provenance tag (${tagFileName(file)}): it was not written by this tool with this key; ${consequence}`);
  if (!sameHex(dump, dumpTag(key, file, sha256))) throw new UnauthenticatedDumpError(`dump ${file} in ${dir}: its provenance tag does not verify (forged, altered, renamed, or tagged with another key); ${consequence}`);
}

/** The tag line a fetched or uploaded dump carries, checked without a folder (NAS copies). */
export function dumpTagMatches(key: Buffer, file: string, sha256: string, tagFileText: string): boolean {
  const m = /^dump ([0-9a-f]{64})$/m.exec(tagFileText);
  return !!m && sameHex(m[1]!, dumpTag(key, file, sha256));
}

/** True when the row counts file's bytes carry a valid tag. */
export async function rowsAuthentic(key: Buffer, dir: string, file: string, rowsBytes: string | Buffer): Promise<boolean> {
  const { rows } = await readTags(dir, file);
  return !!rows && sameHex(rows, rowsTag(key, file, sha256Hex(rowsBytes)));
}
