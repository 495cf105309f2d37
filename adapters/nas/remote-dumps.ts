import type { Config } from '../../config/config.js';
import { checksumFileName, encryptedChecksumFileName, encryptedFileName, encryptedRowsFileName, isDumpName, tagFileName } from '../../core/dump-names.js';
import { CommandFailedError } from '../../core/errors.js';
import { runRemote } from './ssh.js';

// What the NAS holds, read only: a listing creates nothing there (only an upload makes the folder).
// A dump is there in one of two layouts: encrypted (`<X>.age`, `<X>.age.sha256`, `<X>.hmac`,
// `<X>.rows.json.age`), or plain from before encryption (`<X>`, `<X>.sha256`, `<X>.hmac`), still
// read and restored until OffsiteSync replaces it with an encrypted copy.

/**
 * `ls FLAGS -- offsite.remoteDir` on the NAS; empty when that folder does not exist (nothing was
 * uploaded yet). A read: it never creates the folder (uploads do).
 */
export async function remoteListing(offsite: Config['offsite'], flags: string, signal?: AbortSignal): Promise<string> {
  try {
    return (await runRemote(offsite, ['ls', flags, '--', offsite.remoteDir], { label: 'ssh ls', ...(signal ? { signal } : {}) })).stdout;
  } catch (err) {
    if (err instanceof CommandFailedError && /No such file or directory/.test(err.message)) return '';
    throw err;
  }
}

/** One of our dumps on the NAS, and in which layout(s) it is there (each with its checksum file, written last). */
export interface RemoteDump {
  file: string;
  /** `<X>.age` with its `<X>.age.sha256`. */
  encrypted: boolean;
  /** `<X>` with its `<X>.sha256`: a plain copy from before encryption. */
  legacy: boolean;
  /** `<X>.hmac` is there. */
  tagged: boolean;
  /** `<X>.rows.json.age` is there. */
  rows: boolean;
}

/** Our dumps among the names of a NAS listing, oldest first: each in the layout(s) it is complete in. */
export function dumpsInListing(names: Iterable<string>): RemoteDump[] {
  const all = new Set([...names].map((l) => l.trim()));
  const files = new Set<string>();
  for (const n of all) {
    if (isDumpName(n)) files.add(n);
    if (n.endsWith('.age') && isDumpName(n.slice(0, -'.age'.length))) files.add(n.slice(0, -'.age'.length));
  }
  return [...files]
    .sort()
    .map((file) => ({
      file,
      encrypted: all.has(encryptedFileName(file)) && all.has(encryptedChecksumFileName(file)),
      legacy: all.has(file) && all.has(checksumFileName(file)),
      tagged: all.has(tagFileName(file)),
      rows: all.has(encryptedRowsFileName(file)),
    }))
    .filter((d) => d.encrypted || d.legacy);
}

/** Our dumps on the NAS, in either layout, oldest first. */
export async function remoteDumps(offsite: Config['offsite'], signal?: AbortSignal): Promise<RemoteDump[]> {
  return dumpsInListing((await remoteListing(offsite, '-1A', signal)).split('\n'));
}

/** Regular files in a `ls -ln` listing (there on every NAS, busybox included), with their sizes in bytes. */
export function listingSizes(stdout: string): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 9 && fields[0]?.startsWith('-')) sizes.set(fields.slice(8).join(' '), Number(fields[4]));
  }
  return sizes;
}

/** Our dumps on the NAS, oldest first, with the size of every regular file there: one listing. */
export async function remoteDumpsSized(offsite: Config['offsite'], signal?: AbortSignal): Promise<{ dumps: RemoteDump[]; sizes: Map<string, number> }> {
  const sizes = listingSizes(await remoteListing(offsite, '-ln', signal));
  return { dumps: dumpsInListing(sizes.keys()), sizes };
}

/**
 * The lines of the tag files (`<X>.hmac`) of `dumps` matching `pattern` (an extended regular
 * expression), by dump name: one ssh command (`grep`) whatever their number. A dump without a tag
 * file, or whose tag has no such line, has no entry.
 */
export async function remoteTagLines(offsite: Config['offsite'], dumps: readonly RemoteDump[], pattern = '^(key|dump) ', signal?: AbortSignal): Promise<Map<string, string>> {
  const tagged = dumps.filter((d) => d.tagged).map((d) => `${offsite.remoteDir}/${tagFileName(d.file)}`);
  const lines = new Map<string, string>();
  if (!tagged.length) return lines;
  // grep exits 1 when no file has such a line: an answer, not a failure (reject: false).
  const { stdout } = await runRemote(offsite, ['grep', '-H', '-E', pattern, '--', ...tagged], { label: 'ssh grep', reject: false, ...(signal ? { signal } : {}) });
  for (const line of stdout.split('\n')) {
    const at = line.lastIndexOf('.hmac:');
    if (at < 0) continue;
    const file = line.slice(0, at).split('/').pop()!;
    lines.set(file, `${lines.get(file) ?? ''}${line.slice(at + '.hmac:'.length)}\n`);
  }
  return lines;
}

/** The key id (16 hex digits) each tagged dump's tag file on the NAS names, by dump name; a tag from before key fingerprints has none. */
export async function remoteTagKeys(offsite: Config['offsite'], dumps: readonly RemoteDump[], signal?: AbortSignal): Promise<Map<string, string>> {
  const keys = new Map<string, string>();
  for (const [file, text] of await remoteTagLines(offsite, dumps, '^key ', signal)) {
    const id = /^key ([0-9a-f]{16})$/m.exec(text)?.[1];
    if (id) keys.set(file, id);
  }
  return keys;
}

/** The names of our dumps on the NAS (either layout) whose checksum file is beside them (written last, after verification). */
export async function remoteDumpNames(offsite: Config['offsite'], signal?: AbortSignal): Promise<string[]> {
  return (await remoteDumps(offsite, signal)).map((d) => d.file);
}
