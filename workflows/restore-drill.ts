import { log } from '@temporalio/workflow';
import { describeDrillFailure, type DrillResult } from '../core/reports.js';
import { DrillFailedError } from '../core/errors.js';
import { formatStamp } from '../core/dump-names.js';
import { drilling } from './activity-options.js';
import { failWith } from './failures.js';
import { trackSteps } from './progress.js';
import { withLock } from './resource-lock.js';
import { reported } from './reporting.js';

export interface RestoreDrillInput {
  trigger?: string;
}

export type RestoreDrillReport = DrillResult & { trigger: string };

/**
 * Proof that the newest backup restores: it is loaded into a throwaway PostgreSQL (never the live
 * one), every table's row count compared with what NightlyDbBackup recorded at dump time, and the
 * throwaway re-dumped so that each table's data is compared with the digest taken from the dump's
 * own stream. Differing tables fail the run (DrillFailedError, the report in its details), which alerts.
 */
export async function RestoreDrill(input: RestoreDrillInput = {}): Promise<RestoreDrillReport> {
  return reported('RestoreDrill', () => body(input), (r) => `passed: ${r.dump} restored, ${r.tables} tables and ${r.rows} rows as recorded${r.contentNote ? `; ${r.contentNote}` : r.contentCompared ? `, the data of all ${r.contentCompared} tables as recorded` : ''}`);
}

async function body(input: RestoreDrillInput): Promise<RestoreDrillReport> {
  const steps = trackSteps();
  // The newest dump is read under the database lock: never one a restore or backup is writing.
  const result = await withLock('database', steps, () => {
    steps.set('restoring the newest dump into a throwaway PostgreSQL');
    // The stamp names a container engine's throwaway: the same on every retry of this run.
    return drilling.restoreDrill({ stamp: formatStamp(new Date(Date.now())).replace('_', '-') });
  });
  steps.set('done');
  const report = { ...result, trigger: input.trigger ?? 'manual' };
  if (!report.passed) {
    throw failWith(DrillFailedError, `restore drill of ${report.dump} failed: ${describeDrillFailure(report)}`, [report]);
  }
  log.info('restore drill passed', { dump: report.dump, tables: report.tables, rows: report.rows });
  return report;
}
