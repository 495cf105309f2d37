import { condition, log, patched, setHandler, workflowInfo } from '@temporalio/workflow';
import type { WorkflowType } from '../core/ids.js';
import { sha256Text } from '../core/sha256-text.js';
import { approvalProblem, APPROVER, AWAITING_APPROVAL, describePlan, type RejectRequest, type RestorePlan } from '../core/restore-plan.js';
import { approveUpdate, legacyApproveSignal, rejectUpdate, restorePlanQuery } from '../core/messages.js';
import { authorize } from './activity-options.js';
import { trackSteps, type Steps } from './progress.js';
import { setOutcome } from './reporting.js';
import { AUTHORIZATION_PATCH } from './patches.js';
import { ApprovalRefusedError } from '../core/errors.js';

// What the two restore workflows share: the step an operator sees, the approval (a Temporal Update
// whose validator accepts it only while the run waits, and only for the dump the operator was
// shown), the plan the approval is about, and per-step durations for the report.

export type Decision = { approved: true; by: string } | { approved: false; by: string; reason: string } | { approved: false; timedOut: true };

export interface RestoreSteps {
  durations: Record<string, number>;
  /** The run's first step: its start token (or schedule) is checked by the worker; approvals are then checked against the commitment it returns. */
  authorize(input: { authorization?: string }): Promise<void>;
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
  let commitment: string | undefined;
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
      decision = { approved: true, by: request.by! };
      return `approved: ${plan?.dump ? `${plan.dump.file} (sha256 ${plan.dump.sha256}) is restored now` : 'the library restore starts now'}`;
    },
    {
      validator: (request) => {
        if (decision) throw new ApprovalRefusedError(decided());
        if (!waiting || !plan) throw new ApprovalRefusedError(notWaiting());
        const problem = approvalProblem(plan, request, commitment);
        if (problem) throw new ApprovalRefusedError(problem);
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
      validator: (request) => {
        if (decision) throw new ApprovalRefusedError(decided());
        if (!waiting) throw new ApprovalRefusedError(notWaiting());
        const r: Partial<RejectRequest> & { token?: unknown } = request && typeof request === 'object' ? request : {};
        if (!commitment || typeof r.token !== 'string' || sha256Text(r.token) !== commitment) throw new ApprovalRefusedError('not rejected: no valid approval token for this run (use `immich-backup restore reject`, as the user that can read the worker\'s key)');
        if (typeof r.by !== 'string' || !APPROVER.test(r.by)) throw new ApprovalRefusedError('not rejected: `by` must be the OS user rejecting (the CLI fills it in)');
      },
    },
  );

  return {
    durations,
    steps,
    async authorize(input) {
      // Runs started before authorization existed replay without it; they can no longer be approved
      // (no commitment), so they end at their approval deadline with nothing changed.
      if (!patched(AUTHORIZATION_PATCH)) return;
      steps.set('checking the authorization');
      const granted = await authorize.authorizeRun({ workflowType: type, token: input.authorization, input });
      commitment = granted.approvalCommitment;
      log.info('destructive run authorized', { by: granted.by });
    },
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
