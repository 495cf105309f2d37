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

/** The names of our dumps on the NAS (either layout) whose checksum file is beside them (written last, after verification). */
export async function remoteDumpNames(offsite: Config['offsite'], signal?: AbortSignal): Promise<string[]> {
  return (await remoteDumps(offsite, signal)).map((d) => d.file);
}
