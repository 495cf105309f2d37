import { Context, getClient } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { LockedResource } from '../core/ids.js';
import { acquireSignal } from '../core/messages.js';
import type { ActivityDeps } from './deps.js';

// The activity side of ResourceLock (workflows/resource-lock.ts): a workflow cannot start another
// workflow with a signal, nor ask whether one still runs; these do it through the worker's client.

export interface LockRequest {
  /** The lock's workflow ID (lockWorkflowId of the requester's task queue and the resource). */
  lockId: string;
  resource: LockedResource;
  /** The requesting run's workflow ID: the lock signals it when it is its turn. */
  requester: string;
}

export function createLockActivities({ config }: ActivityDeps) {
  return {
    /** How long a run waits for the database or library (restore.lockWaitMinutes). */
    async lockSettings(): Promise<{ waitMs: number }> {
      return { waitMs: config.restore.lockWaitMinutes * 60_000 };
    },

    /** Queues `requester` at the resource's lock, starting the lock's workflow if none runs. */
    async requestLock({ lockId, resource, requester }: LockRequest): Promise<void> {
      await getClient().workflow.signalWithStart('ResourceLock', {
        workflowId: lockId,
        taskQueue: Context.current().info.taskQueue,
        args: [{ resource }],
        signal: acquireSignal,
        signalArgs: [{ requester }],
      });
    },

    /** False once the run has closed (completed, failed, cancelled, terminated) or is unknown. */
    async isWorkflowOpen({ workflowId }: { workflowId: string }): Promise<boolean> {
      try {
        const { status } = await getClient().workflow.getHandle(workflowId).describe();
        return status.name === 'RUNNING';
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return false;
        throw err;
      }
    },
  };
}
