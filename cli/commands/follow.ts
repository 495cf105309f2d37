import { defaultPayloadConverter } from '@temporalio/common';
import type { Command } from 'commander';
import { RunNotFoundError, RunRefusedError } from '../../core/errors.js';
import { LOCK_WORKFLOW_PREFIX, WORKFLOW_KINDS, type WorkflowType } from '../../core/ids.js';
import { configFileOf, configOf, withClient } from '../context.js';
import { printReport } from '../report-text.js';
import { followPrinting, runAndFollow } from '../run-and-follow.js';

/** `follow` and `cancel`: a run already going, started here, by a schedule or from another terminal. */
export function registerFollow(program: Command): void {
  program
    .command('follow <workflow-id>')
    .description('Follow a run (started here, from a schedule or another terminal) to its end, showing its steps, waits and retries')
    .option('--json', 'print the result as JSON')
    .action(async (workflowId: string, opts: { json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      await withClient(config, async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        const { type } = await handle.describe().catch((err: Error) => {
          throw new RunNotFoundError(`cannot follow ${workflowId}: ${err.message.split('\n')[0]} (\`immich-backup status\` lists the runs)`);
        });
        printReport(type, await followPrinting(client, handle, config.security.keyFile), opts.json);
      });
    });

  program
    .command('cancel <workflow-id>')
    .description('Cancel a run and wait until it has left a known state (a restore puts the restore point back and starts Immich); prints that state')
    .action(async (workflowId: string, _opts, cmd: Command) => {
      const config = configOf(cmd);
      await withClient(config, async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        const { status } = await handle.describe().catch((err: Error) => {
          throw new RunNotFoundError(`cannot cancel ${workflowId}: ${err.message.split('\n')[0]} (\`immich-backup status\` lists the runs)`);
        });
        if (status.name !== 'RUNNING') throw new RunRefusedError(`${workflowId} is not running (${status.name}): nothing to cancel`);
        if (workflowId.startsWith(LOCK_WORKFLOW_PREFIX)) throw new RunRefusedError(`${workflowId} guards the database or library for the runs that hold it: it is not cancelled (cancel the run that holds it instead)`);
        await handle.cancel();
        process.stderr.write(`cancellation of ${workflowId} requested; waiting until it has left a known state …\n`);
        try {
          const result = await followPrinting<Record<string, unknown> | undefined>(client, handle, config.security.keyFile);
          process.stdout.write(`${workflowId} finished before the cancellation took effect: ${typeof result?.message === 'string' ? result.message : 'completed'}\n`);
        } catch (err) {
          const end = (err as Error).message.replace(/^workflow failed: /, '');
          process.stdout.write(`${workflowId} ended: ${end}\n`);
          // A known but bad state (the rollback failed, Immich not healthy) is not a clean end.
          if (/FAILED|NOT healthy/.test(end)) process.exitCode = 1;
        }
      });
    });
}

/** `rerun`: a new run of a workflow with the input of an earlier one, followed like any run started here. */
export function registerRerun(program: Command): void {
  program
    .command('rerun <workflow-id>')
    .description('Start a new run of a workflow with the same input (the Web UI\'s re-run, from the terminal) and follow it; a restore waits for approval again unless --yes')
    .option('--yes', 'a rerun restore is approved now instead of waiting for `restore approve`')
    .option('--json', 'print the report as JSON')
    .action(async (workflowId: string, opts: { yes?: boolean; json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const { type, input } = await withClient(config, async (client) => {
        const history = await client.workflow.getHandle(workflowId).fetchHistory().catch((err: Error) => {
          throw new RunNotFoundError(`cannot rerun ${workflowId}: ${err.message.split('\n')[0]} (\`immich-backup status\` lists the runs)`);
        });
        const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
        const name = started?.workflowType?.name ?? '';
        if (!(name in WORKFLOW_KINDS)) throw new RunRefusedError(`cannot rerun ${workflowId}: ${name || 'its type'} is not an immich-backup workflow (expected one of ${Object.keys(WORKFLOW_KINDS).join(', ')})`);
        const payload = started?.input?.payloads?.[0];
        const decoded = payload ? defaultPayloadConverter.fromPayload<Record<string, unknown>>(payload) : {};
        return { type: name as WorkflowType, input: typeof decoded === 'object' && decoded !== null ? decoded : {} };
      });
      // Nothing destructive without a fresh confirmation: an approval is never carried over.
      if (type.startsWith('Restore') && type !== 'RestoreDrill') input.approved = opts.yes === true;
      // A start token is never carried over either (it was single-use): runAndFollow makes a fresh one.
      delete input.authorization;
      process.stderr.write(`rerun of ${workflowId} (${type}) with input ${JSON.stringify({ ...input, trigger: 'rerun' })}\n`);
      printReport(type, await runAndFollow(config, configFileOf(cmd), type, input, 'rerun'), opts.json);
    });
}
