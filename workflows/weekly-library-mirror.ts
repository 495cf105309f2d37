import { ApplicationFailure, log, patched, sleep } from '@temporalio/workflow';
import { DriveNotMountedError } from '../src/errors.js';
import { WORKFLOW_KINDS } from '../src/ids.js';
import { authorize, mirroring, settings } from './activity-options.js';
import { at, trackSteps, type Steps } from './progress.js';
import { withLock } from './resource-lock.js';
import { reported } from './reporting.js';
import { AUTHORIZATION_PATCH } from './restore-steps.js';

export interface WeeklyLibraryMirrorInput {
  /** With library.delete on, a run its schedule did not start needs the CLI's start token (src/authorization.ts). */
  authorization?: string;
  trigger?: string;
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
}

/** The runbook's Sunday 05:00 job: rsync the photo library to the WD drive, only when the drive is really there. */
export async function WeeklyLibraryMirror(input: WeeklyLibraryMirrorInput = {}): Promise<WeeklyLibraryMirrorReport> {
  return reported('WeeklyLibraryMirror', () => body(input), (r) => `${r.filesTransferred} file(s), ${r.bytesTransferred} bytes transferred; the library holds ${r.sourceFiles} file(s)`);
}

async function body(input: WeeklyLibraryMirrorInput): Promise<WeeklyLibraryMirrorReport> {
  const steps = trackSteps();
  // A mirror that deletes is destructive: started by its own schedule, or with a start token.
  if (patched(AUTHORIZATION_PATCH) && (await settings.mirrorSettings()).delete) {
    steps.set('checking the authorization');
    await authorize.authorizeRun({ workflowType: 'WeeklyLibraryMirror', token: input.authorization, input, scheduleId: WORKFLOW_KINDS.WeeklyLibraryMirror });
  }
  // Never alongside a library restore: with deletion on, the two would erase each other's files.
  return withLock('library', steps, () => mirror(steps, input));
}

async function mirror(steps: Steps, input: WeeklyLibraryMirrorInput): Promise<WeeklyLibraryMirrorReport> {
  const startedMs = Date.now();
  let attemptMs = startedMs;
  steps.set('mirroring library');
  let run = await mirroring.mirrorLibrary();
  // Someone may plug the drive in: keep looking (durable timers) for the configured window.
  if (!run.ready) {
    const config = await settings.mirrorSettings();
    while (!run.ready) {
      const waited = Date.now() - startedMs;
      if (waited + config.mountPollMs > config.mountWaitMs) {
        throw ApplicationFailure.nonRetryable(`${run.reason} (checked for ${Math.round(waited / 1000)} s): connect and mount the drive, then run the mirror again; nothing was written`, DriveNotMountedError.name);
      }
      log.warn('mirror target not ready; checking again', { reason: run.reason, inMs: config.mountPollMs });
      steps.set(`waiting for the drive: ${run.reason}; next look at ${at(Date.now() + config.mountPollMs)}, gives up at ${at(startedMs + config.mountWaitMs)}`);
      await sleep(config.mountPollMs);
      attemptMs = Date.now();
      steps.set('mirroring library');
      run = await mirroring.mirrorLibrary();
    }
  }
  steps.set('done');
  return {
    filesTransferred: run.filesTransferred,
    bytesTransferred: run.bytesTransferred,
    deleted: run.deleted,
    sourceFiles: run.sourceFiles,
    waitedForDriveMs: attemptMs - startedMs,
    durationMs: Date.now() - startedMs,
    trigger: input.trigger ?? 'manual',
  };
}
