import type { Config } from '../../config/config.js';
import { checksumFileName, isDumpName } from '../../core/dump-names.js';
import { CommandFailedError } from '../../core/errors.js';
import { runRemote } from './ssh.js';

// What the NAS holds, read only: a listing creates nothing there (only an upload makes the folder).

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

/** Our dump names on the NAS that have their .sha256 beside them (written last, after verification). */
export async function remoteDumpNames(offsite: Config['offsite'], signal?: AbortSignal): Promise<string[]> {
  const names = new Set((await remoteListing(offsite, '-1A', signal)).split('\n').map((l) => l.trim()));
  return [...names].filter((n) => isDumpName(n) && names.has(checksumFileName(n)));
}
