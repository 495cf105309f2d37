import type { WorkflowType } from '../core/ids.js';
import { describeOffsiteDrill, type StatusReport } from '../core/reports.js';
import { describeDump } from '../core/restore-plan.js';
import { formatBytes } from '../core/format.js';
import type { LibraryOffsiteResult } from '../core/types.js';
import type { LibraryAuditReport, NightlyDbBackupReport, OffsiteSyncReport, RestoreDatabaseReport, RestoreDrillReport, RestoreLibraryReport, WeeklyLibraryMirrorReport } from '../workflows/index.js';

// What the CLI prints of a finished run and of `status`: the formatting, apart from the commands.

/** A report for a person, and whether it means the command failed: one per workflow, shared by its command, `rerun` and `follow`. */
interface ReportView<R> {
  human(report: R): string;
  failed?(report: R): boolean;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
/** A restore that did not happen, or an Immich that did not come back, is not a success. */
/** The library's NAS copy beyond rsync's fields (restic runs): the snapshot, what was checked, a plaintext copy still there. */
const nasCopyText = (o: LibraryOffsiteResult) =>
  (o.snapshot ? `, encrypted snapshot ${o.snapshot} (checked: ${o.checked ?? 'no'})${o.prunedVersionSets.length ? `; forgot ${o.prunedVersionSets.length} old snapshot(s)` : ''}` : '') +
  (o.plaintextCopy ? `\n  ! the NAS still holds a PLAINTEXT copy from before: ${o.plaintextCopy.join('; ')}: remove it by hand` : '');

const restoreFailed = (r: { outcome?: string; healthy?: boolean }) => r.outcome === 'not-approved' || r.outcome === 'rejected' || r.healthy === false;

const REPORT_VIEWS: { [T in WorkflowType]?: ReportView<never> } = {
  NightlyDbBackup: {
    human: (r: NightlyDbBackupReport) =>
      `backup written: ${r.path}\n` +
      `  ${formatBytes(r.bytes)}, sha256 ${r.sha256}\n` +
      `  from ${r.source} in ${seconds(r.durationMs)}; row counts of ${r.rowCounts.tables} tables recorded (${r.rowCounts.rows} rows)\n` +
      `  pruned ${r.pruned.length} old dump(s)${r.pruned.length ? `: ${r.pruned.join(', ')}` : ''}`,
  },
  OffsiteSync: {
    human: (r: OffsiteSyncReport) =>
      `${r.message}\n` +
      (r.copied.length ? `  copied ${r.copied.join(', ')} (${formatBytes(r.bytesCopied)}) by ${r.method}\n` : '') +
      (r.prunedRemote.length ? `  pruned on the NAS: ${r.prunedRemote.join(', ')}\n` : '') +
      `  in ${seconds(r.durationMs)}`,
  },
  WeeklyLibraryMirror: {
    human: (r: WeeklyLibraryMirrorReport) => {
      const v = r.versioning;
      return (
        `library mirrored: ${r.filesTransferred} file(s), ${formatBytes(r.bytesTransferred)} transferred, ${r.deleted} deleted\n` +
        `  library holds ${r.sourceFiles} file(s); in ${seconds(r.durationMs)}` +
        (v
          ? `\n  ${v.versioned} file(s) overwritten or deleted on the mirror kept in version set ${v.versionSet}` +
            (v.rewrites.count ? `\n  ! ${v.rewrites.count} original(s) changed content in the library${v.accepted ? ' (approved)' : ''}: ${v.rewrites.first.join(', ')}${v.rewrites.count > v.rewrites.first.length ? ', …' : ''}` : '') +
            `\n  pairs with ${v.pairedDump ?? 'no valid dump'}${r.prunedVersionSets?.length ? `; pruned version sets ${r.prunedVersionSets.join(', ')}` : ''}`
          : '') +
        (r.offsite ? `\n  NAS copy: ${r.offsite.filesTransferred} file(s), ${formatBytes(r.offsite.bytesTransferred)} to ${r.offsite.destination}${nasCopyText(r.offsite)}` : '')
      );
    },
  },
  RestoreDatabase: {
    human: (r: RestoreDatabaseReport) =>
      `${r.message}\n${describeDump(r.facts, Date.now()).map((l) => `  ${l}`).join('\n')}` +
      (r.restorePoint ? `\n  restore point: ${r.restorePoint}` : '') +
      (r.salvage ? `\n  partial salvage: ${r.salvage.path}` : ''),
    failed: restoreFailed,
  },
  RestoreLibrary: {
    human: (r: RestoreLibraryReport) => {
      const sel = r.selection;
      const listed = sel ? [...sel.first, ...(r.filesTransferred > sel.first.length ? [`… and ${r.filesTransferred - sel.first.length} more`] : []), ...sel.notFoundFirst.map((f) => `NOT FOUND: ${f}`)] : [];
      return [r.message, ...listed.map((l) => `  ${l}`)].join('\n');
    },
    // Originals found nowhere are a loss, even when the rest came back.
    failed: (r: RestoreLibraryReport) => restoreFailed(r) || (r.selection?.notFound ?? 0) > 0,
  },
  LibraryAudit: {
    human: (r: LibraryAuditReport) => `library audit: ${r.message}\n  this run: ${r.run.covered} assets, ${formatBytes(r.run.bytes)} read in ${seconds(r.run.durationMs)}`,
  },
  RestoreDrill: {
    human: (r: RestoreDrillReport) => `restore drill passed: ${r.dump} restored into a throwaway PostgreSQL ${r.postgresVersion} in ${seconds(r.loadMs)}\n  ${r.tables} tables, ${r.rows} rows, every count as recorded at dump time${r.offsite ? `\n  ${describeOffsiteDrill(r.offsite)} (${seconds(r.offsite.durationMs)})` : ''}`,
  },
};

/** A run's report on stdout: as its own command prints it (JSON with --json); exit 1 when it says the run did not do its job. */
export function printReport(workflowType: string, report: unknown, json?: boolean): void {
  const view = REPORT_VIEWS[workflowType as WorkflowType] as ReportView<unknown> | undefined;
  const message = (report as { message?: unknown } | undefined)?.message;
  const human = () => (view ? view.human(report) : typeof message === 'string' ? message : `${workflowType} completed`);
  process.stdout.write(`${json ? JSON.stringify(report ?? null, null, 2) : human()}\n`);
  if (view?.failed?.(report)) process.exitCode = 1;
}

export function formatStatus(report: StatusReport): string {
  const width = Math.max(...report.rows.map((r) => r.id.length));
  const head = report.ok ? 'OK: every backup is fresh and verified' : `${report.problems.length} PROBLEM(S)`;
  const lines = report.rows.map((r) => `${r.problem ? '!' : ' '} ${r.state.padEnd(11)} ${r.id.padEnd(width)}  ${r.summary}`);
  return `immich-backup status at ${report.checkedAt}: ${head}\n${lines.join('\n')}\n`;
}
