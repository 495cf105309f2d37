import { log } from '@temporalio/workflow';
import { problemKey, type StatusReport } from '../core/reports.js';
import { checks } from './activity-options.js';
import { announce, reported, setOutcome } from './reporting.js';

export interface BackupHealthInput {
  trigger?: string;
}

export interface BackupHealthReport extends StatusReport {
  /** Problems new since the previous check: alarmed on in this run. */
  raised: string[];
  /** Problems the previous check had that are gone: announced as recovered. */
  cleared: string[];
  trigger: string;
}

/**
 * The dead-man's switch: the checks `status` prints, hourly. A problem (stale, missing, failed,
 * unreachable) is alarmed on once, when it first appears; its disappearance is a recovery.
 */
export async function BackupHealth(input: BackupHealthInput = {}): Promise<BackupHealthReport> {
  const report = await reported('BackupHealth', () => body(input), (r) => (r.ok ? 'all backups fresh' : `${r.problems.length} problem(s)`));
  setOutcome('BackupHealth', report.ok ? 'healthy' : 'alarm');
  return report;
}

async function body(input: BackupHealthInput): Promise<BackupHealthReport> {
  const { report, previousProblems } = await checks.checkHealth();
  const before = new Set(previousProblems.map(problemKey));
  const now = new Set(report.problems.map(problemKey));
  const raised = report.problems.filter((p) => !before.has(problemKey(p)));
  const cleared = previousProblems.filter((p) => !now.has(problemKey(p)));
  if (raised.length) {
    log.warn('backup health alarm', { raised });
    await announce('BackupHealth', 'alarm', `${raised.length} new problem(s): ${raised.join(' | ')}`);
  }
  if (cleared.length) await announce('BackupHealth', 'recovered', `resolved: ${cleared.map(problemKey).join(', ')}${report.ok ? '; all backups fresh' : ''}`);
  return { ...report, raised, cleared, trigger: input.trigger ?? 'manual' };
}
