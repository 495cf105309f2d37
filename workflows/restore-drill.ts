import { log, patched } from '@temporalio/workflow';
import { describeDrillFailure, describeOffsiteDrill, type DrillResult, type OffsiteDrill } from '../core/reports.js';
import { DrillFailedError } from '../core/errors.js';
import { formatStamp } from '../core/dump-names.js';
import { drilling, offsiteDrilling } from './activity-options.js';
import { failWith } from './failures.js';
import { OFFSITE_DRILL_PATCH } from './patches.js';
import { trackSteps } from './progress.js';
import { withLock } from './resource-lock.js';
import { reported } from './reporting.js';

export interface RestoreDrillInput {
  trigger?: string;
}

/** `offsite`: the drill of the newest NAS copy (absent with drill.offsiteCopy off, and in runs from before it). */
export type RestoreDrillReport = DrillResult & { trigger: string; offsite?: OffsiteDrill };

/**
 * Proof that the newest backup restores: it is loaded into a throwaway PostgreSQL (never the live
 * one), every table's row count compared with what NightlyDbBackup recorded at dump time, and the
 * throwaway re-dumped so that each table's data is compared with the digest taken from the dump's
 * own stream. Then the same for the newest copy on the NAS, fetched and decrypted with the
 * keyring. Differing tables, or an offsite copy that cannot be fetched, decrypted, verified or
 * restored, fail the run (DrillFailedError, the report in its details), which alerts.
 */
export async function RestoreDrill(input: RestoreDrillInput = {}): Promise<RestoreDrillReport> {
  return reported('RestoreDrill', () => body(input), summary);
}

function summary(r: RestoreDrillReport): string {
  const local = `passed: ${r.dump} restored, ${r.tables} tables and ${r.rows} rows as recorded${r.contentNote ? `; ${r.contentNote}` : r.contentCompared ? `, the data of all ${r.contentCompared} tables as recorded` : ''}`;
  return r.offsite ? `${local}; ${describeOffsiteDrill(r.offsite)}` : local;
}

async function body(input: RestoreDrillInput): Promise<RestoreDrillReport> {
  const steps = trackSteps();
  let stamp = '';
  // The newest dump is read under the database lock: never one a restore or backup is writing.
  const result = await withLock('database', steps, () => {
    steps.set('restoring the newest dump into a throwaway PostgreSQL');
    // The stamp names a container engine's throwaway: the same on every retry of this run.
    stamp = formatStamp(new Date(Date.now())).replace('_', '-');
    return drilling.restoreDrill({ stamp });
  });
  const report: RestoreDrillReport = { ...result, trigger: input.trigger ?? 'manual' };
  // After the lock: the NAS copy is fetched into a private folder, and a slow NAS holds up no backup.
  if (patched(OFFSITE_DRILL_PATCH)) {
    steps.set('fetching, decrypting and restoring the newest NAS copy');
    const offsite = await offsiteDrilling.drillNasCopy({ stamp: `${stamp}-nas`, local: { file: result.dump, ...(result.sha256 ? { sha256: result.sha256 } : {}) } });
    if (offsite) report.offsite = offsite;
  }
  steps.set('done');
  const offsiteFailed = report.offsite?.verdict === 'failed' ? describeOffsiteDrill(report.offsite) : undefined;
  if (!report.passed) {
    throw failWith(DrillFailedError, `restore drill of ${report.dump} failed: ${describeDrillFailure(report)}${offsiteFailed ? `; and ${offsiteFailed}` : ''}`, [report]);
  }
  if (offsiteFailed) {
    throw failWith(DrillFailedError, `restore drill of the offsite copy failed: ${offsiteFailed} (the local ${report.dump} passed)`, [report]);
  }
  log.info('restore drill passed', { dump: report.dump, tables: report.tables, rows: report.rows, ...(report.offsite ? { offsite: report.offsite.file } : {}) });
  return report;
}
