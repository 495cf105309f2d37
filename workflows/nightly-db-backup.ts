import { log } from '@temporalio/workflow';
import { formatStamp } from '../core/dump-names.js';
import { discovery, dumping, housekeeping, validation } from './activity-options.js';
import { trackSteps, type Steps } from './progress.js';
import { withLock } from './resource-lock.js';
import { reported } from './reporting.js';

export interface NightlyDbBackupInput {
  /** Free text recorded in the report: "schedule", "cli", ... */
  trigger?: string;
}

export interface NightlyDbBackupReport {
  file: string;
  path: string;
  bytes: number;
  sha256: string;
  /** The container dumped, or "host" for postgres.runtime: none. */
  source: string;
  startedAt: string;
  durationMs: number;
  dumpDurationMs: number;
  /** Per-table row counts written beside the dump (<dump>.rows.json) for RestoreDrill. */
  rowCounts: { tables: number; rows: number; shrink?: string };
  /** The dump's row counts dropped sharply against the previous dump: kept, never "latest", nothing older pruned. */
  flagged?: string;
  pruned: string[];
  trigger: string;
}

/** The runbook's 03:00 job: discover, dump + compress, validate, record row counts, prune (in that order, nothing pruned before a valid dump). */
export async function NightlyDbBackup(input: NightlyDbBackupInput = {}): Promise<NightlyDbBackupReport> {
  return reported('NightlyDbBackup', () => body(input), (r) => `${r.flagged ? `FLAGGED ${r.file}: ${r.flagged}; kept, not used as the latest dump, nothing older pruned. ` : ''}${r.file}: ${r.bytes} bytes, sha256 ${r.sha256}, ${r.rowCounts.tables} tables / ${r.rowCounts.rows} rows recorded, pruned ${r.pruned.length}`);
}

async function body(input: NightlyDbBackupInput): Promise<NightlyDbBackupReport> {
  const steps = trackSteps();
  // Never alongside a restore or drill of the database: a dump taken mid-restore would be a backup of half a database.
  return withLock('database', steps, () => backUp(steps, input));
}

async function backUp(steps: Steps, input: NightlyDbBackupInput): Promise<NightlyDbBackupReport> {
  // Workflow time is deterministic: the same stamp on replay, so every retry writes the same name.
  // Taken under the lock, whose grants fall in distinct seconds: two runs never share a name.
  const startedMs = Date.now();
  const stamp = formatStamp(new Date(startedMs));
  steps.set('finding the database container');
  const target = await discovery.discoverPostgresContainer();
  steps.set('dumping');
  const dump = await dumping.dumpDatabase({ target, stamp });
  steps.set('validating');
  const valid = await validation.validateDump({ file: dump.file, testedSha256: dump.sha256 });
  steps.set('recording row counts');
  const rowCounts = await validation.recordRowCounts({ target, file: dump.file });
  steps.set('pruning');
  const { pruned } = await housekeeping.pruneDumps({ keep: dump.file, nowMs: startedMs });
  steps.set('done');
  const report: NightlyDbBackupReport = {
    file: dump.file,
    path: dump.path,
    bytes: valid.bytes,
    sha256: valid.sha256,
    source: target.runtime === 'docker' ? target.container : 'host',
    startedAt: new Date(startedMs).toISOString(),
    durationMs: Date.now() - startedMs,
    dumpDurationMs: dump.durationMs,
    rowCounts: { tables: rowCounts.tables, rows: rowCounts.rows },
    ...(rowCounts.shrink ? { flagged: rowCounts.shrink } : {}),
    pruned,
    trigger: input.trigger ?? 'manual',
  };
  log.info('backup complete', { file: report.file, bytes: report.bytes, pruned: pruned.length });
  return report;
}
