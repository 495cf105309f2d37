import { activityInfo, getClient, heartbeat } from '@temporalio/activity';
import { redactUrl } from '../src/config.js';
import { WORKFLOW_KINDS, type WorkflowType } from '../src/ids.js';
import type { ActivityDeps } from './deps.js';

// Notifications: healthchecks.io-style pings per workflow (start, success, fail), and for a
// person (failure, recovery, alarm) a generic JSON webhook and ntfy topics. URLs stay in the
// worker's config: workflow history only ever holds the event. A target that cannot be reached
// fails the attempt after the others were tried; the retry sends only what is still undelivered.

export type NotificationEventType = 'start' | 'success' | 'failure' | 'recovered' | 'alarm';

export interface NotificationEvent {
  /** The run's kind: nightly-db-backup, offsite-sync, weekly-library-mirror, restore-drill, backup-health. */
  kind: string;
  workflowId: string;
  event: NotificationEventType;
  /** One line. */
  message: string;
  at: string;
}

export interface AnnounceResult {
  delivered: string[];
  recovered: boolean;
}

const PING_KEYS: Record<string, keyof import('../src/config.js').Config['notifications']['pings']> = {
  [WORKFLOW_KINDS.NightlyDbBackup]: 'nightlyDbBackup',
  [WORKFLOW_KINDS.OffsiteSync]: 'offsiteSync',
  [WORKFLOW_KINDS.WeeklyLibraryMirror]: 'weeklyLibraryMirror',
  [WORKFLOW_KINDS.RestoreDrill]: 'restoreDrill',
  [WORKFLOW_KINDS.BackupHealth]: 'backupHealth',
};

const FAILED_STATUSES = new Set(['FAILED', 'TIMED_OUT', 'TERMINATED']);

interface Delivery {
  id: string;
  url: string;
  init: RequestInit;
}

export function createNotifyActivities({ config, logger }: ActivityDeps) {
  const n = config.notifications;

  /** Whether the closed run of this kind before `workflowId` failed: its success now is a recovery. */
  async function previousRunFailed(kind: string, workflowId: string): Promise<boolean> {
    const type = (Object.keys(WORKFLOW_KINDS) as WorkflowType[]).find((t) => WORKFLOW_KINDS[t] === kind);
    if (!type) return false;
    let newest: { closeTime: number; status: string } | undefined;
    for await (const run of getClient().workflow.list({ query: `WorkflowType = "${type}" AND ExecutionStatus != "Running"`, pageSize: 20 })) {
      if (run.workflowId === workflowId || !run.closeTime) continue;
      if (!newest || run.closeTime.getTime() > newest.closeTime) newest = { closeTime: run.closeTime.getTime(), status: run.status.name };
    }
    return newest !== undefined && FAILED_STATUSES.has(newest.status);
  }

  function forPeople(event: NotificationEvent): Delivery[] {
    const title = `immich-backup: ${event.kind} ${event.event}`;
    const urgent = event.event === 'failure' || event.event === 'alarm';
    return [
      ...n.webhooks.map((url, i) => ({
        id: `webhook#${i}:${event.event}`,
        url,
        init: { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ app: 'immich-backup', ...event }) },
      })),
      ...n.ntfy.map((url, i) => ({
        id: `ntfy#${i}:${event.event}`,
        url,
        init: { method: 'POST', headers: { Title: title, Priority: urgent ? 'high' : 'default', Tags: urgent ? 'warning' : 'white_check_mark' }, body: event.message },
      })),
    ];
  }

  function ping(event: NotificationEvent): Delivery[] {
    const key = PING_KEYS[event.kind];
    const base = key ? n.pings[key] : undefined;
    if (!base || event.event === 'recovered' || event.event === 'alarm') return [];
    const url = event.event === 'start' ? `${base.replace(/\/$/, '')}/start` : event.event === 'failure' ? `${base.replace(/\/$/, '')}/fail` : base;
    return [{ id: `ping:${event.event}`, url, init: { method: 'POST', body: event.message } }];
  }

  return {
    /**
     * Delivers one event to every target it concerns. Throws (so Temporal retries) when any
     * target failed; what was delivered is kept in the heartbeat details and not sent again.
     */
    async announce(event: NotificationEvent): Promise<AnnounceResult> {
      const done = new Set<string>((activityInfo().heartbeatDetails as string[] | undefined) ?? []);
      const recovered = event.event === 'success' && (n.webhooks.length > 0 || n.ntfy.length > 0) && (await previousRunFailed(event.kind, event.workflowId));
      const deliveries = [
        ...ping(event),
        ...(event.event === 'failure' || event.event === 'alarm' || event.event === 'recovered' ? forPeople(event) : []),
        ...(recovered ? forPeople({ ...event, event: 'recovered', message: `${event.kind} recovered: ${event.message}` }) : []),
      ];
      const failed: string[] = [];
      for (const d of deliveries) {
        if (done.has(d.id)) continue;
        try {
          const res = await fetch(d.url, { ...d.init, signal: AbortSignal.timeout(n.timeoutSeconds * 1000) });
          await res.arrayBuffer();
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          done.add(d.id);
          heartbeat([...done]);
        } catch (err) {
          const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${n.timeoutSeconds} s` : ((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message);
          failed.push(`${d.id.split(':')[0]} ${redactUrl(d.url)}: ${reason}`);
          logger.warn({ target: d.id, url: redactUrl(d.url), event: event.event, kind: event.kind, attempt: activityInfo().attempt, reason }, 'notification not delivered; it is retried');
        }
      }
      if (failed.length) throw new Error(`notification ${event.event} of ${event.workflowId} not delivered to ${failed.join('; ')}`);
      return { delivered: [...done], recovered };
    },
  };
}
