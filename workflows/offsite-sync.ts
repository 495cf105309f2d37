import { ActivityFailure, ApplicationFailure, log, sleep } from '@temporalio/workflow';
import { NasUnreachableError } from '../src/errors.js';
import { nas, settings } from './activity-options.js';
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
  alreadyOffsite: number;
  prunedRemote: string[];
  durationMs: number;
  message: string;
  trigger: string;
}

const FIRST_WAIT_MS = 5_000;
const MAX_WAIT_MS = 5 * 60_000;

/** The runbook's 04:30 job: copy every validated local dump the NAS lacks, verify it there by sha256. */
export async function OffsiteSync(input: OffsiteSyncInput = {}): Promise<OffsiteSyncReport> {
  return reported('OffsiteSync', () => body(input), (r) => r.message);
}

async function body(input: OffsiteSyncInput): Promise<OffsiteSyncReport> {
  const steps = trackSteps();
  const startedMs = Date.now();
  const config = await settings.offsiteSettings();

  /** Retries an unreachable NAS with backoff until the configured window is spent, then fails with its last words. */
  async function untilReachable<T>(step: () => Promise<T>): Promise<T> {
    let wait = FIRST_WAIT_MS;
    for (;;) {
      try {
        return await step();
      } catch (err) {
        const cause = err instanceof ActivityFailure ? err.cause : undefined;
        if (!(cause instanceof ApplicationFailure) || cause.type !== NasUnreachableError.name) throw err;
        const spent = Date.now() - startedMs;
        if (spent + wait > config.retryWindowMs) {
          throw ApplicationFailure.nonRetryable(`${cause.message} (retried for ${Math.round(spent / 1000)} s)`, NasUnreachableError.name);
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
  let bytesCopied = 0;
  for (const dump of plan.toCopy) {
    steps.set(`uploading ${dump.file}`);
    const result = await untilReachable(() => nas.uploadDump(dump));
    copied.push(result.file);
    bytesCopied += result.bytes;
  }
  steps.set('pruning the NAS');
  const prunedRemote = config.pruneRemote ? (await untilReachable(() => nas.pruneRemoteDumps({ nowMs: startedMs }))).pruned : [];
  const message = copied.length
    ? `copied ${copied.length} dump(s) to ${config.destination}, each verified by sha256 there`
    : `nothing to copy: ${config.destination} already has all ${plan.alreadyOffsite.length} local dump(s)`;
  log.info(message);
  steps.set('done');
  return {
    destination: config.destination,
    method: config.method,
    copied,
    bytesCopied,
    alreadyOffsite: plan.alreadyOffsite.length,
    prunedRemote,
    durationMs: Date.now() - startedMs,
    message,
    trigger: input.trigger ?? 'manual',
  };
}
