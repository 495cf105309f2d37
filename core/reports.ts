// The reports of RestoreDrill, `status` and BackupHealth, and the pure rules over them. Pure:
// workflows import it.

/** "database: schema.table" → rows. */
export type RowCounts = Record<string, number>;

/** "database: schema.table" → sha256 (hex) of the table's rows as the dump's COPY block holds them. */
export type TableDigests = Record<string, string>;

/** What the drill says of a dump recorded before NightlyDbBackup took table digests. */
export const CONTENT_NOT_COMPARED = 'content not compared: dump predates digests';

/** What the drill says of a dump whose row counts say digests were taken but hold none: a failure. */
export const CONTENT_DIGESTS_MISSING = 'content not compared: digests missing';

export interface TableDifference {
  table: string;
  /** undefined: the table is missing on that side. */
  recorded?: number;
  restored?: number;
}

export interface DrillResult {
  dump: string;
  /** The dump's sha256 as verified before the load (the offsite part compares the NAS copy's with it). Absent in older reports. */
  sha256?: string;
  engine: 'host' | 'container';
  /** Where the throwaway ran: "127.0.0.1:PORT, initdb from DIR" or "container NAME (IMAGE)". */
  server: string;
  postgresVersion: string;
  tables: number;
  rows: number;
  differences: TableDifference[];
  /** The first statements that failed while loading (psql's ERROR lines), at most 20 ... */
  loadErrors: string[];
  /** ... of this many. */
  loadErrorCount: number;
  /**
   * Tables whose data was compared: the throwaway re-dumped, each table's rows digested and held
   * against the digests recorded from the dump's own stream at dump time. 0 with `contentNote`
   * when the dump has none. (Absent in reports of drills before digests.)
   */
  contentCompared?: number;
  /** Every table whose re-dumped data differs from what the dump recorded (the first 100) ... */
  contentDifferences?: string[];
  /** ... of this many. */
  contentDifferenceCount?: number;
  /** Why content was not compared: CONTENT_NOT_COMPARED, or CONTENT_DIGESTS_MISSING (the drill fails). */
  contentNote?: string;
  /** What to change when the failure is the throwaway's, not the dump's (an extension the host lacks). */
  hint?: string;
  passed: boolean;
  loadMs: number;
  /** The re-dump of the throwaway, digested (absent when content was not compared). */
  redumpMs?: number;
  durationMs: number;
}

/**
 * The drill of the newest NAS copy (drill.offsiteCopy): fetched, decrypted and verified with the
 * keyring, then loaded into a throwaway and compared with its own recorded rows; or, when it is the
 * dump the local part just drilled, its plaintext's sha256 compared with the local dump's.
 */
export interface OffsiteDrill {
  /** The NAS copy (its dump's name); absent when none could be listed. */
  file?: string;
  /** The NAS: user@host:port:remoteDir. */
  where: string;
  verdict: 'passed' | 'failed';
  /** loaded: restored into a throwaway and compared; same-as-local: decrypted, and its sha256 is the local dump's, drilled just before. */
  proof?: 'loaded' | 'same-as-local';
  /** Why it failed, in one line. */
  reason?: string;
  /** The error's name when the copy could not be listed, fetched, decrypted or verified (NasUnreachableError, UnauthenticatedDumpError, …). */
  error?: string;
  /** Restored and counted (proof loaded). */
  tables?: number;
  rows?: number;
  contentCompared?: number;
  durationMs: number;
}

/** The offsite part in one line, for the summary, the alarm and `status`. */
export function describeOffsiteDrill(o: OffsiteDrill): string {
  const copy = o.file ? `the offsite copy ${o.file} on ${o.where}` : `the offsite copy on ${o.where}`;
  if (o.verdict === 'failed') return `${copy} failed: ${o.reason ?? 'no reason given'}`;
  if (o.proof === 'same-as-local') return `${copy} passed: fetched, decrypted and verified, the same bytes as the local dump drilled`;
  return `${copy} passed: fetched, decrypted, verified and restored, ${o.tables ?? 0} tables and ${o.rows ?? 0} rows as recorded${o.contentCompared ? `, the data of all ${o.contentCompared} tables as recorded` : ''}`;
}

/** Tables named in a drill report (its history entry stays small whatever the database holds). */
export const MAX_CONTENT_DIFFERENCES = 100;

/** Tables whose counts differ, or that exist on one side only. */
export function compareRowCounts(recorded: RowCounts, restored: RowCounts): TableDifference[] {
  const tables = [...new Set([...Object.keys(recorded), ...Object.keys(restored)])].sort();
  return tables
    .filter((t) => recorded[t] !== restored[t])
    .map((t) => ({ table: t, ...(t in recorded ? { recorded: recorded[t] } : {}), ...(t in restored ? { restored: restored[t] } : {}) }));
}

/** Why a drill failed, in one line: the differing tables, then the load errors. */
export function describeDrillFailure(r: Pick<DrillResult, 'differences' | 'loadErrors' | 'loadErrorCount' | 'hint' | 'contentDifferences' | 'contentDifferenceCount' | 'contentNote'>): string {
  const parts: string[] = [];
  if (r.differences.length) parts.push(`${r.differences.length} table(s) differ from the counts recorded at dump time: ${describeDifferences(r.differences)}`);
  const changed = r.contentDifferences ?? [];
  const count = r.contentDifferenceCount ?? changed.length;
  if (count) {
    const more = count - changed.length;
    parts.push(`${count} table(s) restore with other data than the dump recorded at dump time (their re-dumped rows differ): ${changed.join(', ')}${more > 0 ? `, and ${more} more` : ''}`);
  }
  if (r.contentNote === CONTENT_DIGESTS_MISSING) {
    parts.push(`its table digests were taken at dump time but are missing from its row counts (removed or altered before they were recorded), so its data could not be compared: run immich-backup backup db, then drill the new dump`);
  }
  if (r.loadErrorCount) parts.push(`${r.loadErrorCount} statement(s) failed while loading, first: ${r.loadErrors[0]}`);
  if (r.hint) parts.push(r.hint);
  return parts.join('; ');
}

export function describeDifferences(differences: TableDifference[]): string {
  const shown = differences.slice(0, 5).map((d) => `${d.table} ${d.recorded ?? 'missing'} recorded, ${d.restored ?? 'missing'} restored`);
  return shown.join('; ') + (differences.length > 5 ? `; and ${differences.length - 5} more` : '');
}

export type RowState = 'ok' | 'stale' | 'missing' | 'failed' | 'unreachable' | 'paused' | 'running' | 'never';

/** States that make `status` exit non-zero and BackupHealth alarm. */
export const PROBLEM_STATES: ReadonlySet<RowState> = new Set(['stale', 'missing', 'failed', 'unreachable']);

export interface StatusRow {
  /** local-dump, nas-copy, library-mirror, schedule:<id>, last-run:<kind>, temporal */
  id: string;
  state: RowState;
  problem: boolean;
  summary: string;
  /** Facts and IDs (workflow and run ID, status, close time), never a run's result: BackupHealth returns these rows every hour. */
  details?: Record<string, unknown>;
}

export interface StatusReport {
  checkedAt: string;
  ok: boolean;
  /** "<row id> <state>: <summary>", one per problem row. */
  problems: string[];
  rows: StatusRow[];
}

/** Problems are compared by row and state, not wording (ages change every hour): "local-dump stale". */
export function problemKey(problem: string): string {
  const [id, state] = problem.split(' ');
  return `${id} ${(state ?? '').replace(/:$/, '')}`;
}

