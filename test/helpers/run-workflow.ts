import type { Client } from '@temporalio/client';
import type { Config } from '../../config/config.js';
import { createLogger } from '../../config/logger.js';
import { createBackupWorker } from '../../workers/worker.js';
import { startTokenFor } from './trust.js';

/** Runs that need a start token (the CLI adds one): runWorkflow does too, unless the input sets `authorization` itself. */
export const DESTRUCTIVE = new Set(['RestoreDatabase', 'RestoreLibrary', 'WeeklyLibraryMirror']);

const logger = createLogger({ level: 'fatal', fd: 2 });

export interface Outcome<T> {
  report: T | undefined;
  error: unknown;
  workflowId: string;
}

/**
 * Runs one workflow on an in-process worker built from `config` (the real worker factory, real
 * activities), against the test's dev server. `during` runs while the workflow does.
 */
export async function runWorkflow<T>(
  client: Client,
  address: string,
  config: Config,
  workflowType: string,
  during?: (workflowId: string) => Promise<void>,
  input: Record<string, unknown> = {},
): Promise<Outcome<T>> {
  const { worker, connection } = await createBackupWorker({ config, logger, address });
  const workflowId = testWorkflowId(workflowType);
  try {
    return await worker.runUntil(async () => {
      const authorization = DESTRUCTIVE.has(workflowType) && !('authorization' in input) ? { authorization: await startTokenFor(config, workflowType, workflowId, input) } : {};
      const handle = await client.workflow.start(workflowType, { taskQueue: config.temporal.taskQueue, workflowId, args: [{ trigger: 'test', ...authorization, ...input }] });
      await during?.(workflowId);
      return handle.result().then(
        (report) => ({ report: report as T, error: undefined, workflowId }),
        (error: unknown) => ({ report: undefined, error, workflowId }),
      );
    });
  } finally {
    await connection.close();
  }
}

/** Runs `use` while an in-process worker built from `config` (the real factory and activities) polls its task queue. */
export async function withWorker<T>(address: string, config: Config, use: () => Promise<T>): Promise<T> {
  const { worker, connection } = await createBackupWorker({ config, logger, address });
  try {
    return await worker.runUntil(use);
  } finally {
    await connection.close();
  }
}

/** A workflow ID no other test run uses. */
export const testWorkflowId = (type: string) => `test-${type}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

/** The attempt number of every activity task the run started, in history order: a retry shows as 2 or more. */
export async function activityAttempts(client: Client, workflowId: string): Promise<number[]> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  return (history.events ?? []).flatMap((e) => (e.activityTaskStartedEventAttributes ? [e.activityTaskStartedEventAttributes.attempt ?? 1] : []));
}
