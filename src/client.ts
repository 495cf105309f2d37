import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { Config } from './config.js';
import { innermostCause, innermostMessage } from './failure.js';

/** The configured server, or the embedded dev server's address when none is configured. */
export function temporalAddress(config: Config): string {
  return config.temporal.address ?? `${config.temporal.devServer.ip}:${config.temporal.devServer.port}`;
}

export async function connectClient(config: Config, address = temporalAddress(config)): Promise<{ client: Client; connection: Connection }> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ address, connectTimeout: 5000 });
  } catch (err) {
    throw new Error(`cannot reach Temporal at ${address} (${(err as Error).message}): start it with \`npm start\`, or set temporal.address`);
  }
  return { client: new Client({ connection, namespace: config.temporal.namespace }), connection };
}

export interface Progress {
  /** An activity's name, or "step" for the workflow's own currentStep query (restores). */
  activity: string;
  attempt: number;
  details: unknown;
  lastFailure?: string;
}

/** What the run is doing now: its current step (when it answers the currentStep query) and pending activities with their latest heartbeat details. */
export async function currentProgress(handle: WorkflowHandle, withStep = false): Promise<Progress[]> {
  const { raw, status } = await handle.describe();
  const step = withStep && status.name === 'RUNNING' ? await handle.query<string>('currentStep').catch(() => undefined) : undefined;
  const steps: Progress[] = step ? [{ activity: 'step', attempt: 1, details: step }] : [];
  return steps.concat((raw.pendingActivities ?? []).map((a) => {
    const payload = a.heartbeatDetails?.payloads?.[0];
    return {
      activity: a.activityType?.name ?? '?',
      attempt: a.attempt ?? 1,
      details: payload ? defaultPayloadConverter.fromPayload(payload) : undefined,
      ...(a.lastFailure?.message ? { lastFailure: a.lastFailure.message } : {}),
    };
  }));
}

/**
 * Waits for the result, calling `onProgress` whenever the run's progress changes. A failed run
 * rejects with an Error whose message is one line: the innermost cause, with its failure type.
 */
export async function follow<T>(handle: WorkflowHandle, onProgress: (p: Progress[]) => void, { everyMs = 1000, withStep = false } = {}): Promise<T> {
  let last = '';
  let done = false;
  const poll = async () => {
    while (!done) {
      try {
        const progress = await currentProgress(handle, withStep);
        const key = JSON.stringify(progress);
        if (key !== last && progress.length) onProgress(progress);
        last = key;
      } catch {
        // progress is best effort; the result below is what counts
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  };
  const polling = poll();
  try {
    return (await handle.result()) as T;
  } catch (err) {
    throw new Error(failureReason(err));
  } finally {
    done = true;
    await polling;
  }
}

/** One line an operator can act on: the deepest cause's type and message. */
export function failureReason(err: unknown): string {
  const e = innermostCause(err) as Error & { type?: string };
  const type = e.type ?? (e.name !== 'Error' ? e.name : undefined);
  const message = innermostMessage(err);
  const prefix = err instanceof WorkflowFailedError ? 'workflow failed: ' : '';
  return `${prefix}${type && !message.startsWith(type) ? `${type}: ` : ''}${message}`;
}
