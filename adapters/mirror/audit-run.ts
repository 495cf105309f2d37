import type { Config } from '../../config/config.js';
import { AuditReaderError, CommandFailedError } from '../../core/errors.js';
import { auditQuota, describeAudit, emptySide, type LibraryAuditReport, type PassProgress } from '../../core/library-audit-report.js';
import type { PostgresTarget } from '../../core/types.js';
import { awaitCommand, startCommand } from '../commands/run-command.js';
import { postgresCommand } from '../postgres/command.js';
import { ASSET_ID, type AuditState } from './audit-state.js';

// A LibraryAudit run's place in the pass, around the pass itself (audit-pass.ts): where a run
// begins (a new pass or the one under way, and its share of it), and how it ends (the report,
// a completed pass become the last one). The state is one snapshot: counts and the position
// always change together, so a resumed pass counts every asset exactly once.

/** How many assets Immich's database lists (the pass's size), or how many lie after `after` in id order (what the pass has left). */
export async function assetCount(config: Config, target: PostgresTarget, table: string, after?: string): Promise<number> {
  if (after !== undefined && !ASSET_ID.test(after)) throw new AuditReaderError(`expected an asset id (a uuid) to count from, found ${JSON.stringify(after)}`);
  const sql = `SELECT count(*) FROM public.${table}${after ? ` WHERE id > '${after}'::uuid` : ''}`;
  const cmd = postgresCommand(config, target, 'psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-U', config.postgres.user, '-d', config.immich.database, '-c', sql]);
  const out = String((await awaitCommand(startCommand(cmd.file, cmd.args, { label: 'psql (asset count)', env: cmd.env }), 'psql (asset count)')).stdout ?? '').trim();
  if (!/^\d+$/.test(out)) throw new CommandFailedError(`psql (asset count) answered ${JSON.stringify(out.slice(0, 80))}, not a number`);
  return Number(out);
}

const freshPass = (number: number, at: string): NonNullable<AuditState['pass']> => ({
  number,
  startedAt: at,
  covered: 0,
  bytes: 0,
  library: emptySide(),
  mirror: emptySide(),
  skipped: { notContent: 0, outsideLibrary: 0 },
});

export interface AuditRunInput {
  target: PostgresTarget;
  workflowId: string;
  /** The run's start (workflow time). */
  startedMs: number;
  /** Started by its schedule: a slice sized by passDays. Otherwise the rest of the pass. */
  scheduled: boolean;
  /** Start a new pass and cover all of it. */
  full: boolean;
}

/**
 * A new run (state.run is another run's, or none): a new pass when none is under way (or `full`),
 * then this run's share of it, set in state.run. `total`: the assets Immich lists now.
 */
export async function beginRun(config: Config, state: AuditState, input: AuditRunInput, table: string, total: number, mirrorReason: string | undefined): Promise<void> {
  const nowIso = new Date(input.startedMs).toISOString();
  if (!state.pass || input.full) state.pass = freshPass((state.pass?.number ?? state.lastPass?.number ?? 0) + 1, nowIso);
  // Counted, not derived from the total: assets deleted since the pass began must not hide the rest.
  const remaining = state.pass.after ? await assetCount(config, input.target, table, state.pass.after) : total;
  const quota = input.scheduled && !input.full
    ? auditQuota({ remaining, passStartedMs: Date.parse(state.pass.startedAt), nowMs: input.startedMs, lastRunMs: state.lastScheduledRunAt ? Date.parse(state.lastScheduledRunAt) : undefined, passDays: config.library.audit.passDays })
    : Number.MAX_SAFE_INTEGER;
  state.run = { workflowId: input.workflowId, startedAt: nowIso, scheduled: input.scheduled, quota, covered: 0, bytes: 0, passCompleted: false, ...(mirrorReason ? { mirrorReason } : {}) };
}

/**
 * The run's end, in the state (to be saved): a completed pass becomes the last pass (the next run
 * starts a new one), the run is recorded as the last run and state.run goes. Returns the report.
 */
export function finishRun(
  state: AuditState,
  end: { workflowId: string; trigger: string; total: number; startedMs: number; resumedFrom: string | undefined; invalidNote: string | undefined; mirrorOff: string | undefined },
): LibraryAuditReport {
  const run = state.run!;
  const finishedAt = new Date().toISOString();
  const pass = state.pass ?? (state.lastPass as NonNullable<AuditState['pass']>);
  const { after: _after, ...progressOnly } = pass;
  const report: LibraryAuditReport = {
    pass: { ...(progressOnly as PassProgress), completed: run.passCompleted, ...(run.passCompleted ? { completedAt: finishedAt } : {}) },
    totalAssets: end.total,
    run: { covered: run.covered, bytes: run.bytes, quota: Math.min(run.quota, end.total), durationMs: Date.now() - end.startedMs, ...(end.resumedFrom ? { resumedFrom: end.resumedFrom } : {}) },
    trigger: end.trigger,
    message: '',
  };
  if (end.mirrorOff && report.pass.mirror.ok + report.pass.mirror.missing + report.pass.mirror.mismatched === 0) report.pass.mirror.notCheckedReason = end.mirrorOff;
  report.message = `${describeAudit(report)}${end.invalidNote ? `; ${end.invalidNote}` : ''}`;
  if (run.passCompleted && state.pass) {
    state.lastPass = { ...(progressOnly as PassProgress), completedAt: finishedAt };
    delete state.pass;
  }
  state.lastRun = { workflowId: end.workflowId, startedAt: run.startedAt, finishedAt, covered: run.covered, passNumber: report.pass.number, passCompleted: run.passCompleted };
  if (run.scheduled) state.lastScheduledRunAt = run.startedAt;
  delete state.run;
  return report;
}
