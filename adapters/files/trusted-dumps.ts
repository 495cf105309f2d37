import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isDumpName, rowCountsFileName, stampOfName } from '../../core/dump-names.js';
import { readRegular, rowsAuthentic, verifyDumpTag } from './provenance.js';
import type { RowCounts, TableDigests } from '../../core/reports.js';
import { readChecksumFile } from './checksums.js';
import { notRegular } from './fs-safe.js';
import { validDigests } from '../postgres/table-digests.js';

// Which of the dumps in a folder are ours, and which one is "latest". The staging dir is trusted
// only as far as its files prove themselves: a regular file (never a symlink, never a directory
// named like a dump), a well-formed .sha256, and a provenance tag that verifies with the worker's
// key. "latest" (restore, drill, status) is the newest such dump that is not stamped in the
// future (a clock that ran ahead) and not flagged as shrunk (tables emptied, assets dropped).

export interface Skipped {
  file: string;
  reason: string;
}

export interface TrustedDump {
  file: string;
  sha256: string;
}

/** Our dumps in dir whose tag verifies, oldest first, and what was passed over (with why). */
export async function authenticDumps(dir: string, key: Buffer, isName: (name: string) => boolean = isDumpName): Promise<{ dumps: TrustedDump[]; skipped: Skipped[] }> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter(isName).sort();
  const dumps: TrustedDump[] = [];
  const skipped: Skipped[] = [];
  for (const file of names) {
    const st = await lstat(join(dir, file)).catch(() => undefined);
    if (!st) continue;
    if (!st.isFile()) {
      skipped.push({ file, reason: `${notRegular(st)} named like a dump: ignored (never followed); remove it` });
      continue;
    }
    const sha256 = await readChecksumFile(join(dir, `${file}.sha256`));
    if (!/^[0-9a-f]{64}$/.test(sha256)) continue; // not validated (yet): nothing claims it is ours
    try {
      await verifyDumpTag(key, dir, file, sha256, 'ignored');
    } catch (err) {
      skipped.push({ file, reason: (err as Error).message });
      continue;
    }
    dumps.push({ file, sha256 });
  }
  return { dumps, skipped };
}

export interface RecordedRows {
  tables: RowCounts;
  immichVersion?: string;
  /** Set at backup time when the counts dropped sharply against the previous dump: kept, never "latest". */
  shrink?: string;
  /** Each table's data digest, taken from the dump's own stream (absent for dumps made before digests). */
  digests?: TableDigests;
  /** Recorded by a version that always takes digests: without `digests`, they went missing (the drill fails). */
  digestsExpected?: true;
}

const IMMICH_VERSION_FORMAT = /^\d+\.\d+\.\d+$/;

/** The row counts recorded beside a dump, only when their tag verifies and every value is well-formed. */
export async function authenticRows(dir: string, file: string, key: Buffer): Promise<RecordedRows | undefined> {
  const bytes = await readRegular(join(dir, rowCountsFileName(file)));
  if (!bytes || !(await rowsAuthentic(key, dir, file, bytes))) return undefined;
  let parsed: { tables?: unknown; immichVersion?: unknown; shrink?: unknown; digests?: unknown; digestsExpected?: unknown };
  try {
    parsed = JSON.parse(bytes.toString('utf8')) as typeof parsed;
  } catch {
    return undefined;
  }
  if (typeof parsed.tables !== 'object' || parsed.tables === null) return undefined;
  const tables = Object.entries(parsed.tables as Record<string, unknown>);
  if (!tables.every(([t, n]) => /^[A-Za-z0-9_$.-]+: \S+$/.test(t) && Number.isSafeInteger(n) && (n as number) >= 0)) return undefined;
  const digests = parsed.digests === undefined ? undefined : validDigests(parsed.digests);
  if (parsed.digests !== undefined && !digests) return undefined;
  return {
    tables: Object.fromEntries(tables) as RowCounts,
    ...(digests ? { digests } : {}),
    ...(parsed.digestsExpected === true ? { digestsExpected: true as const } : {}),
    ...(typeof parsed.immichVersion === 'string' && IMMICH_VERSION_FORMAT.test(parsed.immichVersion) ? { immichVersion: parsed.immichVersion } : {}),
    ...(typeof parsed.shrink === 'string' ? { shrink: parsed.shrink.slice(0, 500) } : {}),
  };
}

/** A dump stamped further ahead than this is from a clock that ran ahead. */
export function futureStamped(file: string, nowMs: number, maxFutureMinutes: number): boolean {
  const stamp = stampOfName(file);
  return !!stamp && stamp.getTime() > nowMs + maxFutureMinutes * 60_000;
}

/**
 * Why `current` looks like a database that lost its data against `previous`: tables that had rows
 * and have none, or the assets table down by more than `maxDrop` (a share). undefined: it does not.
 */
export function shrinkOf(previous: RowCounts, current: RowCounts, maxDrop: number): string | undefined {
  const emptied = Object.entries(previous).filter(([t, n]) => n > 0 && current[t] === 0).map(([t]) => t);
  const reasons: string[] = [];
  if (emptied.length) reasons.push(`${emptied.length} table(s) emptied (${emptied.slice(0, 5).join(', ')}${emptied.length > 5 ? ', …' : ''})`);
  for (const [table, before] of Object.entries(previous)) {
    if (!/: public\.assets?$/.test(table) || before === 0 || emptied.includes(table)) continue;
    const after = current[table] ?? 0;
    if ((before - after) / before > maxDrop) reasons.push(`${table} down from ${before} to ${after} rows (more than ${Math.round(maxDrop * 100)}%)`);
  }
  const lost = Object.keys(previous).filter((t) => previous[t]! > 0 && !(t in current));
  if (lost.length) reasons.push(`${lost.length} table(s) gone (${lost.slice(0, 5).join(', ')}${lost.length > 5 ? ', …' : ''})`);
  return reasons.length ? reasons.join('; ') : undefined;
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
export async function latestUsable(dir: string, key: Buffer, nowMs: number, maxFutureMinutes: number, needRows = false): Promise<Latest> {
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

/** Tables, rows, databases and Immich version of authentic row counts, for `dumps` and the approval. */
export function rowFacts(rows: RecordedRows | undefined): { databases?: string[]; tables?: number; rows?: number; immichVersion?: string } {
  if (!rows) return {};
  const counts = Object.entries(rows.tables);
  return {
    databases: [...new Set(counts.map(([t]) => t.split(':')[0]!))].sort(),
    tables: counts.length,
    rows: counts.reduce((a, [, n]) => a + n, 0),
    ...(rows.immichVersion ? { immichVersion: rows.immichVersion } : {}),
  };
}
