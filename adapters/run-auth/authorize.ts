import type { Logger } from '../../config/logger.js';
import { UnauthorizedError } from '../../core/errors.js';
import { grantRun } from './grants.js';
import { acceptStartToken, approvalCommitment, approvalToken, canonicalInput } from './tokens.js';

export interface AuthorizeRunInput {
  workflowType: string;
  /** The start token the CLI put in the run's input. */
  token?: unknown;
  /** The run's input: the token must have been made for exactly this. */
  input?: unknown;
  /** A schedule whose own runs need no token (the weekly mirror's): the schedule must list this very run. */
  scheduleId?: string;
}

export interface Authorization {
  /** How the run was authorized, for the report. */
  by: string;
  /** The run this authorization is for: a reset run replays it, and must refuse it. */
  runId: string;
  /** sha256 of this run's approval token: the approval's validator compares against it. */
  approvalCommitment: string;
}

/**
 * A destructive run's authorization: its start token verifies with the worker's key, is bound to
 * this workflow, unexpired and not used before; or, for a schedule's run, the schedule itself
 * started this run (`startedBySchedule` asks the server). The run is granted (grants.ts) and its
 * approval commitment handed back. Nothing has been touched when this fails.
 */
export async function authorizeRun(
  { key, keyFile, logger }: { key: Buffer; keyFile: string; logger: Logger },
  { workflowType, token, input, scheduleId }: AuthorizeRunInput,
  { workflowId, runId }: { workflowId: string; runId: string },
  startedBySchedule: (scheduleId: string) => Promise<boolean>,
): Promise<Authorization> {
  const approval = approvalCommitment(approvalToken(key, workflowId, runId));
  // A schedule authorizes only the input the tool gives it ({ trigger: 'schedule' }): its arguments
  // can be edited by anyone who reaches the frontend (an approval of rewrites put there, say).
  const scheduleInput = canonicalInput(input) === '{}' && (input as { trigger?: unknown } | undefined)?.trigger === 'schedule';
  if ((token === undefined || token === '') && scheduleId && !scheduleInput) {
    logger.error({ workflowType, workflowId, scheduleId }, 'destructive run refused: a schedule run with other input than the schedule\'s own');
  }
  if ((token === undefined || token === '') && scheduleId && scheduleInput && (await startedBySchedule(scheduleId))) {
    await grantRun(keyFile, { workflowType, workflowId, runId });
    logger.info({ workflowType, workflowId, scheduleId }, 'destructive run authorized: started by its schedule');
    return { by: `schedule ${scheduleId}`, runId, approvalCommitment: approval };
  }
  try {
    await acceptStartToken(key, keyFile, token, { workflowType, workflowId, runId, input: input ?? {} });
  } catch (err) {
    if (err instanceof UnauthorizedError) logger.error({ workflowType, workflowId, reason: err.message }, 'destructive run refused');
    throw err;
  }
  await grantRun(keyFile, { workflowType, workflowId, runId });
  logger.info({ workflowType, workflowId }, 'destructive run authorized by its start token');
  return { by: 'start token', runId, approvalCommitment: approval };
}
