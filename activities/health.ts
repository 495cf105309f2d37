import { getClient } from '@temporalio/activity';
import type { StatusReport } from '../core/reports.js';
import { collectStatus, lastRun } from '../status/status.js';
import type { ActivityDeps } from './deps.js';

export interface HealthCheck {
  report: StatusReport;
  /** Problems the previous completed BackupHealth run reported (what was already alarmed on). */
  previousProblems: string[];
}

export function createHealthActivities({ config }: ActivityDeps) {
  return {
    async checkHealth(): Promise<HealthCheck> {
      const client = getClient();
      const report = await collectStatus(config, client);
      const previous = await lastRun(client, 'BackupHealth', true).catch(() => undefined);
      const previousProblems = (previous?.result as { problems?: string[] } | undefined)?.problems ?? [];
      return { report, previousProblems };
    },
  };
}
