import { ApplicationFailure, CancellationScope, CancelledFailure, isCancellation, log, workflowInfo } from '@temporalio/workflow';
import type { DumpFormat, DumpResult, PostgresTarget, ResolvedDump, SalvageResult, VerifiedDump } from '../core/types.js';
import { formatStamp } from '../core/dump-names.js';
import { DatabaseUnreadableError, ImmichVersionMismatchError, RestoreCancelledError, RestoreFailedError, RestorePointFailedError } from '../core/errors.js';
import { innermostCause, innermostMessage } from '../core/failure.js';
import type { DumpFacts, RestorePlan } from '../core/restore-plan.js';
import { discovery, dumping, health, housekeeping, immichControl, loading, restorePrep, rollingBack, settings, validation } from './activity-options.js';
import { failWith } from './failures.js';
import { at } from './progress.js';
import { withLock } from './resource-lock.js';
import { restoreSteps, type RestoreSteps } from './restore-steps.js';
import { reported } from './reporting.js';

export interface RestoreDatabaseInput {
  /** "latest" (default), one of our dump names, a restore point's name, or one of Immich's own backups. */
  dump?: string;
  /** local (default: the staging dir, else the NAS) or offsite (fetch from the NAS). */
  from?: 'local' | 'offsite';
  dryRun?: boolean;
  /** The operator's "yes": no approval step. */
  approved?: boolean;
  /** Restore without a restore point, for a live database that cannot be dumped: no way back. */
  noRestorePoint?: boolean;
  /** The dump was made by another Immich version than the one running, and that is intended. */
  acceptVersionChange?: boolean;
  /** The start token the CLI derives from the worker's key (adapters/run-auth/tokens.ts): without it the run fails at once. */
  authorization?: string;
  trigger?: string;
}

export interface RestoreDatabaseReport {
  outcome: 'restored' | 'dry-run' | 'not-approved' | 'rejected';
  message: string;
  dump: string;
  format: DumpFormat;
  origin: ResolvedDump['origin'];
  sha256: string;
  /** What the operator was shown: age, size, databases, recorded rows, Immich version. */
  facts: DumpFacts;
  runningImmichVersion?: string;
  approvedBy?: string;
  /** Where the restore point is (a path): the live database as it was before the restore. */
  restorePoint?: string;
  /** A restore without a restore point: what could still be read of the live database first. */
  salvage?: { path: string; skippedTables: string[] };
  stoppedContainers?: string[];
  healthy?: boolean;
  health?: string;
  durations: Record<string, number>;
}

/**
 * The runbook's database restore, done right: verify before touching anything, show the operator
 * the dump and wait for approval, hold the database against backups and drills, take a restore
 * point, stop only Immich's app containers, load the dump, put the restore point back if the load
 * fails or is cancelled, start Immich and wait until it answers. Every end says the state.
 */
export async function RestoreDatabase(input: RestoreDatabaseInput = {}): Promise<RestoreDatabaseReport> {
  return reported('RestoreDatabase', () => body(input), (r) => r.message);
}

/** A cancelled restore ends failed with the state it left, so the end says it. */
function cancelled(step: string, state: string): ApplicationFailure {
  return failWith(RestoreCancelledError, `restore cancelled while ${step}: ${state}`);
}

async function body(input: RestoreDatabaseInput): Promise<RestoreDatabaseReport> {
  const r = restoreSteps(input.approved === true, 'RestoreDatabase');
  const { timed } = r;
  const withPoint = input.noRestorePoint !== true;
  // Until the lock is held and Immich stopped, nothing changes: a cancellation here says so.
  try {
    await r.authorize(input);
    const config = await settings.restoreSettings();
    const dump = await timed('resolving dump', () => restorePrep.resolveDump({ dump: input.dump ?? 'latest', from: input.from ?? 'local' }));
    const verified = await timed('verifying dump', () => restorePrep.verifyDumpForRestore(dump));
    const target = await timed('finding the database container', () => discovery.discoverPostgresContainer());
    const [facts, running] = await timed('reading what the dump holds', () => Promise.all([restorePrep.describeDump({ dump, verified }), discovery.runningImmichVersion({ target })]));
    const versionChange = facts.immichVersion !== undefined && running !== undefined && facts.immichVersion !== running;
    const what = dump.format === 'cluster' ? 'every database and role (pg_dumpall)' : `the ${config.immichDatabase} database (Immich's own backup)`;
    const plan: RestorePlan = {
      workflowId: workflowInfo().workflowId,
      what: 'database',
      dump: facts,
      ...(running ? { runningImmichVersion: running } : {}),
      versionChange,
      restorePoint: withPoint,
      steps: [
        'wait for the database: no backup or drill runs meanwhile',
        withPoint ? 'take a restore point of the live database (nothing changes if that fails)' : 'save a partial salvage of what the live database still holds (no restore point)',
        `stop ${'Immich'}'s app containers (PostgreSQL keeps running)`,
        `replace ${what} with ${dump.file}`,
        withPoint ? 'on failure or cancellation: load the restore point back' : 'on failure or cancellation: NO way back',
        'start Immich and wait until it answers',
      ],
      deadline: at(Date.now() + config.approvalTimeoutMs),
    };
    const base = { dump: dump.file, format: dump.format, origin: dump.origin, sha256: verified.sha256, facts, ...(running ? { runningImmichVersion: running } : {}), durations: r.durations };

    if (input.dryRun) {
      r.done();
      return { ...base, outcome: 'dry-run', message: `dry run: ${dump.file} verified (${facts.rows !== undefined ? `${facts.rows} rows in ${facts.tables} tables recorded` : 'row counts not recorded'}); a restore would ${plan.steps.slice(1, 4).join(', ')}; nothing was changed` };
    }
    if (versionChange && input.approved && !input.acceptVersionChange) {
      throw failWith(ImmichVersionMismatchError, `nothing was changed: ${dump.file} was made with Immich ${facts.immichVersion}, Immich ${running} runs now; start the restore again with --accept-version-change if that is intended`);
    }
    const decision = await r.approval(plan, config.approvalTimeoutMs);
    if (!decision.approved) {
      r.done();
      if ('timedOut' in decision) return { ...base, outcome: 'not-approved', message: `no approval within ${Math.round(config.approvalTimeoutMs / 60_000)} min: nothing was changed` };
      return { ...base, outcome: 'rejected', message: `rejected by ${decision.by} (${decision.reason}): nothing was changed` };
    }
    return await withLock('database', r.steps, () => replace(r, target, dump, verified, withPoint, base, decision.by));
  } catch (err) {
    if (isCancellation(err)) throw cancelled(r.steps.current(), 'nothing was changed');
    throw err;
  }
}

async function replace(
  r: RestoreSteps,
  target: PostgresTarget,
  dump: ResolvedDump,
  verified: VerifiedDump,
  withPoint: boolean,
  base: Omit<RestoreDatabaseReport, 'outcome' | 'message'>,
  approvedBy: string,
): Promise<RestoreDatabaseReport> {
  const { timed } = r;
  const stamp = formatStamp(new Date(Date.now()));
  let point: DumpResult | undefined;
  let salvage: SalvageResult | undefined;
  let salvageFailure: string | undefined;
  // Approved, but not held until now: a backup's pruning (or Immich's) may have removed or replaced
  // the file meanwhile. Checked again under the lock, before anything is taken or stopped.
  await timed('checking the dump again', () => restorePrep.recheckDump({ path: dump.path, file: dump.file, sha256: verified.sha256, origin: dump.origin }));
  if (withPoint) {
    try {
      point = await timed('taking a restore point', async () => {
        const made = await dumping.dumpDatabase({ target, stamp, kind: 'restore-point' });
        await validation.validateDump({ file: made.file, testedSha256: made.sha256, kind: 'restore-point' });
        return made;
      });
    } catch (err) {
      if (isCancellation(err)) throw err;
      // Only a database pg_dump cannot read is a reason to go on without a way back; anything else is fixed and retried.
      const unreadable = (innermostCause(err) as { type?: string }).type === DatabaseUnreadableError.name;
      const forward = unreadable
        ? `To restore ${dump.file} over the live database anyway, with no way back: immich-backup restore db --dump ${dump.file} --no-restore-point`
        : 'Fix that and run the restore again';
      throw failWith(RestorePointFailedError, `nothing was changed: no restore point could be taken (${innermostMessage(err)}). ${forward}`);
    }
    // Row counts describe it in `dumps`; without them the restore point is still whole.
    await validation.recordRowCounts({ target, file: point.file, kind: 'restore-point' }).catch((err: unknown) => {
      if (isCancellation(err)) throw err;
      log.warn('row counts of the restore point not recorded', { reason: innermostMessage(err) });
    });
  } else {
    try {
      salvage = await timed('saving a partial salvage', () => dumping.salvageDatabase({ target, stamp }));
    } catch (err) {
      if (isCancellation(err)) throw err;
      salvageFailure = innermostMessage(err);
      log.error('no partial salvage could be saved; restoring without one, as approved', { reason: salvageFailure });
    }
  }
  let loadStarted = false;
  let failure: string | undefined;
  let cancelledAt: string | undefined;
  let stopped: string[] = [];
  try {
    stopped = await timed('stopping Immich', () => immichControl.stopImmich());
    // A cancellation that came with the stop's end never reaches psql: the database is untouched.
    if (CancellationScope.current().consideredCancelled) throw new CancelledFailure('cancelled before the load');
    loadStarted = true;
    await timed('restoring', () => loading.restoreDump({ dump, target, sha256: verified.sha256 }));
  } catch (err) {
    if (isCancellation(err)) cancelledAt = r.steps.current();
    else failure = innermostMessage(err);
  }

  // Whatever happened, in a scope cancellation cannot reach: the database back to a known state, Immich started.
  const { state, healthResult } = await CancellationScope.nonCancellable(async () => {
    let state = `the database holds ${dump.file}`;
    if (failure !== undefined || cancelledAt !== undefined) {
      if (!loadStarted) state = 'the database was not touched';
      else if (point) {
        const p = point;
        log.error('restore did not finish; loading the restore point back', { reason: failure ?? `cancelled while ${cancelledAt}` });
        try {
          await timed('rolling back to the restore point', () => rollingBack.restoreDump({ dump: { file: p.file, path: p.path, format: 'cluster', origin: 'restore-point' }, target, sha256: p.sha256 }));
          state = `the restore point ${p.path} was put back`;
        } catch (err) {
          state = `ROLLING BACK FAILED (${innermostMessage(err)}): the database is in an unknown state; load the restore point: immich-backup restore db --dump ${p.file} --yes`;
        }
      } else {
        state = `the database is partly loaded from ${dump.file} and there is no restore point${salvage ? ` (the partial salvage is ${salvage.path})` : ''}: restore a dump again with --no-restore-point`;
      }
    }
    let healthResult: { healthy: boolean; detail: string };
    try {
      await timed('starting Immich', () => immichControl.startImmich());
      healthResult = await timed('waiting for Immich', () => health.waitForImmich());
    } catch (err) {
      healthResult = { healthy: false, detail: `starting it failed: ${innermostMessage(err)}; start it by hand (docker compose up -d)` };
    }
    return { state, healthResult };
  });
  const immich = healthResult.healthy ? 'Immich started (healthy)' : `Immich NOT healthy: ${healthResult.detail}`;
  if (cancelledAt !== undefined) throw cancelled(cancelledAt, `${state}; ${immich}`);
  if (failure !== undefined) throw failWith(RestoreFailedError, `restore of ${dump.file} failed (${failure}); ${state}; ${immich}`);
  if (point) {
    // Old restore points go only after the restore succeeded, and never the one just loaded.
    const keep = [point.file, ...(dump.origin === 'restore-point' ? [dump.file] : [])];
    await timed('pruning old restore points', () => housekeeping.pruneRestorePoints({ keep })).catch((err: unknown) => {
      log.warn('old restore points not pruned', { reason: innermostMessage(err) });
    });
  }
  r.done();
  const noPoint = withPoint ? '' : `; there was no restore point${salvage ? `, the partial salvage is ${salvage.path}${salvage.skippedTables.length ? ` (without the data of ${salvage.skippedTables.join(', ')})` : ''}` : `, and no partial salvage could be saved (${salvageFailure})`}`;
  return {
    ...base,
    outcome: 'restored',
    message: `restored ${dump.file} (sha256 ${verified.sha256}); ${healthResult.healthy ? 'Immich is healthy' : 'Immich did NOT become healthy'}: ${healthResult.detail}${point ? `; the restore point is ${point.path}` : noPoint}`,
    approvedBy,
    ...(point ? { restorePoint: point.path } : {}),
    ...(salvage ? { salvage: { path: salvage.path, skippedTables: salvage.skippedTables } } : {}),
    stoppedContainers: stopped,
    healthy: healthResult.healthy,
    health: healthResult.detail,
  };
}
