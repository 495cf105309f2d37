import { ApplicationFailure } from '@temporalio/workflow';
import { RestoreFailedError } from '../src/errors.js';
import { innermostMessage } from '../src/failure.js';
import { health, immichControl, mirrorChecks, mirroring, settings } from './activity-options.js';
import { restoreSteps } from './restore-steps.js';
import { reported } from './reporting.js';

export interface RestoreLibraryInput {
  /** Report what rsync would change; change nothing. */
  dryRun?: boolean;
  /** Also delete library files the mirror does not have. Off by default. */
  delete?: boolean;
  /** The operator's "yes": no approval step. */
  approved?: boolean;
  trigger?: string;
}

export interface RestoreLibraryReport {
  outcome: 'restored' | 'dry-run' | 'not-approved';
  message: string;
  filesTransferred: number;
  bytesTransferred: number;
  deleted: number;
  mirrorFiles: number;
  healthy?: boolean;
  health?: string;
  durations: Record<string, number>;
}

const THUMBNAILS = 'Immich regenerates thumbnails and encoded videos on start (30-60 min for a large library)';

/** The runbook's library restore: the USB mirror back onto the library, with Immich stopped meanwhile. */
export async function RestoreLibrary(input: RestoreLibraryInput = {}): Promise<RestoreLibraryReport> {
  return reported('RestoreLibrary', () => body(input), (r) => r.message);
}

async function body(input: RestoreLibraryInput): Promise<RestoreLibraryReport> {
  const steps = restoreSteps(input.approved === true);
  const { timed, durations } = steps;
  const del = input.delete === true;
  const config = await settings.restoreSettings();
  await timed('checking the mirror', () => mirrorChecks.checkRestoreSource());

  if (input.dryRun) {
    const would = await timed('dry run', () => mirroring.restoreLibraryFiles({ delete: del, dryRun: true }));
    steps.done();
    return {
      outcome: 'dry-run',
      message: `dry run: the restore would copy ${would.filesTransferred} file(s) (${would.bytesTransferred} bytes) from the mirror and delete ${would.deleted}; nothing was changed`,
      filesTransferred: would.filesTransferred,
      bytesTransferred: would.bytesTransferred,
      deleted: would.deleted,
      mirrorFiles: would.sourceFiles,
      durations,
    };
  }
  if (!(await steps.approval(config.approvalTimeoutMs))) {
    steps.done();
    const message = `no approval within ${Math.round(config.approvalTimeoutMs / 60_000)} min: nothing was changed`;
    return { outcome: 'not-approved', message, filesTransferred: 0, bytesTransferred: 0, deleted: 0, mirrorFiles: 0, durations };
  }

  await timed('stopping Immich', () => immichControl.stopImmich());
  let failure: string | undefined;
  let result: Awaited<ReturnType<typeof mirroring.restoreLibraryFiles>> | undefined;
  try {
    result = await timed('restoring library', () => mirroring.restoreLibraryFiles({ delete: del, dryRun: false }));
  } catch (err) {
    failure = innermostMessage(err);
  }
  // Immich comes back whatever happened: a half-restored library is better served than a stopped one.
  await timed('starting Immich', () => immichControl.startImmich());
  const healthResult = await timed('waiting for Immich', () => health.waitForImmich());
  steps.done();
  if (failure || !result) {
    throw ApplicationFailure.nonRetryable(`library restore failed (${failure}); Immich started again (${healthResult.healthy ? 'healthy' : 'not healthy'}); run it again to finish: rsync resumes`, RestoreFailedError.name);
  }
  return {
    outcome: 'restored',
    message: `restored ${result.filesTransferred} file(s) from the mirror, deleted ${result.deleted}; Immich ${healthResult.healthy ? 'is healthy' : 'did NOT become healthy'}. ${THUMBNAILS}`,
    filesTransferred: result.filesTransferred,
    bytesTransferred: result.bytesTransferred,
    deleted: result.deleted,
    mirrorFiles: result.sourceFiles,
    healthy: healthResult.healthy,
    health: healthResult.detail,
    durations,
  };
}
