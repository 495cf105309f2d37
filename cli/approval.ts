import type { WorkflowHandle } from '@temporalio/client';
import { approvalToken, osUser } from '../adapters/run-auth/index.js';
import { readKey } from '../adapters/dump-store/index.js';
import { ApprovalRefusedError } from '../core/errors.js';
import { innermostMessage } from '../core/failure.js';
import { approveUpdate, rejectUpdate } from '../core/messages.js';
import type { ApproveRequest, RejectRequest, RestorePlan } from '../core/restore-plan.js';

// The operator's decision on a restore that waits for approval: from `restore approve`/`reject`
// or from the question a followed run asks at the terminal.

/** The approval token for the run a handle points at: derived from the worker's key and the run's IDs. */
async function decisionToken(handle: WorkflowHandle, keyFile: string): Promise<string> {
  const key = await readKey(keyFile);
  const { runId } = await handle.describe();
  return approvalToken(key, handle.workflowId, runId);
}

/** Sends the approval Update for `plan`'s dump (its sha256, or the one the operator gives), as this OS user, with the run's approval token. */
export async function approve(handle: WorkflowHandle, keyFile: string, plan: RestorePlan, opts: { sha256?: string; acceptVersionChange: boolean }): Promise<string> {
  const request: ApproveRequest = { token: await decisionToken(handle, keyFile), by: osUser(), ...(plan.dump ? { sha256: opts.sha256 ?? plan.dump.sha256 } : {}), ...(opts.acceptVersionChange ? { acceptVersionChange: true } : {}) };
  return handle.executeUpdate(approveUpdate, { args: [request] }).catch((err: Error) => {
    throw new ApprovalRefusedError(`not approved: ${innermostMessage(err)}`);
  });
}

export async function reject(handle: WorkflowHandle, keyFile: string, reason?: string): Promise<string> {
  const request: RejectRequest = { token: await decisionToken(handle, keyFile), by: osUser(), ...(reason ? { reason } : {}) };
  return handle.executeUpdate(rejectUpdate, { args: [request] }).catch((err: Error) => {
    throw new ApprovalRefusedError(`not rejected: ${innermostMessage(err)}`);
  });
}
