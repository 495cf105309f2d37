import { ApplicationFailure, log, sleep } from '@temporalio/workflow';
import { DriveNotMountedError } from '../src/errors.js';
import { mirroring, settings } from './activity-options.js';
import { reported } from './reporting.js';

export interface WeeklyLibraryMirrorInput {
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
  const startedMs = Date.now();
  let attemptMs = startedMs;
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
      await sleep(config.mountPollMs);
      attemptMs = Date.now();
      run = await mirroring.mirrorLibrary();
    }
  }
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
