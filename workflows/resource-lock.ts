import {
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import { ResourceBusyError } from '../core/errors.js';
import { lockWorkflowId, type LockedResource } from '../core/ids.js';
import { acquireSignal, lockGrantedSignal, lockHeldSignal, releaseSignal } from '../core/messages.js';
import { locking, settings } from './activity-options.js';
import { failWith } from './failures.js';
import { at, type Steps } from './progress.js';

// One run at a time per resource, held through Temporal itself so that it holds across workers and
// hosts: a ResourceLock workflow per resource grants the lock to one requester at a time, in the
// order they asked, by signal; the holder releases it by signal (in a scope cancellation cannot
// reach). A holder that closes without releasing (terminated, timed out) loses the lock within
// HOLDER_CHECK. Every grant falls in a later second than the last release: dump names carry the
// second, so two runs never write the same file.

export interface ResourceLockInput {
  resource: LockedResource;
  holder?: string;
  queue?: string[];
  lastReleaseMs?: number;
}

/** How often the lock asks whether its holder still runs. */
const HOLDER_CHECK = '1 minute';
/** A lock nobody asked for in this long ends; the next request starts it again. */
const IDLE_END = '10 minutes';

export async function ResourceLock(input: ResourceLockInput): Promise<void> {
  // A lock that a cancellation could end would hand the resource to a second run while the first
  // still holds it: the lock's state outlives any request to cancel it.
  return CancellationScope.nonCancellable(() => serve(input));
}

async function serve(input: ResourceLockInput): Promise<void> {
  const { resource } = input;
  let holder = input.holder;
  const queue = [...(input.queue ?? [])];
  let lastReleaseMs = input.lastReleaseMs ?? 0;
  const toTell: string[] = [];

  setHandler(acquireSignal, ({ requester }) => {
    if (requester === holder) toTell.push(requester); // a repeated request: grant again
    else if (!queue.includes(requester)) {
      queue.push(requester);
      toTell.push(requester);
    }
  });
  setHandler(releaseSignal, ({ requester }) => {
    if (requester === holder) {
      holder = undefined;
      lastReleaseMs = Date.now();
    } else {
      const waiting = queue.indexOf(requester);
      if (waiting >= 0) queue.splice(waiting, 1);
    }
  });

  const tell = async (workflowId: string, send: (h: ReturnType<typeof getExternalWorkflowHandle>) => Promise<void>) => {
    try {
      await send(getExternalWorkflowHandle(workflowId));
      return true;
    } catch (err) {
      log.warn('lock requester gone', { resource, workflowId, reason: (err as Error).message });
      return false;
    }
  };

  for (;;) {
    if (!holder && queue.length) {
      const next = Math.floor(lastReleaseMs / 1000) * 1000 + 1000;
      if (Date.now() < next) await sleep(next - Date.now());
      const candidate = queue.shift();
      if (candidate === undefined) continue; // it withdrew during the pause
      holder = candidate;
      if (!(await tell(candidate, (h) => h.signal(lockGrantedSignal, { resource })))) holder = undefined;
      continue;
    }
    while (toTell.length) {
      const requester = toTell.shift()!;
      if (requester === holder) await tell(requester, (h) => h.signal(lockGrantedSignal, { resource }));
      else if (holder && queue.includes(requester)) await tell(requester, (h) => h.signal(lockHeldSignal, { resource, holder: holder! }));
    }
    if (workflowInfo().continueAsNewSuggested) await continueAsNew<typeof ResourceLock>({ resource, ...(holder ? { holder } : {}), queue, lastReleaseMs });
    const seen = holder;
    const changed = await condition(() => toTell.length > 0 || holder !== seen || (!holder && queue.length > 0), holder ? HOLDER_CHECK : IDLE_END);
    if (changed) continue;
    if (!holder) return;
    // An answer that cannot be had (the server unreachable for minutes) keeps the holder: asked again next time.
    const open = await locking.isWorkflowOpen({ workflowId: holder }).catch((err: unknown) => {
      log.warn('could not ask whether the lock holder still runs; asking again later', { resource, holder, reason: (err as Error).message });
      return true;
    });
    if (!open) {
      log.warn('lock holder closed without releasing: lock taken back', { resource, holder });
      holder = undefined;
      lastReleaseMs = Date.now();
    }
  }
}

/**
 * Runs `body` holding `resource`: asks its lock, waits (saying for whom, until when) at most
 * restore.lockWaitMinutes, then fails with ResourceBusyError having done nothing. The lock is
 * released whatever happens, cancellation included.
 */
export async function withLock<T>(resource: LockedResource, steps: Steps, body: () => Promise<T>): Promise<T> {
  const { workflowId: me, taskQueue } = workflowInfo();
  const lockId = lockWorkflowId(taskQueue, resource);
  let granted = false;
  let holder: string | undefined;
  setHandler(lockGrantedSignal, (s) => void (s.resource === resource && (granted = true)));
  setHandler(lockHeldSignal, (s) => void (s.resource === resource && (holder = s.holder)));
  try {
    const { waitMs } = await settings.lockSettings();
    await locking.requestLock({ lockId, resource, requester: me });
    const deadline = Date.now() + waitMs;
    while (!granted) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw failWith(ResourceBusyError, `the ${resource} is in use by ${holder ?? 'another run'}: waited ${Math.round(waitMs / 60_000)} min for it; nothing was done`);
      }
      const seen = holder;
      steps.set(`waiting for the ${resource}${holder ? `: in use by ${holder}` : ''} (gives up at ${at(deadline)})`);
      await condition(() => granted || holder !== seen, left);
    }
    return await body();
  } finally {
    await CancellationScope.nonCancellable(() => getExternalWorkflowHandle(lockId).signal(releaseSignal, { requester: me })).catch((err: unknown) => {
      log.warn('could not release the lock; it is taken back once this run has closed', { resource, reason: (err as Error).message });
    });
  }
}
