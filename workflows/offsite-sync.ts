import { ActivityFailure, ApplicationFailure, log, sleep } from '@temporalio/workflow';
import { NasUnreachableError, StalledError } from '../core/errors.js';
import { nas, settings } from './activity-options.js';
import { failWith } from './failures.js';
import { at, trackSteps } from './progress.js';
import { reported } from './reporting.js';

export interface OffsiteSyncInput {
  trigger?: string;
}

export interface OffsiteSyncReport {
  destination: string;
  method: 'rsync' | 'scp';
  copied: string[];
  bytesCopied: number;
  /** Local dumps that no longer matched their .sha256: not copied, moved into the staging dir's rejected/. */
  rejected: Array<{ file: string; reason: string }>;
  alreadyOffsite: number;
  prunedRemote: string[];
  durationMs: number;
  message: string;
  trigger: string;
}

const FIRST_WAIT_MS = 5_000;
const MAX_WAIT_MS = 5 * 60_000;
/** A NAS that refuses connections or hangs mid-upload may come back: both are retried within the window. */
const WAIT_FOR_NAS: readonly string[] = [NasUnreachableError.name, StalledError.name];

/** The runbook's 04:30 job: copy every validated local dump the NAS lacks, verify it there by sha256. */
export async function OffsiteSync(input: OffsiteSyncInput = {}): Promise<OffsiteSyncReport> {
  return reported('OffsiteSync', () => body(input), (r) => r.message);
}

async function body(input: OffsiteSyncInput): Promise<OffsiteSyncReport> {
  const steps = trackSteps();
  const startedMs = Date.now();
  const config = await settings.offsiteSettings();

  /** Retries an unreachable or hung NAS with backoff until the configured window is spent, then fails with its last words. */
  async function untilReachable<T>(step: () => Promise<T>): Promise<T> {
    let wait = FIRST_WAIT_MS;
    for (;;) {
      try {
        return await step();
      } catch (err) {
        const cause = err instanceof ActivityFailure ? err.cause : undefined;
        if (!(cause instanceof ApplicationFailure) || !WAIT_FOR_NAS.includes(cause.type ?? '')) throw err;
        const spent = Date.now() - startedMs;
        if (spent + wait > config.retryWindowMs) {
          throw failWith(cause.type ?? NasUnreachableError, `${cause.message} (retried for ${Math.round(spent / 1000)} s)`);
        }
        log.warn('NAS unreachable; retrying', { waitMs: wait, reason: cause.message });
        const resume = steps.current();
        steps.set(`waiting for the NAS: ${cause.message.split('\n')[0]}; next try at ${at(Date.now() + wait)}, gives up at ${at(startedMs + config.retryWindowMs)}`);
        await sleep(wait);
        steps.set(resume);
        wait = Math.min(wait * 2, MAX_WAIT_MS);
      }
    }
  }

  steps.set('listing what the NAS lacks');
  const plan = await untilReachable(() => nas.planOffsiteSync());
  const copied: string[] = [];
  const rejected: OffsiteSyncReport['rejected'] = [];
  let bytesCopied = 0;
  // Newest first (the plan's order): the dump a restore would want reaches the NAS before older ones.
  for (const dump of plan.toCopy) {
    steps.set(`uploading ${dump.file}`);
    const result = await untilReachable(() => nas.uploadDump(dump));
    if (result.rejected !== undefined) {
      log.error('local dump damaged: not copied offsite, moved aside', { file: result.file, reason: result.rejected });
      rejected.push({ file: result.file, reason: result.rejected });
      continue;
    }
    copied.push(result.file);
    bytesCopied += result.bytes;
  }
  steps.set('pruning the NAS');
  const prunedRemote = config.pruneRemote ? (await untilReachable(() => nas.pruneRemoteDumps({ nowMs: startedMs }))).pruned : [];
  const copiedText = copied.length
    ? `copied ${copied.length} dump(s) to ${config.destination}, each verified by sha256 there`
    : rejected.length
      ? `copied nothing to ${config.destination}`
      : `nothing to copy: ${config.destination} already has all ${plan.alreadyOffsite.length} local dump(s)`;
  // The alarm rides on the report's message, so every notification of this run carries it.
  const rejectedText = rejected.length
    ? `; ALARM: ${rejected.length} local dump(s) damaged since validation, not copied, moved to rejected/: ${rejected.map((r) => r.file).join(', ')}`
    : '';
  const message = copiedText + rejectedText;
  log.info(message);
  steps.set('done');
  return {
    destination: config.destination,
    method: config.method,
    copied,
    bytesCopied,
    rejected,
    alreadyOffsite: plan.alreadyOffsite.length,
    prunedRemote,
    durationMs: Date.now() - startedMs,
    message,
    trigger: input.trigger ?? 'manual',
  };
}
