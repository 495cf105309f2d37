import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { Client } from '@temporalio/client';
import proto from '@temporalio/proto';
import { POLLER_FRESH_MS } from './client.js';
import { configDigest, type Config } from '../config/config.js';

// The worker publishes the config it runs with in its Temporal identity, which every poller of the
// task queue shows (describeTaskQueue, the Web UI's task queue page): the same for a remote worker,
// and never a secret (a digest and a path, not the contents).

const MARK = ' immich-backup config ';
/** Identities are IDs to the server (about 1000 characters at most): a long path is cut. */
const MAX_PATH = 400;

/** The config file as the worker names it: absolute, or "(defaults)" when none was given. */
export const configFileLabel = (file: string | undefined) => (file ? resolve(file) : '(defaults)');

/** `<pid>@<host> immich-backup config <digest> <file>`: the SDK's default identity, then the config. */
export function workerIdentity(config: Config, configFile: string | undefined): string {
  return `${process.pid}@${hostname()}${MARK}${configDigest(config)} ${configFileLabel(configFile).slice(0, MAX_PATH)}`;
}

export function parseWorkerIdentity(identity: string): { worker: string; digest: string; file: string } | undefined {
  const at = identity.indexOf(MARK);
  const match = at < 0 ? null : /^([0-9a-f]{16}) (.+)$/.exec(identity.slice(at + MARK.length));
  return match ? { worker: identity.slice(0, at), digest: match[1]!, file: match[2]! } : undefined;
}

/**
 * One warning line per live worker on the task queue whose config differs from this process's:
 * a CLI command's -c changes only what the command itself reads; the runs it starts use the
 * worker's config. Workers that publish no digest (older versions) are not compared.
 */
export async function configDriftWarnings(client: Client, config: Config, configFile: string | undefined): Promise<string[]> {
  const { pollers } = await client.workflowService.describeTaskQueue({
    namespace: config.temporal.namespace,
    taskQueue: { name: config.temporal.taskQueue, kind: proto.temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
    taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  });
  const ours = configDigest(config);
  const now = Date.now();
  const warnings = new Set<string>();
  for (const p of pollers ?? []) {
    const published = parseWorkerIdentity(p.identity ?? '');
    const fresh = p.lastAccessTime?.seconds && now - Number(p.lastAccessTime.seconds) * 1000 < POLLER_FRESH_MS;
    if (!published || !fresh || published.digest === ours) continue;
    warnings.add(
      `warning: the worker ${published.worker} runs with config ${published.file} (digest ${published.digest}), not with this command's ${configFileLabel(configFile)} (digest ${ours}): ` +
        "the worker's config is what runs; -c changes only what this command itself reads",
    );
  }
  return [...warnings];
}
