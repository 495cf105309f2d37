import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { CancellationScope, isCancellation, log, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { NotificationEvent } from '../activities/notify.js';
import { innermostMessage } from '../core/failure.js';
import { SEARCH_ATTRIBUTES, WORKFLOW_KINDS, type Outcome, type WorkflowType } from '../core/ids.js';
import { notifying } from './activity-options.js';

// What every scheduled workflow shares: its kind and outcome as search attributes (filterable in
// the UI and with `temporal workflow list --query`), and notifications on start, success and
// failure. A notification that cannot be delivered is retried, then logged: never the run's failure.

const KIND = defineSearchAttributeKey(SEARCH_ATTRIBUTES.kind, SearchAttributeType.KEYWORD);
const OUTCOME = defineSearchAttributeKey(SEARCH_ATTRIBUTES.outcome, SearchAttributeType.KEYWORD);

export function setOutcome(type: WorkflowType, outcome: Outcome): void {
  upsertSearchAttributes([
    { key: KIND, value: WORKFLOW_KINDS[type] },
    { key: OUTCOME, value: outcome },
  ]);
}

/** Delivers one event; a failure after the retries is logged, not raised. */
export async function announce(type: WorkflowType, event: NotificationEvent['event'], message: string): Promise<void> {
  const e: NotificationEvent = { kind: WORKFLOW_KINDS[type], workflowId: workflowInfo().workflowId, event, message, at: new Date(Date.now()).toISOString() };
  try {
    // Outside cancellation: a cancelled restore's end (its state) must still reach the operator.
    const { failed } = await CancellationScope.nonCancellable(() => notifying.announce(e));
    if (failed.length) log.warn('notification not delivered after retries', { event, failed });
  } catch (err) {
    log.warn('notification not delivered', { event, reason: innermostMessage(err) });
  }
}

/**
 * Runs a workflow body as a reported run: outcome "running" → "success" | "failure", a start ping
 * sent alongside the work, a success or failure event at the end. The body's error is rethrown.
 */
export async function reported<R>(type: WorkflowType, body: () => Promise<R>, summary: (report: R) => string): Promise<R> {
  setOutcome(type, 'running');
  const started = announce(type, 'start', `${WORKFLOW_KINDS[type]} started`);
  try {
    const report = await body();
    setOutcome(type, 'success');
    // The start ping first: a ping service must not see a success before its start.
    await started;
    await announce(type, 'success', summary(report));
    return report;
  } catch (err) {
    setOutcome(type, 'failure');
    // A cancelled run is an operator's decision, not an alarm.
    if (!isCancellation(err)) {
      await started;
      await announce(type, 'failure', `${WORKFLOW_KINDS[type]} failed: ${innermostMessage(err)}`);
    }
    throw err;
  }
}
