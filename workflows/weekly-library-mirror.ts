import { log, patched, sleep, workflowInfo } from '@temporalio/workflow';
import type { LibraryOffsiteResult, MirrorVersioning, RewriteAcceptance } from '../core/types.js';
import { DriveNotMountedError } from '../core/errors.js';
import { WORKFLOW_KINDS } from '../core/ids.js';
import { versionSetName } from '../core/library-layout.js';
import { authorize, libraryOffsite, mirroring, settings } from './activity-options.js';
import { at, trackSteps, type Steps } from './progress.js';
import { withLock } from './resource-lock.js';
import { announce, reported } from './reporting.js';
import { failWith } from './failures.js';
import { AUTHORIZATION_PATCH, LIBRARY_VERSIONS_PATCH } from './patches.js';

export interface WeeklyLibraryMirrorInput {
  /** With library.delete on, a run its schedule did not start needs the CLI's start token (adapters/run-auth/tokens.ts). */
  authorization?: string;
  trigger?: string;
  /**
   * The operator's approval of the rewrites a refused run found (`backup library --accept-rewrites
   * COUNT:DIGEST`): this run overwrites them (into its version set) only when it finds exactly those.
   * Needs the CLI's start token, which binds it to this run.
   */
  acceptRewrites?: RewriteAcceptance;
}

export interface WeeklyLibraryMirrorReport {
  filesTransferred: number;
  bytesTransferred: number;
  deleted: number;
  /** Regular files in the library, as rsync counted them. */
  sourceFiles: number;
  waitedForDriveMs: number;
  durationMs: number;
  trigger: string;
  /** Versioned runs: the version set, files moved into it, rewritten originals found, the dump it pairs with. */
  versioning?: MirrorVersioning;
  /** Version sets older than library.keepVersionsWeeks removed after this run. */
  prunedVersionSets?: string[];
  /** Version sets on the drive named in the future (the clock ran ahead, or runs behind now): nothing was pruned. */
  futureVersionSets?: string[];
  /** library.offsite.enabled: the copy on the NAS. */
  offsite?: LibraryOffsiteResult;
}

/** The runbook's Sunday 05:00 job: rsync the photo library to the WD drive, only when the drive is really there. */
export async function WeeklyLibraryMirror(input: WeeklyLibraryMirrorInput = {}): Promise<WeeklyLibraryMirrorReport> {
  return reported('WeeklyLibraryMirror', () => body(input), summary);
}

function summary(r: WeeklyLibraryMirrorReport): string {
  const base = `${r.filesTransferred} file(s), ${r.bytesTransferred} bytes transferred; the library holds ${r.sourceFiles} file(s)`;
  const v = r.versioning;
  if (!v) return base;
  return (
    `${base}; ${v.versioned} file(s) versioned in ${v.versionSet}` +
    (v.rewrites.count ? `; ALARM: ${rewritesText(v)}` : '') +
    (v.deletions ? `; ${v.deletions.count} original(s) deleted from the library moved into ${v.versionSet}${v.accepted ? ' (approved by the operator)' : ''}` : '') +
    (r.futureVersionSets ? `; NOT PRUNED: version set(s) named in the future (${r.futureVersionSets.join(', ')}): check the clock` : '') +
    `; ${v.pairedDump ? `pairs with ${v.pairedDump}` : 'no valid dump to pair with'}` +
    (r.offsite ? `; NAS copy: ${r.offsite.filesTransferred} file(s) to ${r.offsite.destination}` : '')
  );
}

const rewritesText = (v: MirrorVersioning) =>
  `${v.rewrites.count} original(s) already on the mirror changed content in the library (${v.rewrites.first.join(', ')}${v.rewrites.count > v.rewrites.first.length ? ', …' : ''})` +
  `${v.accepted ? ', approved by the operator' : ''}; their previous versions are in version set ${v.versionSet} on the drive`;

async function body(input: WeeklyLibraryMirrorInput): Promise<WeeklyLibraryMirrorReport> {
  const steps = trackSteps();
  const versioned = patched(LIBRARY_VERSIONS_PATCH);
  // A mirror that deletes is destructive: started by its own schedule, or with a start token; so is approving rewrites.
  if (patched(AUTHORIZATION_PATCH) && ((await settings.mirrorSettings()).delete || (versioned && input.acceptRewrites !== undefined))) {
    steps.set('checking the authorization');
    await authorize.authorizeRun({ workflowType: 'WeeklyLibraryMirror', token: input.authorization, input, scheduleId: WORKFLOW_KINDS.WeeklyLibraryMirror });
  }
  // Never alongside a library restore: with deletion on, the two would erase each other's files.
  return withLock('library', steps, () => mirror(steps, input, versioned));
}

async function mirror(steps: Steps, input: WeeklyLibraryMirrorInput, versioned: boolean): Promise<WeeklyLibraryMirrorReport> {
  const startedMs = Date.now();
  let attemptMs = startedMs;
  // Named for the workflow's start (the shared layout): a run that waited for the lock or the drive keeps its name.
  const versionSet = versionSetName(workflowInfo().startTime);
  const mirrorInput = versioned ? { versionSet, ...(input.acceptRewrites ? { acceptRewrites: input.acceptRewrites } : {}) } : undefined;
  const copy = () => (mirrorInput ? mirroring.mirrorLibrary(mirrorInput) : mirroring.mirrorLibrary());
  steps.set('mirroring library');
  let run = await copy();
  // Someone may plug the drive in: keep looking (durable timers) for the configured window.
  if (!run.ready) {
    const config = await settings.mirrorSettings();
    while (!run.ready) {
      const waited = Date.now() - startedMs;
      if (waited + config.mountPollMs > config.mountWaitMs) {
        throw failWith(DriveNotMountedError, `${run.reason} (checked for ${Math.round(waited / 1000)} s): connect and mount the drive, then run the mirror again; nothing was written`);
      }
      log.warn('mirror target not ready; checking again', { reason: run.reason, inMs: config.mountPollMs });
      steps.set(`waiting for the drive: ${run.reason}; next look at ${at(Date.now() + config.mountPollMs)}, gives up at ${at(startedMs + config.mountWaitMs)}`);
      await sleep(config.mountPollMs);
      attemptMs = Date.now();
      steps.set('mirroring library');
      run = await copy();
    }
  }
  const extra: Pick<WeeklyLibraryMirrorReport, 'versioning' | 'prunedVersionSets' | 'futureVersionSets' | 'offsite'> = {};
  if (versioned && run.versioning) {
    const v = run.versioning;
    extra.versioning = v;
    if (v.rewrites.count) {
      log.warn('originals rewritten in the library', { count: v.rewrites.count, first: v.rewrites.first });
      await announce('WeeklyLibraryMirror', 'alarm', `weekly-library-mirror: ${rewritesText(v)}`);
    }
    steps.set('pruning old version sets');
    // The activity prunes by the worker's clock (never a time handed to it), keeping the newest sets whatever it reads.
    const pruned = await mirroring.pruneLibraryVersions({ keep: versionSet });
    extra.prunedVersionSets = pruned.pruned;
    if (pruned.future) {
      extra.futureVersionSets = pruned.future;
      log.warn('version sets named in the future: nothing pruned', { future: pruned.future });
    }
    if ((await settings.mirrorSettings()).offsite) {
      steps.set('copying the library to the NAS');
      extra.offsite = await libraryOffsite.mirrorLibraryOffsite({ versionSet });
    }
  }
  steps.set('done');
  return {
    ...extra,
    filesTransferred: run.filesTransferred,
    bytesTransferred: run.bytesTransferred,
    deleted: run.deleted,
    sourceFiles: run.sourceFiles,
    waitedForDriveMs: attemptMs - startedMs,
    durationMs: Date.now() - startedMs,
    trigger: input.trigger ?? 'manual',
  };
}
