// LibraryAudit's report and the pure rules over it (how much a run covers, how a result reads).
// Pure: workflows, activities, `status` and the CLI import it.

/** One side (the library, or the mirror on the drive) over the assets audited so far. */
export interface SideCounts {
  ok: number;
  missing: number;
  /** The file's SHA-1 is not Immich's checksum (or it could not be read, is not a regular file, or lies off the drive). */
  mismatched: number;
  /** The side was not looked at (the drive was not mounted). */
  notChecked: number;
}

export interface SideReport extends SideCounts {
  /** The first library.audit.reportNames paths (relative to the library) of each kind. */
  names: { missing: string[]; mismatched: string[] };
  /** Why the side was not checked in this run, when it was not: "drive not mounted at /mnt/wd-backup". */
  notCheckedReason?: string;
}

export interface SkippedCounts {
  /** checksumAlgorithm is not a content SHA-1 (sha1-path: external libraries). */
  notContent: number;
  /** originalPath under none of library.containerPaths. */
  outsideLibrary: number;
}

/** One pass over every asset, in id order; it may span several runs. */
export interface PassProgress {
  number: number;
  startedAt: string;
  /** Assets covered so far in this pass (audited or skipped): each counted exactly once. */
  covered: number;
  bytes: number;
  library: SideReport;
  mirror: SideReport;
  skipped: SkippedCounts;
}

export interface LibraryAuditReport {
  /** The pass this run worked on, as it stands at the end of the run. */
  pass: PassProgress & { completed: boolean; completedAt?: string };
  /** Assets in Immich's database when the run started. */
  totalAssets: number;
  run: { covered: number; bytes: number; quota: number; durationMs: number; resumedFrom?: string };
  trigger: string;
  message: string;
}

export const emptySide = (): SideReport => ({ ok: 0, missing: 0, mismatched: 0, notChecked: 0, names: { missing: [], mismatched: [] } });

export const problemsOf = (p: Pick<PassProgress, 'library' | 'mirror'>): number => p.library.missing + p.library.mismatched + p.mirror.missing + p.mirror.mismatched;

const DAY_MS = 86_400_000;

/**
 * How many assets this run covers: the rest of the pass, spread over the runs left before the
 * pass's deadline (pass start + passDays), a run counted every `sinceLastRunMs` (the interval the
 * schedule keeps). The first run, a run with no time left, and a schedule as slow as the pass
 * cover the whole rest, so the default monthly run over a 30-day pass is always a whole pass.
 */
export function auditQuota(o: { remaining: number; passStartedMs: number; nowMs: number; lastRunMs: number | undefined; passDays: number }): number {
  // At least one: a pass with nothing left (its last assets deleted) completes by looking.
  if (o.remaining <= 0) return 1;
  if (o.lastRunMs === undefined) return o.remaining;
  const interval = o.nowMs - o.lastRunMs;
  const left = o.passStartedMs + o.passDays * DAY_MS - o.nowMs;
  if (interval <= 0) return o.remaining;
  // Rounded: a schedule that fires a little late still counts as its run, and a run with less than
  // half an interval left before the deadline finishes the pass.
  const runsLeft = Math.max(1, Math.round(left / interval));
  return Math.ceil(o.remaining / runsLeft);
}

const side = (name: string, s: SideReport): string => {
  if (s.notCheckedReason && s.ok + s.missing + s.mismatched === 0) return `${name} not checked: ${s.notCheckedReason}`;
  const parts = [`${s.ok} ok`, `${s.missing} missing`, `${s.mismatched} mismatched`];
  if (s.notChecked) parts.push(`${s.notChecked} not checked${s.notCheckedReason ? ` (${s.notCheckedReason})` : ''}`);
  return `${name} ${parts.join(', ')}`;
};

const named = (name: string, s: SideReport): string[] => [
  ...(s.missing ? [`missing on the ${name}: ${s.names.missing.join(', ')}${s.missing > s.names.missing.length ? ` and ${s.missing - s.names.missing.length} more` : ''}`] : []),
  ...(s.mismatched ? [`damaged on the ${name} (SHA-1 differs from Immich's): ${s.names.mismatched.join(', ')}${s.mismatched > s.names.mismatched.length ? ` and ${s.mismatched - s.names.mismatched.length} more` : ''}`] : []),
];

/** One line: where the pass stands and what it found. */
export function describeAudit(r: { pass: LibraryAuditReport['pass']; totalAssets?: number }): string {
  const p = r.pass;
  const where = p.completed ? `pass ${p.number} complete (${p.covered} assets)` : `pass ${p.number}: ${p.covered} ${r.totalAssets === undefined ? 'assets so far' : `of ${r.totalAssets} assets`}`;
  const skipped = p.skipped.notContent + p.skipped.outsideLibrary ? `; skipped ${p.skipped.notContent} without a content SHA-1 (external libraries), ${p.skipped.outsideLibrary} outside library.containerPaths` : '';
  return `${where}: ${side('library', p.library)}; ${side('mirror', p.mirror)}${skipped}`;
}

/** The alarm: every problem named (first names of each kind), then what to do about each kind. */
export function describeDamage(r: Pick<LibraryAuditReport, 'pass' | 'totalAssets'>): string {
  const p = r.pass;
  const found = [...named('library', p.library), ...named('mirror', p.mirror)];
  const todo = [
    ...(p.library.missing ? ['bring the library\'s missing originals back from the mirror (immich-backup restore library --missing)'] : []),
    ...(p.library.mismatched ? ['the damaged originals\' earlier content is on the mirror or in its version sets: restore those paths (restore library --path)'] : []),
    ...(p.mirror.missing ? ['copy the mirror\'s missing files again (immich-backup backup library)'] : []),
    // rsync -a skips a file whose size and time match: a damaged copy must go before it is copied again.
    ...(p.mirror.mismatched ? ['delete the damaged copies from the drive, then run immich-backup backup library'] : []),
  ];
  return `${problemsOf(p)} original(s) missing or damaged (${describeAudit(r)}): ${found.join('; ')}; to do: ${todo.join('; ')}; then check again with immich-backup audit library --full`;
}
