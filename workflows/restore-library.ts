import { ApplicationFailure, CancellationScope, CancelledFailure, isCancellation, workflowInfo } from '@temporalio/workflow';
import type { MirrorResult } from '../activities/types.js';
import { RestoreCancelledError, RestoreFailedError } from '../src/errors.js';
import { innermostMessage } from '../src/failure.js';
import type { RestorePlan } from '../src/restore-plan.js';
import { health, immichControl, mirrorChecks, mirroring, settings } from './activity-options.js';
import { at } from './progress.js';
import { withLock } from './resource-lock.js';
import { restoreSteps } from './restore-steps.js';
import { reported } from './reporting.js';

export interface RestoreLibraryInput {
  /** Report what rsync would change; change nothing. */
  dryRun?: boolean;
  /** Also delete library files the mirror does not have. Off by default. */
  delete?: boolean;
  /** The operator's "yes": no approval step. */
  approved?: boolean;
  /** The start token the CLI derives from the worker's key (src/authorization.ts): without it the run fails at once. */
  authorization?: string;
  trigger?: string;
}

export interface RestoreLibraryReport {
  outcome: 'restored' | 'dry-run' | 'not-approved' | 'rejected';
  message: string;
  filesTransferred: number;
  bytesTransferred: number;
  deleted: number;
  mirrorFiles: number;
  /** What the drive held that was not restored: devices, FIFOs, sockets, symlinks leading out (a count and the first few). */
  skipped: { count: number; first: string[] };
  approvedBy?: string;
  healthy?: boolean;
  health?: string;
  durations: Record<string, number>;
}

const THUMBNAILS = 'Immich regenerates thumbnails and encoded videos on start (30-60 min for a large library)';

/** The runbook's library restore: the USB mirror back onto the library, with Immich stopped meanwhile and no mirror run alongside. */
export async function RestoreLibrary(input: RestoreLibraryInput = {}): Promise<RestoreLibraryReport> {
  return reported('RestoreLibrary', () => body(input), (r) => r.message);
}

const nothing = { filesTransferred: 0, bytesTransferred: 0, deleted: 0, mirrorFiles: 0, skipped: { count: 0, first: [] } };
const noneSkipped = { count: 0, first: [] };

/** The skipped items for a message: "; skipped 3 unsafe item(s) on the drive: a, b, c". */
function skippedText(skipped: { count: number; first: string[] } | undefined, verb: string): string {
  if (!skipped?.count) return '';
  const more = skipped.count > skipped.first.length ? `, and ${skipped.count - skipped.first.length} more` : '';
  return `; ${verb} ${skipped.count} item(s) on the drive that a library never holds (devices, FIFOs, sockets, symlinks leading out of it): ${skipped.first.join(', ')}${more}`;
}

async function body(input: RestoreLibraryInput): Promise<RestoreLibraryReport> {
  const r = restoreSteps(input.approved === true, 'RestoreLibrary');
  const { timed, durations } = r;
  const del = input.delete === true;
  try {
    await r.authorize(input);
    const config = await settings.restoreSettings();
    await timed('checking the mirror', () => mirrorChecks.checkRestoreSource());
    const would = await timed('dry run', () => mirroring.restoreLibraryFiles({ delete: del, dryRun: true }));
    const summary = `copy ${would.filesTransferred} file(s) (${would.bytesTransferred} bytes) from the mirror and delete ${would.deleted}`;
    if (input.dryRun) {
      r.done();
      return {
        outcome: 'dry-run',
        message: `dry run: the restore would ${summary}${skippedText(would.skipped, 'and skip')}; nothing was changed`,
        filesTransferred: would.filesTransferred,
        bytesTransferred: would.bytesTransferred,
        deleted: would.deleted,
        mirrorFiles: would.sourceFiles,
        skipped: would.skipped ?? noneSkipped,
        durations,
      };
    }
    const plan: RestorePlan = {
      workflowId: workflowInfo().workflowId,
      what: 'library',
      versionChange: false,
      restorePoint: false,
      steps: ['wait for the library: no mirror run meanwhile', "stop Immich's app containers", `${summary} (as the dry run counted it)`, 'start Immich and wait until it answers'],
      deadline: at(Date.now() + config.approvalTimeoutMs),
    };
    const decision = await r.approval(plan, config.approvalTimeoutMs);
    if (!decision.approved) {
      r.done();
      const message = 'timedOut' in decision ? `no approval within ${Math.round(config.approvalTimeoutMs / 60_000)} min: nothing was changed` : `rejected by ${decision.by} (${decision.reason}): nothing was changed`;
      return { outcome: 'timedOut' in decision ? 'not-approved' : 'rejected', message, ...nothing, durations };
    }
    return await withLock('library', r.steps, async () => {
      let copyStarted = false;
      let failure: string | undefined;
      let cancelledAt: string | undefined;
      let result: MirrorResult | undefined;
      // Approved, but not held until now: the mirror is checked again before anything stops.
      await timed('checking the mirror again', () => mirrorChecks.checkRestoreSource());
      try {
        await timed('stopping Immich', () => immichControl.stopImmich());
        if (CancellationScope.current().consideredCancelled) throw new CancelledFailure('cancelled before the copy');
        copyStarted = true;
        // Never more deletions than the approved dry run counted.
        result = await timed('restoring library', () => mirroring.restoreLibraryFiles({ delete: del, dryRun: false, maxDelete: would.deleted }));
      } catch (err) {
        if (isCancellation(err)) cancelledAt = r.steps.current();
        else failure = innermostMessage(err);
      }
      // Immich comes back whatever happened, in a scope cancellation cannot reach: a half-restored library is better served than a stopped one.
      const healthResult = await CancellationScope.nonCancellable(async () => {
        try {
          await timed('starting Immich', () => immichControl.startImmich());
          return await timed('waiting for Immich', () => health.waitForImmich());
        } catch (err) {
          return { healthy: false, detail: `starting it failed: ${innermostMessage(err)}; start it by hand (docker compose up -d)` };
        }
      });
      r.done();
      const immich = healthResult.healthy ? 'Immich started (healthy)' : `Immich NOT healthy: ${healthResult.detail}`;
      const state = copyStarted
        ? `the library is partly restored (files already copied stay${del ? ', some files the mirror lacks may be deleted' : ''}; nothing else was removed); run the restore again to finish: rsync resumes`
        : 'the library was not touched';
      if (cancelledAt !== undefined) throw ApplicationFailure.nonRetryable(`restore cancelled while ${cancelledAt}: ${state}; ${immich}`, RestoreCancelledError.name);
      if (failure !== undefined || !result) throw ApplicationFailure.nonRetryable(`library restore failed (${failure}); ${state}; ${immich}`, RestoreFailedError.name);
      return {
        outcome: 'restored',
        message: `restored ${result.filesTransferred} file(s) from the mirror, deleted ${result.deleted}${skippedText(result.skipped, 'skipped')}; Immich ${healthResult.healthy ? 'is healthy' : 'did NOT become healthy'}. ${THUMBNAILS}`,
        filesTransferred: result.filesTransferred,
        bytesTransferred: result.bytesTransferred,
        deleted: result.deleted,
        mirrorFiles: result.sourceFiles,
        skipped: result.skipped ?? noneSkipped,
        approvedBy: decision.by,
        healthy: healthResult.healthy,
        health: healthResult.detail,
        durations,
      };
    });
  } catch (err) {
    if (isCancellation(err)) throw ApplicationFailure.nonRetryable(`restore cancelled while ${r.steps.current()}: nothing was changed`, RestoreCancelledError.name);
    throw err;
  }
}
