import { condition, defineQuery, defineSignal, defineUpdate, log, setHandler, workflowInfo } from '@temporalio/workflow';
import type { WorkflowType } from '../src/ids.js';
import { approvalProblem, AWAITING_APPROVAL, describePlan, RESTORE_MESSAGES, type ApproveRequest, type RejectRequest, type RestorePlan } from '../src/restore-plan.js';
import { trackSteps, type Steps } from './progress.js';
import { setOutcome } from './reporting.js';

// What the two restore workflows share: the step an operator sees, the approval (a Temporal Update
// whose validator accepts it only while the run waits, and only for the dump the operator was
// shown), the plan the approval is about, and per-step durations for the report.

export const approveUpdate = defineUpdate<string, [ApproveRequest]>(RESTORE_MESSAGES.approve);
export const rejectUpdate = defineUpdate<string, [RejectRequest]>(RESTORE_MESSAGES.reject);
export const restorePlanQuery = defineQuery<RestorePlan | undefined>(RESTORE_MESSAGES.plan);
/** The signal older versions approved with (and the Web UI's "Send a signal" can send, empty): logged, never an approval. */
export const legacyApproveSignal = defineSignal<unknown[]>(RESTORE_MESSAGES.legacySignal);

export type Decision = { approved: true; by: string } | { approved: false; by: string; reason: string } | { approved: false; timedOut: true };

export interface RestoreSteps {
  durations: Record<string, number>;
  steps: Steps;
  /** Runs one named step: it becomes the current step, and its duration is recorded. */
  timed<T>(name: string, work: () => Promise<T>): Promise<T>;
  /** Approved at once when pre-approved (--yes); else shows the plan and waits for the approveRestore or rejectRestore update until the plan's deadline. */
  approval(plan: RestorePlan, timeoutMs: number): Promise<Decision>;
  done(): void;
}

export function restoreSteps(preApproved: boolean, type: WorkflowType): RestoreSteps {
  const steps = trackSteps();
  const durations: Record<string, number> = {};
  let plan: RestorePlan | undefined;
  let waiting = false;
  let decision: Decision | undefined;
  const notWaiting = () => `${workflowInfo().workflowId} is not waiting for approval (its step: ${steps.current()})`;
  // A decision is final: a second approve or reject in the same activation is refused, never applied.
  const decided = () => (decision ? `${workflowInfo().workflowId} was already ${decision.approved ? 'approved' : 'rejected'}` : undefined);

  setHandler(restorePlanQuery, () => plan);
  setHandler(legacyApproveSignal, () => {
    log.warn('an "approve" signal was ignored: a restore is approved with the approveRestore update, which names the dump (immich-backup restore approve <workflow-id>)');
  });
  setHandler(
    approveUpdate,
    (request) => {
      if (decision) return decided()!;
      decision = { approved: true, by: typeof request.by === 'string' && request.by ? request.by : 'unknown' };
      return `approved: ${plan?.dump ? `${plan.dump.file} (sha256 ${plan.dump.sha256}) is restored now` : 'the library restore starts now'}`;
    },
    {
      validator: (request) => {
        if (decision) throw new Error(decided());
        if (!waiting || !plan) throw new Error(notWaiting());
        const problem = approvalProblem(plan, request);
        if (problem) throw new Error(problem);
      },
    },
  );
  setHandler(
    rejectUpdate,
    (request) => {
      if (decision) return decided()!;
      const r: Partial<RejectRequest> = request && typeof request === 'object' ? request : {};
      decision = { approved: false, by: typeof r.by === 'string' && r.by ? r.by : 'unknown', reason: typeof r.reason === 'string' && r.reason ? r.reason : 'rejected' };
      return 'rejected: nothing was changed';
    },
    {
      validator: (_request) => {
        if (decision) throw new Error(decided());
        if (!waiting) throw new Error(notWaiting());
      },
    },
  );

  return {
    durations,
    steps,
    async timed(name, work) {
      steps.set(name);
      const started = Date.now();
      try {
        return await work();
      } finally {
        durations[name] = Date.now() - started;
      }
    },
    async approval(p, timeoutMs) {
      plan = p;
      if (preApproved) return { approved: true, by: 'the run\'s own --yes' };
      waiting = true;
      // The Web UI renders current details as Markdown: the plan keeps its lines in a code block.
      const id = workflowInfo().workflowId;
      steps.set(AWAITING_APPROVAL, `**Awaiting approval.** Approve: \`immich-backup restore approve ${id}\` · reject: \`immich-backup restore reject ${id}\`\n\n\`\`\`\n${describePlan(p, Date.now())}\n\`\`\``);
      setOutcome(type, 'awaiting-approval');
      const started = Date.now();
      try {
        await condition(() => decision !== undefined, timeoutMs);
      } finally {
        waiting = false;
        durations[AWAITING_APPROVAL] = Date.now() - started;
        setOutcome(type, 'running');
      }
      if (decision?.approved) log.info('restore approved', { by: decision.by });
      return decision ?? { approved: false, timedOut: true };
    },
    done() {
      steps.set('done');
    },
  };
}
