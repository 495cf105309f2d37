import type { Client, WorkflowHandle } from '@temporalio/client';
import { createInterface, type Interface } from 'node:readline/promises';
import { startToken } from '../adapters/run-auth/index.js';
import { readKey } from '../adapters/dump-store/index.js';
import { runId, WORKFLOW_KINDS, type WorkflowType } from '../core/ids.js';
import { restorePlanQuery } from '../core/messages.js';
import { AWAITING_APPROVAL, describePlan, type RestorePlan } from '../core/restore-plan.js';
import type { Config } from '../config/config.js';
import { ensureWorker, follow, type Progress } from '../temporal/client.js';
import { approve, reject } from './approval.js';
import { warnOnConfigDrift, withClient } from './context.js';
import { progressText } from './progress-text.js';

// A run the operator watches from the terminal: started here (backup, restore, audit, drill,
// rerun) or elsewhere (follow, cancel), its progress on stderr until it ends.

/** Runs that need a start token: they replace the database or the library, or delete from the mirror. */
const DESTRUCTIVE: readonly WorkflowType[] = ['RestoreDatabase', 'RestoreLibrary', 'WeeklyLibraryMirror'];

/** Starts a workflow now (only when a worker will run it), shows its progress on stderr while it runs, and returns its report. */
export async function runAndFollow(config: Config, configFile: string | undefined, workflowType: WorkflowType, input: object = {}, trigger = 'cli'): Promise<unknown> {
  return withClient(config, async (client) => {
    await ensureWorker(client, config);
    await warnOnConfigDrift(client, config, configFile);
    // A dry run changes nothing: its ID and its summary (the Web UI shows both in its list) set it apart from a restore.
    const dryRun = (input as { dryRun?: unknown }).dryRun === true;
    const workflowId = runId(`${WORKFLOW_KINDS[workflowType]}${dryRun ? '-dry-run' : ''}`, trigger, new Date());
    // Destructive runs carry a start token bound to this workflow ID, made from the worker's key
    // (read here: without it this fails before anything starts).
    const authorization = DESTRUCTIVE.includes(workflowType) ? { authorization: startToken(await readKey(config.security.keyFile), { workflowType, workflowId, input }) } : {};
    const handle = await client.workflow.start(workflowType, {
      taskQueue: config.temporal.taskQueue,
      workflowId,
      args: [{ ...input, ...authorization, trigger }],
      ...(dryRun ? { staticSummary: `DRY RUN of ${workflowType}: verifies and reports, changes nothing` } : {}),
    });
    process.stderr.write(`started ${handle.workflowId}\n`);
    return followPrinting(client, handle, config.security.keyFile);
  });
}

/**
 * Follows a run, printing each new step (with the plan when a restore waits for approval), each
 * retry with its reason and next attempt, and heartbeat details. Ctrl-C stops following, not the
 * run: it says so, and how to follow or cancel it.
 */
export async function followPrinting<R = unknown>(client: Client, handle: WorkflowHandle, keyFile: string): Promise<R> {
  const id = handle.workflowId;
  const leave = () => {
    process.stderr.write(`\nstopped following ${id}; the run goes on.\n  follow it: immich-backup follow ${id}\n  cancel it: immich-backup cancel ${id}\n`);
    process.exit(130);
  };
  process.once('SIGINT', leave);
  process.once('SIGTERM', leave);
  const asking: { prompt?: Interface } = {};
  try {
    return await follow<R>(handle, progressPrinter(client, id, (plan) => askHere(handle, keyFile, plan, asking, leave)));
  } finally {
    asking.prompt?.close();
    process.off('SIGINT', leave);
    process.off('SIGTERM', leave);
  }
}

/**
 * On a terminal, a restore that waits for approval asks right here: yes approves the dump shown
 * (a different Immich version asks once more), no rejects it, Enter leaves it waiting for
 * `restore approve` from elsewhere. Ctrl-C at the question leaves the run running, as anywhere.
 */
async function askHere(handle: WorkflowHandle, keyFile: string, plan: RestorePlan, asking: { prompt?: Interface }, leave: () => void): Promise<void> {
  if (!process.stdin.isTTY || asking.prompt) return;
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  asking.prompt = prompt;
  prompt.on('SIGINT', leave);
  const ask = async (question: string) => (await prompt.question(question)).trim().toLowerCase();
  try {
    const answer = await ask(`approve restoring ${plan.dump ? plan.dump.file : 'the library from the mirror'} now? yes / no / Enter to leave it waiting: `);
    if (answer === 'no') return void process.stderr.write(`${await reject(handle, keyFile, 'rejected at the terminal')}\n`);
    if (answer !== 'yes') return void process.stderr.write(`left waiting: approve with immich-backup restore approve ${handle.workflowId}\n`);
    const versionChange = plan.versionChange && (await ask(`the dump was made with Immich ${plan.dump?.immichVersion}, Immich ${plan.runningImmichVersion} runs now: restore it anyway? yes / no: `)) === 'yes';
    if (plan.versionChange && !versionChange) return void process.stderr.write(`left waiting: nothing was approved\n`);
    process.stderr.write(`${await approve(handle, keyFile, plan, { acceptVersionChange: versionChange })}\n`);
  } catch (err) {
    // The run ended, or was approved elsewhere, while the question was open.
    if ((err as Error).name !== 'AbortError' && !/closed/i.test((err as Error).message)) process.stderr.write(`${(err as Error).message}\n`);
  } finally {
    prompt.close();
  }
}

function progressPrinter(client: Client, workflowId: string, onApproval: (plan: RestorePlan) => Promise<void>): (progress: Progress[]) => Promise<void> {
  const text = progressText();
  return async (progress) => {
    const { lines, step } = text(progress);
    if (lines.length) process.stderr.write(lines.map((l) => `${l}\n`).join(''));
    if (step !== AWAITING_APPROVAL) return;
    const plan = await client.workflow.getHandle(workflowId).query(restorePlanQuery).catch(() => undefined);
    if (plan) {
      process.stderr.write(`${describePlan(plan, Date.now()).replace(/^/gm, '    ')}\n`);
      void onApproval(plan);
    }
  };
}
