import { readFileSync } from 'node:fs';
import { Client, Connection, WorkflowFailedError, type TLSConfig, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import proto from '@temporalio/proto';
import type { Config } from '../config/config.js';
import { ConfigError, NoWorkerError, RunFailedError, TemporalUnreachableError } from '../core/errors.js';
import { innermostCause, innermostMessage } from '../core/failure.js';
import { currentStepQuery } from '../core/messages.js';
import { hostPort } from '../core/format.js';

/** The configured server, or the embedded dev server's address when none is configured. */
export function temporalAddress(config: Config): string {
  return config.temporal.address ?? hostPort(config.temporal.devServer.ip, config.temporal.devServer.port);
}

/**
 * TLS and the API key for a remote Temporal, as both the client's Connection and the worker's
 * NativeConnection take them. The PEM files are read now: a missing one is a config error naming
 * its key, not a handshake failure later. Nothing for the embedded dev server (plain, loopback).
 */
export function connectionSecurity(config: Config): { tls?: TLSConfig | true; apiKey?: string } {
  const { tls, apiKey, address } = config.temporal;
  if (!address || (!tls && !apiKey)) return {};
  const read = (key: 'clientCert' | 'clientKey' | 'ca'): Uint8Array | undefined => {
    const file = tls?.[key];
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`temporal.tls.${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const crt = read('clientCert');
  const key = read('clientKey');
  const ca = read('ca');
  const settings: TLSConfig = {
    ...(crt && key ? { clientCertPair: { crt, key } } : {}),
    ...(ca ? { serverRootCACertificate: ca } : {}),
    ...(tls?.serverName ? { serverNameOverride: tls.serverName } : {}),
  };
  // An API key travels as a bearer token: never over plain TCP.
  return { tls: Object.keys(settings).length ? settings : true, ...(apiKey ? { apiKey } : {}) };
}

/** What to check when a connection fails: the dev server for a local address, the TLS settings for a remote one. */
export function connectHint(config: Config): string {
  const { tls, apiKey } = config.temporal;
  if (tls || apiKey) return 'check temporal.address and temporal.tls (client certificate and key, CA, serverName) or temporal.apiKey';
  return 'start it with `npm start`, or set temporal.address';
}

export async function connectClient(config: Config, address = temporalAddress(config)): Promise<{ client: Client; connection: Connection }> {
  const security = connectionSecurity(config);
  let connection: Connection;
  try {
    connection = await Connection.connect({ address, connectTimeout: 5000, ...security });
  } catch (err) {
    throw new TemporalUnreachableError(`cannot reach Temporal at ${address}${security.tls ? ' over TLS' : ''} (${(err as Error).message.split('\n')[0]}): ${connectHint(config)}`);
  }
  return { client: new Client({ connection, namespace: config.temporal.namespace }), connection };
}

export interface Progress {
  /** An activity's name, or "step" for the workflow's own currentStep query. */
  activity: string;
  attempt: number;
  details: unknown;
  lastFailure?: string;
  /** When a retry waits: the next attempt's time. */
  nextAttemptAt?: Date;
  maximumAttempts?: number;
}

/** What the run is doing now: its current step (the currentStep query every workflow answers) and pending activities with their latest heartbeat details and retry state. */
export async function currentProgress(handle: WorkflowHandle, withStep = true): Promise<Progress[]> {
  const { raw, status } = await handle.describe();
  const step = withStep && status.name === 'RUNNING' ? await handle.query(currentStepQuery).catch(() => undefined) : undefined;
  const steps: Progress[] = step ? [{ activity: 'step', attempt: 1, details: step }] : [];
  return steps.concat((raw.pendingActivities ?? []).map((a) => {
    const payload = a.heartbeatDetails?.payloads?.[0];
    const next = a.nextAttemptScheduleTime?.seconds;
    return {
      activity: a.activityType?.name ?? '?',
      attempt: a.attempt ?? 1,
      details: payload ? defaultPayloadConverter.fromPayload(payload) : undefined,
      ...(a.lastFailure?.message ? { lastFailure: a.lastFailure.message } : {}),
      ...(next ? { nextAttemptAt: new Date(Number(next) * 1000) } : {}),
      ...(a.maximumAttempts ? { maximumAttempts: a.maximumAttempts } : {}),
    };
  }));
}

/**
 * Waits for the result, calling `onProgress` whenever the run's progress changes. A failed run
 * rejects with an Error whose message is one line: the innermost cause, with its failure type.
 */
export async function follow<T>(handle: WorkflowHandle, onProgress: (p: Progress[]) => void | Promise<void>, { everyMs = 1000 } = {}): Promise<T> {
  let last = '';
  let done = false;
  const poll = async () => {
    while (!done) {
      try {
        const progress = await currentProgress(handle);
        const key = JSON.stringify(progress);
        // Awaited: one printing at a time, in order, and a printer that fails is caught below.
        if (key !== last && progress.length && !done) await onProgress(progress);
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
    throw new RunFailedError(failureReason(err), { cause: err }); // the cause keeps the failure's type (--json)
  } finally {
    done = true;
    await polling;
  }
}

/** A poller counts as alive when it polled this recently: a long poll lasts about a minute, and the CLI's clock may be off a little from the server's. */
export const POLLER_FRESH_MS = 120_000;
const { TaskQueueKind, TaskQueueType } = proto.temporal.api.enums.v1;

/**
 * Refuses, before anything starts, when no worker polls the task queue for workflows and
 * activities: a run started now would wait silently until one appears, maybe hours later.
 */
export async function ensureWorker(client: Client, config: Config, address = temporalAddress(config)): Promise<void> {
  const now = Date.now();
  for (const [type, what] of [[TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, 'workflow'], [TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, 'activity']] as const) {
    const { pollers } = await client.workflowService.describeTaskQueue({
      namespace: config.temporal.namespace,
      taskQueue: { name: config.temporal.taskQueue, kind: TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
      taskQueueType: type,
    });
    const alive = (pollers ?? []).some((p) => p.lastAccessTime?.seconds && now - Number(p.lastAccessTime.seconds) * 1000 < POLLER_FRESH_MS);
    if (!alive) {
      throw new NoWorkerError(`no worker polls task queue ${config.temporal.taskQueue} (${what} tasks) at ${address}: nothing was started; start one with \`immich-backup start\` (or \`worker\`), then try again`);
    }
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
