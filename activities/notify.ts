import { getClient } from '@temporalio/activity';
import { redactUrl } from '../config/config.js';
import { WORKFLOW_KINDS, type WorkflowType } from '../core/ids.js';
import { redactSecrets, splitCredentials } from '../core/redact.js';
import type { ActivityDeps } from './deps.js';
import { FAILED_STATUSES, newestClosedRun } from '../status/status.js';

// Notifications: healthchecks.io-style pings per workflow (start, success, fail), and for a
// person (failure, recovery, alarm) a generic JSON webhook and ntfy topics. URLs stay in the
// worker's config: workflow history only ever holds the event and the targets' ids.

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
  /** "<target> <origin>: <reason>" for each target still undelivered after its retries. */
  failed: string[];
  recovered: boolean;
}

const ATTEMPTS = 5;
const FIRST_RETRY_MS = 2000;

const PING_KEYS: Record<string, keyof import('../config/config.js').Config['notifications']['pings']> = {
  [WORKFLOW_KINDS.NightlyDbBackup]: 'nightlyDbBackup',
  [WORKFLOW_KINDS.OffsiteSync]: 'offsiteSync',
  [WORKFLOW_KINDS.WeeklyLibraryMirror]: 'weeklyLibraryMirror',
  [WORKFLOW_KINDS.RestoreDrill]: 'restoreDrill',
  [WORKFLOW_KINDS.BackupHealth]: 'backupHealth',
};

interface Delivery {
  id: string;
  url: string;
  init: RequestInit;
}

export function createNotifyActivities({ config, logger }: ActivityDeps) {
  const n = config.notifications;

  /** Whether the run of this kind before this one (still running, so not among the closed) failed: its success now is a recovery. */
  async function previousRunFailed(kind: string): Promise<boolean> {
    const type = (Object.keys(WORKFLOW_KINDS) as WorkflowType[]).find((t) => WORKFLOW_KINDS[t] === kind);
    const previous = type ? await newestClosedRun(getClient(), type) : undefined;
    // A cancelled run sent no failure (an operator's decision), so its successor announces no recovery.
    return previous !== undefined && previous.status !== 'CANCELED' && FAILED_STATUSES.has(previous.status);
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

  /** One target: up to ATTEMPTS tries, waiting 2, 4, 8, 16 s between them; undefined when delivered, else why not. */
  async function deliver(d: Delivery, event: NotificationEvent): Promise<string | undefined> {
    let reason = '';
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        // Credentials in the URL (an endpoint behind basic auth) travel as a header: fetch refuses them in the URL.
        const { url, headers } = splitCredentials(d.url);
        const res = await fetch(url, { ...d.init, headers: { ...(d.init.headers as Record<string, string> | undefined), ...headers }, signal: AbortSignal.timeout(n.timeoutSeconds * 1000) });
        await res.arrayBuffer();
        if (res.ok) return undefined;
        reason = `HTTP ${res.status}`;
      } catch (err) {
        // The client's error text may quote the URL: the reason reaches the log and workflow history.
        reason = redactSecrets((err as Error).name === 'TimeoutError' ? `no answer within ${n.timeoutSeconds} s` : ((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message));
      }
      const last = attempt === ATTEMPTS;
      logger.warn({ target: d.id, url: redactUrl(d.url), event: event.event, kind: event.kind, attempt, reason }, last ? 'notification not delivered; giving up' : 'notification not delivered; retrying');
      if (!last) await new Promise((r) => setTimeout(r, FIRST_RETRY_MS * 2 ** (attempt - 1)));
    }
    return `${d.id} ${redactUrl(d.url)}: ${reason}`;
  }

  return {
    /**
     * Delivers one event to every target it concerns, each on its own (a dead target delays no
     * other), each retried. Never throws for an undelivered notification: it says which failed.
     * A local activity: with no target configured it costs the run no round trip to the server.
     */
    async announce(event: NotificationEvent): Promise<AnnounceResult> {
      const recovered = event.event === 'success' && (n.webhooks.length > 0 || n.ntfy.length > 0) && (await previousRunFailed(event.kind));
      const deliveries = [
        ...ping(event),
        ...(event.event === 'failure' || event.event === 'alarm' || event.event === 'recovered' ? forPeople(event) : []),
        ...(recovered ? forPeople({ ...event, event: 'recovered', message: `${event.kind} recovered: ${event.message}` }) : []),
      ];
      const outcomes = await Promise.all(deliveries.map((d) => deliver(d, event)));
      return {
        delivered: deliveries.filter((_, i) => outcomes[i] === undefined).map((d) => d.id),
        failed: outcomes.filter((o): o is string => o !== undefined),
        recovered,
      };
    },
  };
}
