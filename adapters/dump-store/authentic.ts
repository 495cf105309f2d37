import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumFileName, isDumpName, stampOfName } from '../../core/dump-names.js';
import { notRegular, readRegular } from '../files/fs-safe.js';
import { authenticRows, type RecordedRows } from './rows.js';
import { verifyDumpTag, type KeysLike } from './tags.js';

// Which of the dumps in a folder are ours, and which one is "latest". The staging dir is trusted
// only as far as its files prove themselves: a regular file (never a symlink, never a directory
// named like a dump), a well-formed .sha256, and a provenance tag that verifies with the worker's
// key. "latest" (restore, drill, status, the mirror's pairing) is the newest such dump that is not
// stamped in the future (a clock that ran ahead) and not flagged as shrunk (tables emptied, assets dropped).

/** The hex digest a .sha256 file records (sha256sum format), or '' when it is missing or unreadable. */
export async function readChecksumFile(path: string): Promise<string> {
  return (await readRegular(path, 4096))?.toString('utf8').split(/\s+/)[0] ?? '';
}

/** One file named like a dump, as far as it proves itself. */
export type Scanned = { file: string } & (
  | { state: 'not-regular'; what: string }
  | { state: 'unvalidated'; bytes: number }
  | { state: 'unchecked'; bytes: number; sha256: string }
  | { state: 'refused'; bytes: number; sha256: string; reason: string }
  | { state: 'authentic'; bytes: number; sha256: string }
);

/**
 * Every file in dir whose name passes isName, oldest first: lstat (never followed), its .sha256,
 * its tag (a refusal's message ends with `consequence`). `key` is asked for only when there is a
 * file to check; without one (undefined) a validated dump stays 'unchecked'. The one loop every
 * reader of a folder of dumps goes through (the catalog, "latest", restore, prune, offsite).
 */
export async function scanDumps(dir: string, isName: (name: string) => boolean, key: () => Promise<KeysLike | undefined>, consequence: string): Promise<Scanned[]> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter(isName).sort();
  if (!names.length) return [];
  const k = await key();
  const scanned: Scanned[] = [];
  for (const file of names) {
    const st = await lstat(join(dir, file)).catch(() => undefined);
    if (!st) continue;
    if (!st.isFile()) {
      scanned.push({ file, state: 'not-regular', what: notRegular(st) });
      continue;
    }
    const sha256 = await readChecksumFile(join(dir, checksumFileName(file)));
    // Not validated (yet): nothing claims it is ours.
    if (!/^[0-9a-f]{64}$/.test(sha256)) scanned.push({ file, state: 'unvalidated', bytes: st.size });
    else if (!k) scanned.push({ file, state: 'unchecked', bytes: st.size, sha256 });
    else {
      const reason = await verifyDumpTag(k, dir, file, sha256, consequence).then(() => undefined, (err: Error) => err.message);
      scanned.push(reason ? { file, state: 'refused', bytes: st.size, sha256, reason } : { file, state: 'authentic', bytes: st.size, sha256 });
    }
  }
  return scanned;
}

export interface Skipped {
  file: string;
  reason: string;
}

export interface TrustedDump {
  file: string;
  sha256: string;
}

/** Our dumps in dir whose tag verifies, oldest first, and what was passed over (with why). */
export async function authenticDumps(dir: string, key: KeysLike, isName: (name: string) => boolean = isDumpName): Promise<{ dumps: TrustedDump[]; skipped: Skipped[] }> {
  const dumps: TrustedDump[] = [];
  const skipped: Skipped[] = [];
  for (const d of await scanDumps(dir, isName, async () => key, 'ignored')) {
    if (d.state === 'not-regular') skipped.push({ file: d.file, reason: `${d.what} named like a dump: ignored (never followed); remove it` });
    else if (d.state === 'refused') skipped.push({ file: d.file, reason: d.reason });
    else if (d.state === 'authentic') dumps.push({ file: d.file, sha256: d.sha256 });
  }
  return { dumps, skipped };
}

/** A dump stamped further ahead than this is from a clock that ran ahead. */
export function futureStamped(file: string, nowMs: number, maxFutureMinutes: number): boolean {
  const stamp = stampOfName(file);
  return !!stamp && stamp.getTime() > nowMs + maxFutureMinutes * 60_000;
}

export interface Latest {
  dump?: TrustedDump & { rows?: RecordedRows };
  /** Newer dumps that were not taken, with why: each an alarm for status and BackupHealth. */
  passedOver: Skipped[];
}

/**
 * The newest authentic dump that is neither stamped in the future nor flagged as shrunk (with
 * needRows: nor without authentic row counts), and every newer one passed over with why.
 */
export async function latestUsable(dir: string, key: KeysLike, nowMs: number, maxFutureMinutes: number, needRows = false): Promise<Latest> {
  const { dumps, skipped } = await authenticDumps(dir, key);
  const passedOver: Skipped[] = [...skipped];
  for (const d of [...dumps].reverse()) {
    if (futureStamped(d.file, nowMs, maxFutureMinutes)) {
      passedOver.push({ file: d.file, reason: `stamped ${stampOfName(d.file)!.toISOString()}, in the future: a clock ran ahead; not used as the latest dump` });
      continue;
    }
    const rows = await authenticRows(dir, d.file, key);
    if (rows?.shrink) {
      passedOver.push({ file: d.file, reason: `flagged: ${rows.shrink}; kept, but not used as the latest dump (restore it by name if the data really went)` });
      continue;
    }
    if (needRows && !rows) {
      passedOver.push({ file: d.file, reason: 'no authentic row counts recorded' });
      continue;
    }
    return { dump: { ...d, ...(rows ? { rows } : {}) }, passedOver };
  }
  return { passedOver };
}
