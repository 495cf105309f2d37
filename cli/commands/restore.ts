import type { WorkflowHandle } from '@temporalio/client';
import { Option, type Command } from 'commander';
import { ApprovalRefusedError, ConfigError, RunNotFoundError, UsageError } from '../../core/errors.js';
import { DUMP_NAME_HINT, isDumpName, isImmichBackupName, isRestorePointName, RESTORE_POINT_NAME_HINT } from '../../core/dump-names.js';
import { asOfProblem, selectionPathProblem } from '../../core/library-layout.js';
import { currentStepQuery, restorePlanQuery } from '../../core/messages.js';
import { AWAITING_APPROVAL, describePlan, type RestorePlan } from '../../core/restore-plan.js';
import type { RestoreDatabaseInput, RestoreLibraryInput } from '../../workflows/index.js';
import { approve, reject } from '../approval.js';
import { configFileOf, configOf, usageCheck, withClient } from '../context.js';
import { printReport } from '../report-text.js';
import { runAndFollow } from '../run-and-follow.js';

/** What --dump names: latest, or a dump file's plain name of one of the kinds a restore loads. */
const dumpArgument = usageCheck((value: string) => {
  if (value === 'latest' || isDumpName(value) || isImmichBackupName(value) || isRestorePointName(value)) return value;
  throw new UsageError(`give latest, ${DUMP_NAME_HINT}, ${RESTORE_POINT_NAME_HINT} or immich-db-backup-….sql.gz: a file's name (see \`immich-backup dumps\`), not a path`);
});

/** The plan a restore waits on, or a one-line error saying why there is none. */
async function waitingPlan(handle: WorkflowHandle, verb: string): Promise<RestorePlan> {
  const [step, plan] = await Promise.all([handle.query(currentStepQuery), handle.query(restorePlanQuery)]).catch((err: Error) => {
    throw new RunNotFoundError(`cannot ${verb} ${handle.workflowId}: ${err.message.split('\n')[0]} (\`immich-backup status\` lists the runs)`);
  });
  if (step !== AWAITING_APPROVAL || !plan) throw new ApprovalRefusedError(`${handle.workflowId} is not waiting for approval (its step: ${step}): only a restore that waits for approval can be ${verb === 'approve' ? 'approved' : 'rejected'}`);
  return plan;
}

/** `restore db|library` (dry runs included) and the operator's `restore approve|reject`. */
export function registerRestore(program: Command): void {
  const restore = program.command('restore').description('Restores an operator starts and watches; nothing is changed before the dump is verified and the restore approved');

  restore
    .command('db')
    .description('Run RestoreDatabase: verify the dump, show what it holds and wait for approval (unless --yes), take a restore point, stop Immich, restore, start Immich')
    .option('--dump <name>', 'latest, a dump name (immich_YYYYMMDD_HHMMSS.sql.gz or .sql.zst), a restore point (restore-point_….sql.gz) or an Immich backup (immich-db-backup-….sql.gz); see `immich-backup dumps`', dumpArgument, 'latest')
    .addOption(new Option('--from <where>', 'local: the staging dir (the NAS when missing there); offsite: fetch from the NAS').choices(['local', 'offsite']).default('local'))
    .option('--dry-run', 'verify and show what would happen; change nothing')
    .option('--yes', 'approve now instead of waiting for `restore approve`')
    .option('--no-restore-point', 'for a live database that cannot be dumped: restore WITHOUT a restore point (no way back; a partial salvage is saved first)')
    .option('--accept-version-change', 'the dump was made with another Immich version than the one running, and that is intended')
    .option('--json', 'print the report as JSON')
    .action(async (opts: { dump: string; from: 'local' | 'offsite'; dryRun?: boolean; yes?: boolean; restorePoint: boolean; acceptVersionChange?: boolean; json?: boolean }, cmd: Command) => {
      const input: RestoreDatabaseInput = {
        dump: opts.dump,
        from: opts.from,
        dryRun: opts.dryRun === true,
        approved: opts.yes === true,
        ...(opts.restorePoint === false ? { noRestorePoint: true } : {}),
        ...(opts.acceptVersionChange ? { acceptVersionChange: true } : {}),
      };
      printReport('RestoreDatabase', await runAndFollow(configOf(cmd), configFileOf(cmd), 'RestoreDatabase', input), opts.json);
    });

  restore
    .command('library')
    .description('Run RestoreLibrary: the USB mirror back onto the library with Immich stopped; waits for approval unless --yes')
    .option('--dry-run', 'report what rsync would change; change nothing')
    .option('--delete', 'also delete library files the mirror does not have (whole-library restore only)')
    .option('--missing', "only the originals Immich's database references and the library lacks: from the mirror, else from the newest version set holding them intact (checked against Immich's SHA-1)")
    .option('--path <prefix>', 'only this subtree, relative to the library (e.g. library/<user-id>/2024)')
    .option('--as-of <date>', 'the files as the mirror held them then (2026-11-01 or 2026-11-01T12:00:00Z), from the version sets weekly mirror runs keep')
    .option('--yes', 'approve now instead of waiting for `restore approve`')
    .option('--json', 'print the report as JSON')
    .action(async (opts: { dryRun?: boolean; delete?: boolean; missing?: boolean; path?: string; asOf?: string; yes?: boolean; json?: boolean }, cmd: Command) => {
      // Refused before connecting, like a bad config: the option named, nothing started.
      const problem = (opts.path !== undefined && selectionPathProblem(opts.path) && `--path ${JSON.stringify(opts.path)}: ${selectionPathProblem(opts.path)}`) ||
        (opts.asOf !== undefined && asOfProblem(opts.asOf, Date.now()) && `--as-of ${JSON.stringify(opts.asOf)}: ${asOfProblem(opts.asOf, Date.now())}`) ||
        (opts.delete && (opts.missing || opts.path !== undefined || opts.asOf !== undefined) && '--delete restores the whole library: it cannot be combined with --missing, --path or --as-of') ||
        (opts.missing && opts.asOf !== undefined && '--missing cannot be combined with --as-of');
      if (problem) throw new ConfigError(problem);
      const config = configOf(cmd);
      const input: RestoreLibraryInput = {
        dryRun: opts.dryRun === true,
        delete: opts.delete === true,
        approved: opts.yes === true,
        ...(opts.missing ? { missing: true } : {}),
        ...(opts.path !== undefined ? { path: opts.path.replace(/\/+$/, '') } : {}),
        ...(opts.asOf !== undefined ? { asOf: opts.asOf } : {}),
      };
      printReport('RestoreLibrary', await runAndFollow(config, configFileOf(cmd), 'RestoreLibrary', input), opts.json);
    });

  restore
    .command('approve <workflow-id>')
    .description('Approve a restore that waits for an operator: prints what it will load, then approves exactly that dump')
    .option('--sha256 <hex>', 'approve only if the dump to load has this sha256 (the one you were shown)', usageCheck((hex: string) => {
      if (!/^[0-9a-f]{64}$/.test(hex)) throw new UsageError('expected the 64 lowercase hex digits of a sha256');
      return hex;
    }))
    .option('--accept-version-change', 'the dump was made with another Immich version than the one running, and that is intended')
    .action(async (workflowId: string, opts: { sha256?: string; acceptVersionChange?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      await withClient(config, async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        const plan = await waitingPlan(handle, 'approve');
        process.stderr.write(`${describePlan(plan, Date.now())}\n`);
        const answer = await approve(handle, config.security.keyFile, plan, { ...(opts.sha256 ? { sha256: opts.sha256 } : {}), acceptVersionChange: opts.acceptVersionChange === true });
        process.stdout.write(`${answer}\napproved ${workflowId}\n`);
      });
    });

  restore
    .command('reject <workflow-id>')
    .description('Reject a restore that waits for an operator: it ends with nothing changed')
    .option('--reason <text>', 'recorded in the run\'s report')
    .action(async (workflowId: string, opts: { reason?: string }, cmd: Command) => {
      const config = configOf(cmd);
      await withClient(config, async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        await waitingPlan(handle, 'reject');
        const answer = await reject(handle, config.security.keyFile, opts.reason);
        process.stdout.write(`${answer}\nrejected ${workflowId}\n`);
      });
    });
}
