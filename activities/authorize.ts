import { Context, getClient } from '@temporalio/activity';
import { acceptStartToken, approvalCommitment, approvalToken, canonicalInput, grantRun, requireGrant } from '../adapters/files/authorization.js';
import { UnauthorizedError } from '../core/errors.js';
import { readKey } from '../adapters/files/provenance.js';
import type { ActivityDeps } from './deps.js';

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

export function createAuthorizeActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * A destructive run's first step: its start token verifies with the worker's key, is bound to
     * this workflow, unexpired and not used before; or, for a schedule's run, the schedule itself
     * (asked through the server) started this run. Nothing has been touched when this fails.
     */
    async authorizeRun({ workflowType, token, input, scheduleId }: AuthorizeRunInput): Promise<Authorization> {
      const run = Context.current().info.workflowExecution;
      if (!run) throw new UnauthorizedError(`${workflowType}: authorizeRun runs only as a workflow's activity`);
      const { workflowId, runId } = run;
      const key = await readKey(config.security.keyFile);
      const approval = approvalCommitment(approvalToken(key, workflowId, runId));
      // A schedule authorizes only the input the tool gives it ({ trigger: 'schedule' }): its arguments
      // can be edited by anyone who reaches the frontend (an approval of rewrites put there, say).
      const scheduleInput = canonicalInput(input) === '{}' && (input as { trigger?: unknown } | undefined)?.trigger === 'schedule';
      if ((token === undefined || token === '') && scheduleId && !scheduleInput) {
        logger.error({ workflowType, workflowId, scheduleId }, 'destructive run refused: a schedule run with other input than the schedule\'s own');
      }
      if ((token === undefined || token === '') && scheduleId && scheduleInput) {
        const { info } = await getClient().schedule.getHandle(scheduleId).describe().catch(() => ({ info: { runningActions: [] } }));
        if (info.runningActions.some((a) => a.workflow.workflowId === workflowId && a.workflow.firstExecutionRunId === runId)) {
          await grantRun(config.security.keyFile, { workflowType, workflowId, runId });
          logger.info({ workflowType, workflowId, scheduleId }, 'destructive run authorized: started by its schedule');
          return { by: `schedule ${scheduleId}`, runId, approvalCommitment: approval };
        }
      }
      try {
        await acceptStartToken(key, config.security.keyFile, token, { workflowType, workflowId, runId, input: input ?? {} });
      } catch (err) {
        if (err instanceof UnauthorizedError) logger.error({ workflowType, workflowId, reason: err.message }, 'destructive run refused');
        throw err;
      }
      await grantRun(config.security.keyFile, { workflowType, workflowId, runId });
      logger.info({ workflowType, workflowId }, 'destructive run authorized by its start token');
      return { by: 'start token', runId, approvalCommitment: approval };
    },
  };
}

/** For the destructive activities: the calling run must hold a grant (see requireGrant). */
export async function requireAuthorizedRun(keyFile: string, what: string): Promise<void> {
  await requireGrant(keyFile, Context.current().info.workflowExecution, what);
}
