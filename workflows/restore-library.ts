import { CancellationScope, CancelledFailure, isCancellation, workflowInfo } from '@temporalio/workflow';
import type { LibrarySelection, SelectionResult } from '../activities/library-restore.js';
import type { MirrorResult, PostgresTarget } from '../core/types.js';
import { ConfigError, RestoreCancelledError, RestoreFailedError } from '../core/errors.js';
import { asOfProblem, selectionPathProblem } from '../core/library-layout.js';
import { innermostMessage } from '../core/failure.js';
import type { RestorePlan } from '../core/restore-plan.js';
import { discovery, health, immichControl, mirrorChecks, mirroring, settings } from './activity-options.js';
import { failWith } from './failures.js';
import { at } from './progress.js';
import { withLock } from './resource-lock.js';
import { restoreSteps, type RestoreSteps } from './restore-steps.js';
import { reported } from './reporting.js';

export interface RestoreLibraryInput {
  /** Report what rsync would change; change nothing. */
  dryRun?: boolean;
  /** Also delete library files the mirror does not have. Off by default. */
  delete?: boolean;
  /** The operator's "yes": no approval step. */
  approved?: boolean;
  /** Only the originals Immich's database references and the library lacks (from the mirror, else the newest version set holding them intact). */
  missing?: boolean;
  /** Only this subtree, relative to the library (library/<user>/2024). */
  path?: string;
  /** The files as the mirror held them at this date (ISO), from the version sets the mirror runs keep. */
  asOf?: string;
  /** The start token the CLI derives from the worker's key (adapters/run-auth/tokens.ts): without it the run fails at once. */
  authorization?: string;
  trigger?: string;
}

/** A selective restore's summary (--missing, --path, --as-of): counts and the first names only. */
export type SelectionSummary = Omit<SelectionResult, 'durationMs' | 'files' | 'bytes' | 'skipped'> & { selection: LibrarySelection };

export interface RestoreLibraryReport {
  outcome: 'restored' | 'dry-run' | 'not-approved' | 'rejected' | 'nothing-to-restore';
  message: string;
  filesTransferred: number;
  bytesTransferred: number;
  deleted: number;
  mirrorFiles: number;
  /** What the drive held that was not restored: devices, FIFOs, sockets, symlinks leading out (a count and the first few). */
  skipped: { count: number; first: string[] };
  /** --missing, --path or --as-of: what came back from where, and what could not be found. */
  selection?: SelectionSummary;
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

/** The input's selection (--missing, --path, --as-of); undefined: the whole library. */
function selectionOf(input: RestoreLibraryInput): LibrarySelection | undefined {
  if (!input.missing && input.path === undefined && input.asOf === undefined) return undefined;
  return { ...(input.missing ? { missing: true } : {}), ...(input.path !== undefined ? { path: input.path } : {}), ...(input.asOf !== undefined ? { asOf: input.asOf } : {}) };
}

/** Refused before anything runs: one line naming the option. */
function selectionProblem(selection: LibrarySelection, del: boolean): string | undefined {
  if (del) return '--delete restores the whole library: it cannot be combined with --missing, --path or --as-of';
  if (selection.missing && selection.asOf) return '--missing brings back what the library lacks as Immich references it now: it cannot be combined with --as-of';
  const path = selection.path !== undefined ? selectionPathProblem(selection.path) : undefined;
  if (path) return `--path ${JSON.stringify(selection.path)}: ${path}`;
  const asOf = selection.asOf !== undefined ? asOfProblem(selection.asOf, Date.now()) : undefined;
  if (asOf) return `--as-of ${JSON.stringify(selection.asOf)}: ${asOf}`;
  return undefined;
}

function selectionSummary(selection: LibrarySelection, r: SelectionResult): SelectionSummary {
  return { selection, fromMirror: r.fromMirror, fromVersions: r.fromVersions, versionSets: r.versionSets, notFound: r.notFound, notFoundFirst: r.notFoundFirst, notChecked: r.notChecked, first: r.first, ...(r.verified !== undefined ? { verified: r.verified } : {}) };
}

/** "12 file(s) (3.4 MB): 10 from the mirror, 2 from version sets 20261101T050000Z" and what was not found. */
function selectionText(selection: LibrarySelection, r: SelectionResult): string {
  const what = [selection.missing && 'the originals the library lacks', selection.path && `under ${selection.path}`, selection.asOf && `as of ${selection.asOf}`].filter(Boolean).join(' ');
  const sets = r.versionSets.length ? ` (${r.versionSets.join(', ')})` : '';
  const lost = r.notFound ? `; ${r.notFound} original(s) found intact NOWHERE (not on the mirror, not in any version set): ${r.notFoundFirst.slice(0, 5).join(', ')}${r.notFound > 5 ? ', …' : ''}` : '';
  const first = r.first.length ? `: ${r.first.slice(0, 5).join(', ')}${r.files > 5 ? ', …' : ''}` : '';
  return `${what}: ${r.files} file(s) (${r.bytes} bytes), ${r.fromMirror} from the mirror and ${r.fromVersions} from version sets${sets}${first}${lost}`;
}

async function body(input: RestoreLibraryInput): Promise<RestoreLibraryReport> {
  const selection = selectionOf(input);
  if (selection) {
    const problem = selectionProblem(selection, input.delete === true);
    if (problem) throw failWith(ConfigError, `${problem}; nothing was changed`);
  }
  const r = restoreSteps(input.approved === true, 'RestoreLibrary');
  const { timed, durations } = r;
  const del = input.delete === true;
  try {
    await r.authorize(input);
    const config = await settings.restoreSettings();
    await timed('checking the mirror', () => mirrorChecks.checkRestoreSource());
    const job = selection ? await selectiveJob(r, selection) : await wholeJob(r, del);
    if (input.dryRun) {
      r.done();
      return { ...job.dryRun, durations };
    }
    if (job.nothing) {
      r.done();
      return { ...job.nothing, durations };
    }
    const plan: RestorePlan = {
      workflowId: workflowInfo().workflowId,
      what: 'library',
      versionChange: false,
      restorePoint: false,
      steps: ['wait for the library: no mirror run meanwhile', "stop Immich's app containers", job.copyStep, 'start Immich and wait until it answers'],
      deadline: at(Date.now() + config.approvalTimeoutMs),
    };
    const decision = await r.approval(plan, config.approvalTimeoutMs);
    if (!decision.approved) {
      r.done();
      const message = 'timedOut' in decision ? `no approval within ${Math.round(config.approvalTimeoutMs / 60_000)} min: nothing was changed` : `rejected by ${decision.by} (${decision.reason}): nothing was changed`;
      return { outcome: 'timedOut' in decision ? 'not-approved' : 'rejected', message, ...nothing, ...(job.unchanged ?? {}), durations };
    }
    return await withLock('library', r.steps, async () => {
      let copyStarted = false;
      let failure: string | undefined;
      let cancelledAt: string | undefined;
      let done: Omit<RestoreLibraryReport, 'durations'> | undefined;
      // Approved, but not held until now: the mirror is checked again before anything stops.
      await timed('checking the mirror again', () => mirrorChecks.checkRestoreSource());
      try {
        await timed('stopping Immich', () => immichControl.stopImmich());
        if (CancellationScope.current().consideredCancelled) throw new CancelledFailure('cancelled before the copy');
        copyStarted = true;
        done = await job.copy();
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
      const state = copyStarted ? job.partlyDone : 'the library was not touched';
      if (cancelledAt !== undefined) throw failWith(RestoreCancelledError, `restore cancelled while ${cancelledAt}: ${state}; ${immich}`);
      if (failure !== undefined || !done) throw failWith(RestoreFailedError, `library restore failed (${failure}); ${state}; ${immich}`);
      return {
        ...done,
        message: `${done.message}; Immich ${healthResult.healthy ? 'is healthy' : 'did NOT become healthy'}. ${THUMBNAILS}`,
        approvedBy: decision.by,
        healthy: healthResult.healthy,
        health: healthResult.detail,
        durations,
      };
    });
  } catch (err) {
    if (isCancellation(err)) throw failWith(RestoreCancelledError, `restore cancelled while ${r.steps.current()}: nothing was changed`);
    throw err;
  }
}

type ReportBody = Omit<RestoreLibraryReport, 'durations'>;

/** One kind of library restore, once its dry run is known: what to report, the approved step, and the copy. */
interface Job {
  dryRun: ReportBody;
  /** Nothing to copy: reported without stopping Immich. */
  nothing?: ReportBody;
  /** Report fields kept when the restore is not approved. */
  unchanged?: Partial<ReportBody>;
  copyStep: string;
  copy(): Promise<ReportBody>;
  /** The library's state when the copy started and did not finish. */
  partlyDone: string;
}

/** The whole mirror back onto the library (rsync resumes; with --delete, never more deletions than the dry run counted). */
async function wholeJob(r: RestoreSteps, del: boolean): Promise<Job> {
  const would = await r.timed('dry run', () => mirroring.restoreLibraryFiles({ delete: del, dryRun: true }));
  const summary = `copy ${would.filesTransferred} file(s) (${would.bytesTransferred} bytes) from the mirror and delete ${would.deleted}`;
  const counts = (m: MirrorResult) => ({ filesTransferred: m.filesTransferred, bytesTransferred: m.bytesTransferred, deleted: m.deleted, mirrorFiles: m.sourceFiles, skipped: m.skipped ?? noneSkipped });
  return {
    dryRun: { outcome: 'dry-run', message: `dry run: the restore would ${summary}${skippedText(would.skipped, 'and skip')}; nothing was changed`, ...counts(would) },
    copyStep: `${summary} (as the dry run counted it)`,
    async copy() {
      const result = await r.timed('restoring library', () => mirroring.restoreLibraryFiles({ delete: del, dryRun: false, maxDelete: would.deleted }));
      return { outcome: 'restored', message: `restored ${result.filesTransferred} file(s) from the mirror, deleted ${result.deleted}${skippedText(result.skipped, 'skipped')}`, ...counts(result) };
    },
    partlyDone: `the library is partly restored (files already copied stay${del ? ', some files the mirror lacks may be deleted' : ''}; nothing else was removed); run the restore again to finish: rsync resumes`,
  };
}

/** --missing, --path, --as-of: the plan is made again for the copy, which never copies more files than the dry run counted. */
async function selectiveJob(r: RestoreSteps, selection: LibrarySelection): Promise<Job> {
  let target: PostgresTarget | undefined;
  if (selection.missing) target = await r.timed('finding the database container', () => discovery.discoverPostgresContainer());
  const where = target ? { target } : {};
  const would = await r.timed('dry run', () => mirroring.restoreLibrarySelection({ selection, ...where, dryRun: true }));
  const body = (outcome: RestoreLibraryReport['outcome'], message: string, result: SelectionResult): ReportBody => ({
    outcome,
    message,
    filesTransferred: result.files,
    bytesTransferred: result.bytes,
    deleted: 0,
    mirrorFiles: 0,
    skipped: result.skipped ?? noneSkipped,
    selection: selectionSummary(selection, result),
  });
  return {
    dryRun: body('dry-run', `dry run: the restore would bring back ${selectionText(selection, would)}${skippedText(would.skipped, 'and skip')}; nothing was changed`, would),
    ...(would.files === 0 ? { nothing: body('nothing-to-restore', `nothing to restore: ${selectionText(selection, would)}; Immich was not stopped, nothing was changed`, would) } : {}),
    unchanged: { selection: selectionSummary(selection, would) },
    copyStep: `bring back ${selectionText(selection, would)} (never more files than this dry run counted)`,
    async copy() {
      const result = await r.timed('restoring library files', () => mirroring.restoreLibrarySelection({ selection, ...where, dryRun: false, maxFiles: would.files }));
      const verified = result.verified !== undefined ? `; ${result.verified} checked against Immich's SHA-1 after the copy` : '';
      return body('restored', `brought back ${selectionText(selection, result)}${verified}${skippedText(result.skipped, 'skipped')}`, result);
    },
    partlyDone: 'some files may already be back (nothing was deleted or overwritten outside the selection); run the restore again to finish',
  };
}
