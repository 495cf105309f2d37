import { Context, getClient } from '@temporalio/activity';
import { UnauthorizedError } from '../core/errors.js';
import { openDumpStore } from '../adapters/dump-store/index.js';
import { authorizeRun, type Authorization, type AuthorizeRunInput } from '../adapters/run-auth/index.js';
import type { ActivityDeps } from './deps.js';

export type { Authorization, AuthorizeRunInput } from '../adapters/run-auth/index.js';

export function createAuthorizeActivities({ config, logger }: ActivityDeps) {
  const store = openDumpStore(config, logger);
  return {
    /**
     * A destructive run's first step (adapters/run-auth/authorize.ts): its start token, or for a
     * schedule's run the schedule itself (asked through the server). Nothing has been touched when this fails.
     */
    async authorizeRun(request: AuthorizeRunInput): Promise<Authorization> {
      const run = Context.current().info.workflowExecution;
      if (!run) throw new UnauthorizedError(`${request.workflowType}: authorizeRun runs only as a workflow's activity`);
      const startedBySchedule = async (scheduleId: string) => {
        const { info } = await getClient().schedule.getHandle(scheduleId).describe().catch(() => ({ info: { runningActions: [] } }));
        return info.runningActions.some((a) => a.workflow.workflowId === run.workflowId && a.workflow.firstExecutionRunId === run.runId);
      };
      return authorizeRun({ key: await store.key(), keyFile: config.security.keyFile, logger }, request, run, startedBySchedule);
    },
  };
}
