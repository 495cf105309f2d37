import { ApplicationFailure, log, sleep } from '@temporalio/workflow';
import { DriveNotMountedError } from '../src/errors.js';
import { mirrorChecks, mirroring, settings } from './activity-options.js';

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
  const startedMs = Date.now();
  const config = await settings.mirrorSettings();
  let check = await mirrorChecks.checkMirrorTarget();
  // Someone may plug the drive in: keep looking (durable timers) for the configured window.
  while (!check.ready) {
    const waited = Date.now() - startedMs;
    if (waited + config.mountPollMs > config.mountWaitMs) {
      throw ApplicationFailure.nonRetryable(`${check.reason} (checked for ${Math.round(waited / 1000)} s): connect and mount the drive, then run the mirror again; nothing was written`, DriveNotMountedError.name);
    }
    log.warn('mirror target not ready; checking again', { reason: check.reason, inMs: config.mountPollMs });
    await sleep(config.mountPollMs);
    check = await mirrorChecks.checkMirrorTarget();
  }
  const waitedForDriveMs = Date.now() - startedMs;
  const result = await mirroring.mirrorLibrary();
  return {
    filesTransferred: result.filesTransferred,
    bytesTransferred: result.bytesTransferred,
    deleted: result.deleted,
    sourceFiles: result.sourceFiles,
    waitedForDriveMs,
    durationMs: Date.now() - startedMs,
    trigger: input.trigger ?? 'manual',
  };
}
