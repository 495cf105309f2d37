import { Context, getClient } from '@temporalio/activity';
import { acceptStartToken, approvalCommitment, approvalToken } from '../src/authorization.js';
import { UnauthorizedError } from '../src/errors.js';
import { readKey } from '../src/provenance.js';
import type { ActivityDeps } from './deps.js';

export interface AuthorizeRunInput {
  workflowType: string;
  /** The start token the CLI put in the run's input. */
  token?: unknown;
  /** A schedule whose own runs need no token (the weekly mirror's): the schedule must list this very run. */
  scheduleId?: string;
}

export interface Authorization {
  /** How the run was authorized, for the report. */
  by: string;
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
    async authorizeRun({ workflowType, token, scheduleId }: AuthorizeRunInput): Promise<Authorization> {
      const run = Context.current().info.workflowExecution;
      if (!run) throw new UnauthorizedError(`${workflowType}: authorizeRun runs only as a workflow's activity`);
      const { workflowId, runId } = run;
      const key = await readKey(config.security.keyFile);
      const approval = approvalCommitment(approvalToken(key, workflowId, runId));
      if ((token === undefined || token === '') && scheduleId) {
        const { info } = await getClient().schedule.getHandle(scheduleId).describe().catch(() => ({ info: { runningActions: [] } }));
        if (info.runningActions.some((a) => a.workflow.workflowId === workflowId && a.workflow.firstExecutionRunId === runId)) {
          logger.info({ workflowType, workflowId, scheduleId }, 'destructive run authorized: started by its schedule');
          return { by: `schedule ${scheduleId}`, approvalCommitment: approval };
        }
      }
      try {
        await acceptStartToken(key, config.security.keyFile, token, { workflowType, workflowId, runId });
      } catch (err) {
        if (err instanceof UnauthorizedError) logger.error({ workflowType, workflowId, reason: err.message }, 'destructive run refused');
        throw err;
      }
      logger.info({ workflowType, workflowId }, 'destructive run authorized by its start token');
      return { by: 'start token', approvalCommitment: approval };
    },
  };
}
