#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1
// Memory of the long-running worker, measured by `npm run bench` (bench/results/): V8's young
// generation at 1 MiB per semi-space (16 by default) in this isolate and the workflow thread's
// saves about 35 MiB of peak RSS, and two malloc arenas instead of one per thread (the SDK's
// native core runs several) about 20 MiB more, at no measured cost in speed.
import { defaultPayloadConverter } from '@temporalio/common';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { collectStatus } from '../status/status.js';
import { runBackupWorker } from '../workers/worker.js';
import type { RestoreDatabaseInput, RestoreLibraryInput } from '../workflows/index.js';
import { ScheduleOverlapPolicy, type Client, type WorkflowHandle } from '@temporalio/client';
import { createInterface, type Interface } from 'node:readline/promises';
import { connectClient, ensureWorker, follow, temporalAddress, type Progress } from '../temporal/client.js';
import { innermostCause, innermostMessage } from '../core/failure.js';
import { AWAITING_APPROVAL, describePlan, type ApproveRequest, type RejectRequest, type RestorePlan } from '../core/restore-plan.js';
import { loadConfig, redactConfig, type Config } from '../config/config.js';
import { findTemporalBinary, startDevServer } from '../temporal/dev-server.js';
import { approvalToken, osUser, startToken } from '../adapters/run-auth/index.js';
import { ApprovalRefusedError, ConfigError, RunNotFoundError, RunRefusedError, UnsafePathError, UsageError } from '../core/errors.js';
import { openDumpStore, readKey } from '../adapters/dump-store/index.js';
import { DUMP_NAME_HINT, isDumpName, isImmichBackupName, isRestorePointName, RESTORE_POINT_NAME_HINT } from '../core/dump-names.js';
import { parseAcceptance } from '../adapters/mirror/library-versions.js';
import { existsSync, readFileSync } from 'node:fs';
import { realpath, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { redactSecrets } from '../core/redact.js';
import { ageText, formatBytes, zonedTime } from '../core/format.js';
import { progressText } from './progress-text.js';
import { formatStatus, printReport } from './report-text.js';
import { asOfProblem, selectionPathProblem } from '../core/library-layout.js';
import { LOCK_WORKFLOW_PREFIX, runId, WORKFLOW_KINDS, type WorkflowType } from '../core/ids.js';
import { createLogger } from '../config/logger.js';
import { applySchedules, listSchedules, scheduleDefinition } from '../temporal/schedules.js';
import { registerSearchAttributes } from '../temporal/search-attributes.js';
import { configDriftWarnings } from '../temporal/worker-identity.js';
import { SERVICE_ENV_FILE, SERVICE_NAME, serviceUnit, type ServiceMode } from './service-unit.js';
import { approveUpdate, currentStepQuery, rejectUpdate, restorePlanQuery } from '../core/messages.js';

// A reader that went away (`| head -1`) ends the CLI quietly: what it wanted was printed.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

/** package.json's version: looked up from this file, wherever the build puts it. */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
    if (dirname(dir) === dir) return 'unknown';
  }
}

const program = new Command('immich-backup')
  .description('Durable, verifiable, restorable backups of a self-hosted Immich server, run as Temporal workflows.')
  .version(packageVersion(), '-V, --version', 'print the version')
  .addOption(new Option('-c, --config <file>', 'YAML config file').env('IMMICH_BACKUP_CONFIG'))
  // A usage error is one line and a pointer to the help, not the whole help.
  .showHelpAfterError('(--help shows the usage)')
  // Usage errors reach the catch at the end (exit 2) instead of commander's exit 1; inherited by every subcommand.
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(text) });

/** An option or argument value the CLI refuses before it starts anything: a usage error (exit 2). */
function usageCheck<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError(`${(err as Error).message.replace(/; nothing was started$/, '')}; nothing was started`);
    }
  };
}

/** What --dump names: latest, or a dump file's plain name of one of the kinds a restore loads. */
const dumpArgument = usageCheck((value: string) => {
  if (value === 'latest' || isDumpName(value) || isImmichBackupName(value) || isRestorePointName(value)) return value;
  throw new UsageError(`give latest, ${DUMP_NAME_HINT}, ${RESTORE_POINT_NAME_HINT} or immich-db-backup-….sql.gz: a file's name (see \`immich-backup dumps\`), not a path`);
});

/** Parsed once per command, before anything connects: a bad config fails here. */
function configOf(cmd: Command): Config {
  return loadConfig({ path: configFileOf(cmd) });
}

const configFileOf = (cmd: Command): string | undefined => cmd.optsWithGlobals<{ config?: string }>().config;

program
  .command('start')
  .description('Run the worker; with no temporal.address configured, first start an embedded Temporal dev server (Web UI on :8233)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(cmd);
    const logger = createLogger({ level: config.log.level });
    let address = temporalAddress(config);
    let stopServer: (() => Promise<void>) | undefined;
    if (!config.temporal.address) {
      const server = await startDevServer({
        binary: findTemporalBinary(config.temporal.binary),
        ...config.temporal.devServer,
        namespace: config.temporal.namespace,
        logger,
      });
      address = server.address;
      stopServer = server.stop;
      process.stderr.write(`Temporal Web UI: ${server.uiUrl}  (server ${server.address}, state in ${server.dbFile})\n`);
    }
    try {
      if (config.schedules.applyOnStart) {
        const { client, connection } = await connectClient(config, address);
        try {
          // Schedules set no search attributes; the worker started below registers them before its first task.
          for (const s of await applySchedules(client, config)) logger.info({ schedule: s.id, action: s.action, cron: s.cron, timeZone: s.timeZone, paused: s.paused }, 'schedule applied');
        } finally {
          await connection.close();
        }
      }
      await runBackupWorker({ config, logger, address, configFile: configFileOf(cmd) });
    } finally {
      await stopServer?.();
    }
  });

program
  .command('worker')
  .description('Run the worker against temporal.address (default: the embedded dev server\'s address)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(cmd);
    await runBackupWorker({ config, logger: createLogger({ level: config.log.level }), address: temporalAddress(config), configFile: configFileOf(cmd) });
  });

program
  .command('install-service')
  .description(`Write the systemd unit ${SERVICE_NAME} that runs \`start\` (embedded dev server and worker) or \`worker\` (temporal.address set) as root across reboots, with this config; runs no systemctl`)
  .option('--unit-dir <dir>', 'where to write the unit', '/etc/systemd/system')
  .addOption(new Option('--mode <mode>', 'start: embedded dev server and worker; worker: the worker against temporal.address (default: worker when temporal.address is set, else start)').choices(['start', 'worker']))
  .option('--dry-run', 'print the unit instead of writing it')
  .action(async (opts: { unitDir: string; mode?: ServiceMode; dryRun?: boolean }, cmd: Command) => {
    const file = configFileOf(cmd);
    // The service runs with exactly this file: without one it would run on defaults nobody chose.
    if (!file) throw new ConfigError('install-service needs the config the service will run with: immich-backup -c /etc/immich-backup.yml install-service');
    const config = configOf(cmd);
    const mode = opts.mode ?? (config.temporal.address ? 'worker' : 'start');
    const cliFile = await realpath(fileURLToPath(import.meta.url));
    const unit = serviceUnit({
      mode,
      node: process.execPath,
      cli: cliFile,
      configFile: resolve(file),
      workingDirectory: process.cwd(),
      // systemd's PATH lacks .venv/bin and a node installed elsewhere: the binaries found now are the ones the service runs.
      pathDirs: [dirname(process.execPath), ...(mode === 'start' && !config.temporal.address ? [dirname(resolve(findTemporalBinary(config.temporal.binary)))] : [])],
      documentation: pathToFileURL(join(dirname(cliFile), '..', '..', 'README.md')).href,
    });
    // The unit gives the service a /tmp of its own (PrivateTmp): it would not see a config or a checkout there.
    const warnTmp = () => {
      for (const [what, path] of [['the config', resolve(file)], ['the working directory', process.cwd()]] as const) {
        if (/^\/(var\/)?tmp\//.test(`${path}/`)) process.stderr.write(`warning: ${what} ${path} is under /tmp, which the service does not see (PrivateTmp=yes): move it before enabling the unit\n`);
      }
    };
    if (opts.dryRun) {
      process.stdout.write(unit);
      return warnTmp();
    }
    const target = join(opts.unitDir, SERVICE_NAME);
    const st = await stat(opts.unitDir).catch(() => undefined);
    if (!st?.isDirectory()) throw new ConfigError(`--unit-dir ${opts.unitDir} is not a directory: nothing was written`);
    await writeFile(target, unit, { mode: 0o644 });
    process.stdout.write(
      `wrote ${target} (${mode}, config ${resolve(file)})\n` +
        `  secrets (IMMICH_BACKUP_PG_PASSWORD, IMMICH_BACKUP_TEMPORAL_API_KEY), if any: ${SERVICE_ENV_FILE}, mode 0600\n` +
        `  then: systemctl daemon-reload && systemctl enable --now ${SERVICE_NAME}; logs: journalctl -u ${SERVICE_NAME} -f\n`,
    );
    warnTmp();
  });

const backup = program.command('backup').description('Start a backup now and follow it to the end');

/** `backup <name>`: start the workflow now, follow it, print its report (human or --json). */
function backupCommand(name: string, description: string, workflowType: WorkflowType): void {
  backup
    .command(name)
    .description(description)
    .option('--json', 'print the report as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      printReport(workflowType, await runAndFollow(configOf(cmd), workflowType), opts.json);
    });
}

backupCommand('db', 'Run NightlyDbBackup now: pg_dumpall + the configured compressor into backup.dir, validate, record row counts, prune; prints the report', 'NightlyDbBackup');
backupCommand('offsite', 'Run OffsiteSync now: copy validated dumps the NAS lacks, verify each by sha256 there; prints the report', 'OffsiteSync');

backup
  .command('library')
  .description('Run WeeklyLibraryMirror now: rsync the photo library to the mounted drive, keeping what it overwrites or deletes in a dated version set; prints the report')
  .option('--accept-rewrites <count:digest>', 'approve the rewritten originals a refused run found (it printed COUNT:DIGEST): this run overwrites exactly those, keeping the old versions', usageCheck(parseAcceptance))
  .option('--json', 'print the report as JSON')
  .action(async (opts: { acceptRewrites?: ReturnType<typeof parseAcceptance>; json?: boolean }, cmd: Command) => {
    const input = opts.acceptRewrites !== undefined ? { acceptRewrites: opts.acceptRewrites } : {};
    printReport('WeeklyLibraryMirror', await runAndFollow(configOf(cmd), 'WeeklyLibraryMirror', input), opts.json);
  });

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
    printReport('RestoreDatabase', await runAndFollow(configOf(cmd), 'RestoreDatabase', input), opts.json);
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
    printReport('RestoreLibrary', await runAndFollow(config, 'RestoreLibrary', input), opts.json);
  });

/** The approval token for the run a handle points at: derived from the worker's key and the run's IDs. */
async function decisionToken(handle: WorkflowHandle, keyFile: string): Promise<string> {
  const key = await readKey(keyFile);
  const { runId } = await handle.describe();
  return approvalToken(key, handle.workflowId, runId);
}

/** Sends the approval Update for `plan`'s dump (its sha256, or the one the operator gives), as this OS user, with the run's approval token. */
async function approve(handle: WorkflowHandle, keyFile: string, plan: RestorePlan, opts: { sha256?: string; acceptVersionChange: boolean }): Promise<string> {
  const request: ApproveRequest = { token: await decisionToken(handle, keyFile), by: osUser(), ...(plan.dump ? { sha256: opts.sha256 ?? plan.dump.sha256 } : {}), ...(opts.acceptVersionChange ? { acceptVersionChange: true } : {}) };
  return handle.executeUpdate(approveUpdate, { args: [request] }).catch((err: Error) => {
    throw new ApprovalRefusedError(`not approved: ${innermostMessage(err)}`);
  });
}

async function reject(handle: WorkflowHandle, keyFile: string, reason?: string): Promise<string> {
  const request: RejectRequest = { token: await decisionToken(handle, keyFile), by: osUser(), ...(reason ? { reason } : {}) };
  return handle.executeUpdate(rejectUpdate, { args: [request] }).catch((err: Error) => {
    throw new ApprovalRefusedError(`not rejected: ${innermostMessage(err)}`);
  });
}

/** The plan a restore waits on, or a one-line error saying why there is none. */
async function waitingPlan(handle: WorkflowHandle, verb: string): Promise<RestorePlan> {
  const [step, plan] = await Promise.all([handle.query(currentStepQuery), handle.query(restorePlanQuery)]).catch((err: Error) => {
    throw new RunNotFoundError(`cannot ${verb} ${handle.workflowId}: ${err.message.split('\n')[0]} (\`immich-backup status\` lists the runs)`);
  });
  if (step !== AWAITING_APPROVAL || !plan) throw new ApprovalRefusedError(`${handle.workflowId} is not waiting for approval (its step: ${step}): only a restore that waits for approval can be ${verb === 'approve' ? 'approved' : 'rejected'}`);
  return plan;
}

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

program
  .command('dumps')
  .description('What a restore can load: local dumps, restore points, NAS copies, Immich\'s own backups, with age, size, verified state and recorded row counts')
  .option('--json', 'print as JSON')
  .action(async (opts: { json?: boolean }, cmd: Command) => {
    const catalog = await openDumpStore(configOf(cmd)).list();
    if (opts.json) return void process.stdout.write(JSON.stringify(catalog, null, 2) + '\n');
    const where = { local: 'staging dir', offsite: 'NAS', 'restore-point': 'restore point', immich: "Immich's own" } as const;
    const lines = catalog.entries.map((e) =>
      `${e.file}\n    ${where[e.origin]}; ${e.ageHours !== undefined ? `${ageText(e.ageHours * 3_600_000)} old` : 'age unknown'}; ${e.bytes !== undefined ? formatBytes(e.bytes) : 'size unknown'}; ${e.verified}` +
        `${e.tables !== undefined ? `; ${e.rows} rows in ${e.tables} tables recorded` : ''}${e.immichVersion ? `; Immich ${e.immichVersion}` : ''}\n    immich-backup ${e.restore}`,
    );
    process.stdout.write(`${lines.length ? lines.join('\n') : 'no dump found'}\n${catalog.problems.map((p) => `! ${p}\n`).join('')}`);
    if (!catalog.entries.length) process.exitCode = 1;
  });

program
  .command('adopt <dump>')
  .description("Vouch for a dump in backup.dir that has no valid provenance tag (made before tags existed, or tagged with a lost key): check it in full (stream, completion marker, strict filter, its .sha256), then tag it with the worker's key")
  .action(async (file: string, _opts, cmd: Command) => {
    const verified = await openDumpStore(configOf(cmd)).adopt(file, () => process.stderr.write(`checking ${file} in full (decode, completion marker, strict filter) …\n`));
    process.stdout.write(`adopted ${file}: sha256 ${verified.sha256}, ${formatBytes(verified.bytes)}, databases ${verified.databases.join(', ') || 'unknown'}; it is tagged with the worker's key now (row counts were not recorded for it)\n`);
  });

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

/** A schedule's ID: one of SCHEDULES, refused before connecting. */
const scheduleArgument = usageCheck((id: string) => scheduleDefinition(id).id);

const schedules = program.command('schedules').description('The Temporal Schedules that replace cron: nightly-db-backup, offsite-sync, weekly-library-mirror, backup-health, restore-drill, library-audit');

schedules
  .command('apply')
  .description('Create or update the schedules from the config (a paused schedule stays paused); registers the search attributes')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(cmd);
    await withClient(config, async (client) => {
      await registerSearchAttributes(client.connection.operatorService, config.temporal.namespace);
      for (const s of await applySchedules(client, config)) {
        process.stdout.write(`${s.action} ${s.id}: ${s.cron} (${s.timeZone})${s.paused ? ', still paused' : ''}\n`);
      }
    });
  });

schedules
  .command('list')
  .description('Each schedule: spec, paused state, next runs, last result')
  .option('--json', 'print as JSON')
  .action(async (opts: { json?: boolean }, cmd: Command) => {
    await withClient(configOf(cmd), async (client) => {
      const rows = await listSchedules(client);
      if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      for (const r of rows) {
        if (!r.registered) {
          process.stdout.write(`${r.id}: not registered (run \`immich-backup schedules apply\`)\n`);
          continue;
        }
        process.stdout.write(
          `${r.id}: ${r.cron} (${r.timeZone ?? 'UTC'})${r.paused ? ` PAUSED${r.note ? `: ${r.note}` : ''}` : ''}\n` +
            // As a clock in the schedule's own zone shows them; a paused schedule runs at none of them.
            `  next: ${r.paused ? 'none (paused)' : r.nextRuns?.map((t) => zonedTime(t, r.timeZone)).join(', ') || '-'}\n` +
            `  last: ${r.lastRun ? `${r.lastRun.status} ${r.lastRun.workflowId}` : 'never ran'}\n`,
        );
      }
    });
  });

for (const verb of ['pause', 'resume'] as const) {
  schedules
    .command(verb)
    .argument('<id>', 'the schedule', scheduleArgument)
    .description(`${verb === 'pause' ? 'Pause' : 'Resume'} one schedule`)
    .option('--reason <text>', 'recorded as the schedule\'s note')
    .action(async (id: string, opts: { reason?: string }, cmd: Command) => {
      await withClient(configOf(cmd), async (client) => {
        const handle = client.schedule.getHandle(id);
        const note = opts.reason ?? `${verb}d with immich-backup`;
        await (verb === 'pause' ? handle.pause(note) : handle.unpause(note));
        process.stdout.write(`${id} ${verb}d\n`);
      });
    });
}

schedules
  .command('trigger')
  .argument('<id>', 'the schedule', scheduleArgument)
  .description('Start the schedule\'s workflow now (skipped if a run is still going)')
  .action(async (id: string, _opts, cmd: Command) => {
    await withClient(configOf(cmd), async (client) => {
      // The SDK's default is ALLOW_ALL: a run alongside the running one, which the schedule then does not list as its own (a deleting mirror is refused).
      await client.schedule.getHandle(id).trigger(ScheduleOverlapPolicy.SKIP);
      process.stdout.write(`${id} triggered\n`);
    });
  });

program
  .command('audit')
  .description('Library checks')
  .command('library')
  .description('Run LibraryAudit now: each original Immich\'s database lists, checked on the library and the mirror against Immich\'s SHA-1; goes on with the pass under way (--full: a new whole pass); exits 1 naming missing or damaged files')
  .option('--full', 'start a new pass and check every asset')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { full?: boolean; json?: boolean }, cmd: Command) => {
    printReport('LibraryAudit', await runAndFollow(configOf(cmd), 'LibraryAudit', opts.full ? { full: true } : {}), opts.json);
  });

program
  .command('drill')
  .description('Run RestoreDrill now: restore the newest dump into a throwaway PostgreSQL and compare row counts with those recorded at dump time')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { json?: boolean }, cmd: Command) => {
    printReport('RestoreDrill', await runAndFollow(configOf(cmd), 'RestoreDrill'), opts.json);
  });

program
  .command('status')
  .description('One screen: newest local dump, newest NAS copy, library mirror, schedules, last result of each workflow; exits 1 when anything is stale, missing, failed or unreachable')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { json?: boolean }, cmd: Command) => {
    const config = configOf(cmd);
    let connected: Awaited<ReturnType<typeof connectClient>> | undefined;
    let reason: string | undefined;
    try {
      connected = await connectClient(config);
    } catch (err) {
      reason = (err as Error).message.split('\n')[0];
    }
    // Interrupted (Ctrl-C, a timeout's SIGTERM): every check stops its commands (ssh runs in its own
    // process group, out of the terminal's reach), the rows so far are printed, and status exits.
    const interrupted = new AbortController();
    const interrupt = (signal: NodeJS.Signals) => {
      process.exitCode = signal === 'SIGINT' ? 130 : 143;
      interrupted.abort();
    };
    process.once('SIGINT', interrupt).once('SIGTERM', interrupt);
    try {
      if (connected) await warnOnConfigDrift(connected.client, config);
      const report = await collectStatus(config, connected?.client, Date.now(), reason, interrupted.signal);
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
      if (!report.ok && !interrupted.signal.aborted) process.exitCode = 1;
    } finally {
      process.off('SIGINT', interrupt).off('SIGTERM', interrupt);
      await connected?.connection.close();
    }
  });

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
    printReport(type, await runAndFollow(config, type, input, 'rerun'), opts.json);
  });

program
  .command('config')
  .description('Validate the config and print it with defaults applied (secrets redacted), as YAML; says which file was loaded')
  .option('--json', 'print as JSON (which file was loaded goes to stderr)')
  .action((opts: { json?: boolean }, cmd: Command) => {
    const config = redactConfig(configOf(cmd));
    const file = configFileOf(cmd);
    const source = `config: ${file ? `${resolve(file)} (valid)` : 'no file, defaults (and IMMICH_BACKUP_* variables)'}\n`;
    if (opts.json) {
      process.stderr.write(source);
      return void process.stdout.write(JSON.stringify(config, null, 2) + '\n');
    }
    process.stdout.write(`${source}${toYaml(config)}`);
  });

/** The CLI's own config file, for the drift warning: -c, else $IMMICH_BACKUP_CONFIG (commander reads both). */
const cliConfigFile = () => program.opts<{ config?: string }>().config;

/** Says on stderr, in one line each, when a worker runs with another config than this command read. Never fails the command. */
async function warnOnConfigDrift(client: Client, config: Config): Promise<void> {
  // Bounded: a slow server must not hold up status, which promises each row within its own bound.
  const warnings = await client.connection.withDeadline(Date.now() + 5000, () => configDriftWarnings(client, config, cliConfigFile())).catch(() => []);
  for (const line of warnings) process.stderr.write(`${line}\n`);
}

async function withClient<T>(config: Config, use: (client: Awaited<ReturnType<typeof connectClient>>['client']) => Promise<T>): Promise<T> {
  const { client, connection } = await connectClient(config);
  try {
    return await use(client);
  } finally {
    await connection.close();
  }
}

/** Starts a workflow now (only when a worker will run it), shows its progress on stderr while it runs, and returns its report. */
async function runAndFollow(config: Config, workflowType: WorkflowType, input: object = {}, trigger = 'cli'): Promise<unknown> {
  return withClient(config, async (client) => {
    await ensureWorker(client, config);
    await warnOnConfigDrift(client, config);
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
/** Runs that need a start token: they replace the database or the library, or delete from the mirror. */
const DESTRUCTIVE: readonly WorkflowType[] = ['RestoreDatabase', 'RestoreLibrary', 'WeeklyLibraryMirror'];

async function followPrinting<R = unknown>(client: Client, handle: WorkflowHandle, keyFile: string): Promise<R> {
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

/** --json was asked for: the action's own option, or, for a usage error before any action ran, the command line. */
let jsonOutput: boolean | undefined;
program.hook('preAction', (_program, action) => {
  jsonOutput = action.opts<{ json?: boolean }>().json === true;
});

try {
  await program.parseAsync();
} catch (err) {
  const usage = err instanceof CommanderError;
  if (usage && err.exitCode === 0) process.exit(0); // --help, --version
  // One line, then a non-zero exit: 2 for a usage error (commander printed it) or a config the operator must fix, 1 for everything else.
  const message = redactSecrets((err as Error).message.replace(usage ? /^error: / : /^/, '').split('\n')[0] ?? '');
  if (!usage) process.stderr.write(`error: ${message}\n`);
  if (jsonOutput ?? process.argv.includes('--json')) {
    const cause = innermostCause(err) as Error & { type?: string };
    process.stdout.write(`${JSON.stringify({ ok: false, error: { type: usage ? 'UsageError' : (cause.type ?? cause.name), message } })}\n`);
  }
  process.exit(usage || err instanceof ConfigError || err instanceof UnsafePathError || err instanceof UsageError ? 2 : 1);
}
