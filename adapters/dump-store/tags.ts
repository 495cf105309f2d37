import { join } from 'node:path';
import { tagFileName } from '../../core/dump-names.js';
import { UnauthenticatedDumpError } from '../../core/errors.js';
import { readRegular, writeFileAtomic } from '../files/fs-safe.js';
import { hmac, sameHex, sha256Hex } from './key.js';
import { singleKey, vouchesFor, type TagKey, type TagKeys } from './keyring.js';

// The file that proves a dump is ours, `<dump>.hmac`, made with the current key of the keyring
// (keyring.ts): the fingerprint of that key (`key <id>`), the tag of the dump's name and sha256
// (`dump <hex>`), and once its row counts are recorded, the tag of their bytes (`rows <hex>`). A
// dump whose tag does not verify is not ours, whatever its .sha256 says (anyone who can write a
// folder can write a self-consistent .sha256). A tag from before key fingerprints has no `key`
// line: every key of the keyring is tried.

export { TAG_SUFFIX, tagFileName } from '../../core/dump-names.js';

const dumpTag = (key: Buffer, file: string, sha256: string) => hmac(key, 'immich-backup dump v1', file, sha256);
const rowsTag = (key: Buffer, file: string, rowsSha256: string) => hmac(key, 'immich-backup rows v1', file, rowsSha256);

interface Tags {
  key?: string;
  dump?: string;
  rows?: string;
}

/** A bare key (tests, the CLI's run authorization) or a keyring's tag keys. */
export type KeysLike = Buffer | TagKeys;
export const asKeys = (k: KeysLike): TagKeys => (Buffer.isBuffer(k) ? singleKey(k) : k);

export function parseTags(text: string): Tags {
  const tags: Tags = {};
  for (const line of text.split('\n')) {
    const m = /^(dump|rows) ([0-9a-f]{64})$/.exec(line) ?? /^(key) ([0-9a-f]{16})$/.exec(line);
    if (m) tags[m[1] as keyof Tags] = m[2]!;
  }
  return tags;
}

async function readTags(dir: string, file: string): Promise<Tags> {
  return parseTags((await readRegular(join(dir, tagFileName(file)), 4096))?.toString('utf8') ?? '');
}

async function writeTags(dir: string, file: string, tags: Tags): Promise<void> {
  await writeFileAtomic(join(dir, tagFileName(file)), (['key', 'dump', 'rows'] as const).filter((k) => tags[k]).map((k) => `${k} ${tags[k]}\n`).join(''));
}

/** Tags a validated dump (its name and sha256) with the current key; any earlier rows tag is dropped with it. */
export async function tagDump(keys: KeysLike, dir: string, file: string, sha256: string): Promise<void> {
  const { current } = asKeys(keys);
  await writeTags(dir, file, { key: current.id, dump: dumpTag(current.key, file, sha256) });
}

/** The keys a tag may have been made with: the one it names, or (a tag from before fingerprints) each. */
function candidates(keys: TagKeys, tags: Tags, file: string): TagKey[] {
  return (tags.key ? keys.all.filter((k) => k.id === tags.key) : keys.all).filter((k) => vouchesFor(k, file, tags.dump));
}

/** The key whose tag of this name and sha256 is the one written, if any. */
function keyOfDump(keys: TagKeys, tags: Tags, file: string, sha256: string): TagKey | undefined {
  return tags.dump ? candidates(keys, tags, file).find((k) => sameHex(tags.dump!, dumpTag(k.key, file, sha256))) : undefined;
}

/** The fingerprints of every key a host holds, for messages: `1a2b… (current), 3c4d… (retired 2026-01-02)`. */
export const fingerprints = (keys: TagKeys) => keys.all.map((k) => `${k.id}${k.id === keys.current.id ? ' (current)' : k.retired ? ` (retired ${k.retired.slice(0, 10)})` : ''}`).join(', ');

/** Why a tag does not verify, said with both fingerprints and what to do (`adopt`: the command that vouches for it); undefined when it does. */
export function tagProblem(keys: KeysLike, file: string, where: string, tagText: string, sha256: string, adopt = `immich-backup adopt ${file}`): string | undefined {
  const ks = asKeys(keys);
  const tags = parseTags(tagText);
  if (!tags.dump) return `dump ${file} ${where} has no provenance tag (${tagFileName(file)}): it was not written by this tool with this key`;
  if (keyOfDump(ks, tags, file, sha256)) return undefined;
  const named = tags.key ? ks.all.find((k) => k.id === tags.key) : undefined;
  if (tags.key && !named) {
    return `dump ${file} ${where} was tagged with key ${tags.key}, which this host does not hold (its keys: ${fingerprints(ks)}): put that key back (security.keyFile), recover the keys with the recovery code (immich-backup recover), or check the dump and vouch for it (${adopt})`;
  }
  if (named && !vouchesFor(named, file, tags.dump)) {
    return `dump ${file} ${where} is tagged with key ${named.id}, retired on ${named.retired} (after a suspected leak), and is not one of the dumps it had made by then: a retired key vouches for nothing new; check it and vouch for it (${adopt}) if you know it is yours`;
  }
  return `dump ${file} ${where}: its provenance tag does not verify with ${named ? `key ${named.id}, which it names` : `any key this host holds (${fingerprints(ks)})`} (forged, altered, renamed${named ? '' : ', or tagged with another key'})`;
}

/** The dump's tag verifies for this name and sha256; otherwise an UnauthenticatedDumpError naming the file. */
export async function verifyDumpTag(keys: KeysLike, dir: string, file: string, sha256: string, consequence = 'refusing it (nothing was changed)'): Promise<void> {
  const text = (await readRegular(join(dir, tagFileName(file)), 4096))?.toString('utf8') ?? '';
  const problem = tagProblem(keys, file, `in ${dir}`, text, sha256);
  if (problem) throw new UnauthenticatedDumpError(`${problem}; ${consequence}`);
}

/** The tag line a fetched or uploaded dump carries, checked without a folder (NAS copies). */
export function dumpTagMatches(keys: KeysLike, file: string, sha256: string, tagFileText: string): boolean {
  return !!keyOfDump(asKeys(keys), parseTags(tagFileText), file, sha256);
}

/** Adds the tag of the row counts just written (the bytes of `<dump>.rows.json`), with the key the dump's tag names. */
export async function tagRows(keys: KeysLike, dir: string, file: string, rowsBytes: string | Buffer): Promise<void> {
  const ks = asKeys(keys);
  const tags = await readTags(dir, file);
  // A tag from before fingerprints names no key: the rows are tagged with the current one (every key is tried on reading).
  const key = (tags.key && ks.all.find((k) => k.id === tags.key)) || ks.current;
  await writeTags(dir, file, { ...tags, rows: rowsTag(key.key, file, sha256Hex(rowsBytes)) });
}

/** True when the row counts file's bytes carry a valid tag (`tagText`: the tag file, when already read). */
export async function rowsAuthentic(keys: KeysLike, dir: string, file: string, rowsBytes: string | Buffer, tagText?: string): Promise<boolean> {
  const tags = tagText === undefined ? await readTags(dir, file) : parseTags(tagText);
  return !!tags.rows && candidates(asKeys(keys), tags, file).some((k) => sameHex(tags.rows!, rowsTag(k.key, file, sha256Hex(rowsBytes))));
}
