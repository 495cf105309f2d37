import { workflowInfo } from '@temporalio/workflow';
import { LibraryDamagedError } from '../core/errors.js';
import { describeAudit, describeDamage, problemsOf, type LibraryAuditReport } from '../core/library-audit-report.js';
import { auditing, discovery } from './activity-options.js';
import { failWith } from './failures.js';
import { trackSteps } from './progress.js';
import { reported } from './reporting.js';
import { withLock } from './resource-lock.js';

export interface LibraryAuditInput {
  /** "schedule" sizes the run as a slice of the pass (library.audit.passDays); any other trigger covers the rest of the pass. */
  trigger?: string;
  /** Start a new pass and cover all of it (`audit library --full`). */
  full?: boolean;
}

export type { LibraryAuditReport } from '../core/library-audit-report.js';

/**
 * Every original Immich's database lists, checked on the library and on the mirror against
 * Immich's own SHA-1, a slice per run so that a whole pass completes within passDays. Missing or
 * damaged originals fail the run (the alarm of a failed backup), naming the first of them; the
 * report travels in the failure's details.
 */
export async function LibraryAudit(input: LibraryAuditInput = {}): Promise<LibraryAuditReport> {
  return reported('LibraryAudit', () => body(input), (r) => describeAudit(r));
}

async function body(input: LibraryAuditInput): Promise<LibraryAuditReport> {
  const steps = trackSteps();
  const trigger = input.trigger ?? 'manual';
  steps.set('finding the database container');
  const target = await discovery.discoverPostgresContainer();
  // Not the library's lock: the audit only reads, and the mirror and restores replace files by
  // rename, so a file is read whole, old or new; it may take hours, and a mirror run must not wait
  // on it. Its own lock: two audits at once would count the same assets and overwrite each
  // other's position.
  const report = await withLock('library-audit', steps, () => {
    steps.set('auditing the library');
    return auditing.auditLibrary({
      target,
      workflowId: workflowInfo().workflowId,
      startedMs: Date.now(),
      scheduled: trigger === 'schedule',
      full: input.full === true,
      trigger,
    });
  });
  steps.set('done');
  if (problemsOf(report.pass)) {
    throw failWith(LibraryDamagedError, describeDamage(report), [report]);
  }
  return report;
}
