import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { rowCountsFileName } from '../../core/dump-names.js';
import type { RowCounts, TableDigests } from '../../core/reports.js';
import { readRegular, writeFileAtomic } from '../files/fs-safe.js';
import { hmac, sameHex, sha256Hex } from './key.js';
import { asKeys, rowsAuthentic, tagRows, verifyDumpTag, type KeysLike } from './tags.js';

// What is recorded of a dump's content, beside it: `<dump>.rows.json` (each table's row count, the
// Immich version, each table's data digest, a shrink flag), tagged in `<dump>.hmac` (tags.ts). The
// digests come from the dump writer through a hidden `.<dump>.digests` file rather than through
// workflow history (a database has hundreds of tables): it carries the dump's name and sha256 and a
// tag of its own, so only digests of this very dump, written by this tool, are taken over.

/** `<dump>.rows.json`, as written and as read back (only when its tag verifies). */
export interface RecordedRows {
  /** The dump they were recorded for (written; the tag binds the name, so it is not read back). */
  file?: string;
  /** When they were recorded (written, not read back). */
  recordedAt?: string;
  tables: RowCounts;
  /** The Immich version the database was at (its version_history), when it has one. */
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
export async function authenticRows(dir: string, file: string, key: KeysLike): Promise<RecordedRows | undefined> {
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

/**
 * Writes `<dump>.rows.json` (atomically, 0600) and tags its bytes. Every dump this version writes
 * gets digests, so the record says so (digestsExpected): a record without them is a loss, not an old dump.
 */
export async function writeRows(key: KeysLike, dir: string, file: string, { tables, immichVersion, shrink, digests }: Pick<RecordedRows, 'tables' | 'immichVersion' | 'shrink' | 'digests'>): Promise<void> {
  const record: RecordedRows = {
    file,
    recordedAt: new Date().toISOString(),
    tables,
    ...(immichVersion ? { immichVersion } : {}),
    ...(shrink ? { shrink } : {}),
    ...(digests ? { digests } : {}),
    digestsExpected: true,
  };
  const text = JSON.stringify(record, null, 1) + '\n';
  await writeFileAtomic(join(dir, rowCountsFileName(file)), text);
  await tagRows(key, dir, file, text);
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

/** `value` as table digests when every entry is a printable table key and a sha256; undefined otherwise. */
export function validDigests(value: unknown): TableDigests | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const entries = Object.entries(value as Record<string, unknown>);
  // eslint-disable-next-line no-control-regex -- a table key with a control character is refused on purpose
  const ok = entries.every(([t, d]) => t.length <= 1000 && /^[^\x00-\x1f]*: \S/.test(t) && typeof d === 'string' && /^[0-9a-f]{64}$/.test(d));
  return ok ? (Object.fromEntries(entries) as TableDigests) : undefined;
}

/** Hidden, beside the dump; removed once its digests are in the dump's .rows.json. */
export function digestsFileName(dump: string): string {
  return `.${dump}.digests`;
}

const digestsTag = (key: KeysLike, file: string, body: string) => hmac(asKeys(key).current.key, 'table-digests', file, sha256Hex(body));

/** Writes the digests of `file` (whose bytes hash to `sha256`) beside it, atomically, 0600. */
export async function writeDigestsFile(key: KeysLike, dir: string, file: string, sha256: string, tables: TableDigests): Promise<void> {
  const body = JSON.stringify({ file, sha256, tables });
  await writeFileAtomic(join(dir, digestsFileName(file)), `${body}\n${digestsTag(key, file, body)}\n`);
}

/**
 * The digests beside `file`, only when their tag verifies, they name this file, and the sha256 they
 * were taken with is the one the dump's own tag vouches for; undefined otherwise.
 */
export async function readDigestsFile(key: KeysLike, dir: string, file: string): Promise<TableDigests | undefined> {
  const text = (await readRegular(join(dir, digestsFileName(file))))?.toString('utf8');
  const [body, tag] = text?.split('\n') ?? [];
  if (!body || !tag || !sameHex(tag, digestsTag(key, file, body))) return undefined;
  const parsed = JSON.parse(body) as { file?: unknown; sha256?: unknown; tables?: unknown };
  if (parsed.file !== file || typeof parsed.sha256 !== 'string') return undefined;
  // An earlier attempt's digests stay beside a dump that another attempt wrote: the tag decides.
  if (!(await verifyDumpTag(key, dir, file, parsed.sha256).then(() => true, () => false))) return undefined;
  return validDigests(parsed.tables);
}

export async function removeDigestsFile(dir: string, file: string): Promise<void> {
  await rm(join(dir, digestsFileName(file)), { force: true });
}
