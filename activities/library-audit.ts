import { Worker } from 'node:worker_threads';
import { Context } from '@temporalio/activity';
import { z } from 'zod';
import type { Config } from '../config/config.js';
import { AuditReaderError, CommandFailedError, SourceEmptyError } from '../core/errors.js';
import { formatBytes } from '../core/format.js';
import { auditQuota, describeAudit, emptySide, type LibraryAuditReport, type PassProgress } from '../core/library-audit-report.js';
import { redactDeep } from '../core/redact.js';
import type { ActivityDeps } from './deps.js';
import { ASSET_ID, readAuditState, stateSchema, writeAuditState, type AuditState } from '../adapters/mirror/audit-state.js';
import { assetSchema } from '../adapters/immich/immich-assets.js';
import { mirrorProblemOf, type SliceEvent, type SliceParams } from './library-audit-slice.js';
import { postgresCommand } from '../adapters/postgres/command.js';
import { hasFiles } from '../adapters/mirror/drive.js';
import { awaitCommand, startCommand } from '../adapters/commands/run-command.js';
import type { PostgresTarget } from '../core/types.js';

// LibraryAudit's work: every asset Immich's database lists, in id order, its file checked on the
// library and on the mirror against Immich's own SHA-1, read at idle I/O priority. The position
// (the last asset id done, the pass's running counts and first names) is one small snapshot,
// heartbeated (a retry after a lost worker resumes from it) and saved in a state file beside the
// worker's key (the next scheduled run goes on from it). Counts and the position always change
// together, so a resumed pass counts every asset exactly once.

const SAVE_EVERY_MS = 30_000;
const HEARTBEAT_EVERY_MS = 1000;

// --- reading Immich's assets and hashing files ----------------------------------------------------

/** How many assets Immich's database lists (the pass's size), or how many lie after `after` in id order (what the pass has left). */
async function assetCount(config: Config, target: PostgresTarget, table: string, after?: string): Promise<number> {
  if (after !== undefined && !ASSET_ID.test(after)) throw new AuditReaderError(`expected an asset id (a uuid) to count from, found ${JSON.stringify(after)}`);
  const sql = `SELECT count(*) FROM public.${table}${after ? ` WHERE id > '${after}'::uuid` : ''}`;
  const cmd = postgresCommand(config, target, 'psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-U', config.postgres.user, '-d', config.immich.database, '-c', sql]);
  const out = String((await awaitCommand(startCommand(cmd.file, cmd.args, { label: 'psql (asset count)', env: cmd.env }), 'psql (asset count)')).stdout ?? '').trim();
  if (!/^\d+$/.test(out)) throw new CommandFailedError(`psql (asset count) answered ${JSON.stringify(out.slice(0, 80))}, not a number`);
  return Number(out);
}

// The pass runs in a worker thread with a small heap of its own: its garbage (a page of rows, a
// batch's file checks) is collected there, often, instead of growing the
// worker's main heap, whose collector lets it grow by tens of MiB between full collections.
const THREAD_LIMITS = { maxOldGenerationSizeMb: 24, maxYoungGenerationSizeMb: 2 };

/**
 * A worker thread for auditSlice, started now so that its modules load while the activity reads
 * the database; `run` hands it the pass, `onEvent` sees each commit, and the activity's
 * cancellation stops it (and kills its readers). `close` ends it, whether it ran or not.
 */
function auditThread() {
  const thread = new Worker(new URL('./library-audit-thread.js', import.meta.url), { resourceLimits: THREAD_LIMITS, stdout: false, stderr: false });
  const signal = Context.current().cancellationSignal;
  const cancel = () => thread.postMessage({ type: 'cancel' });
  const exited = new Promise<number>((resolveExit) => thread.once('exit', resolveExit));
  const failed = new Promise<Error>((resolveError) => thread.once('error', resolveError));
  return {
    async run(params: SliceParams, onEvent: (e: SliceEvent) => void): Promise<{ state: AuditState; mirrorOff: string | undefined }> {
      signal.addEventListener('abort', cancel, { once: true });
      if (signal.aborted) cancel(); // cancelled while the database was read: the listener came too late
      try {
        return await new Promise((resolvePromise, reject) => {
          thread.on('message', (m: ThreadMessage) => {
            if (m.type === 'done') resolvePromise({ state: m.state, mirrorOff: m.mirrorOff });
            else if (m.type === 'error') reject(signal.aborted ? signal.reason : Object.assign(new Error(m.message), { name: m.name }));
            else onEvent(m);
          });
          void failed.then(reject);
          void exited.then((code) => reject(signal.aborted ? signal.reason : new Error(`the audit thread exited (code ${code}) before it finished`)));
          thread.postMessage({ type: 'start', params });
        });
      } finally {
        signal.removeEventListener('abort', cancel);
      }
    },
    close: () => thread.terminate(),
  };
}

export type ThreadMessage = SliceEvent | { type: 'done'; state: AuditState; mirrorOff: string | undefined } | { type: 'error'; name: string; message: string };

// --- the activity -----------------------------------------------------------------------------------

export interface AuditLibraryInput {
  target: PostgresTarget;
  workflowId: string;
  /** The run's start (workflow time). */
  startedMs: number;
  /** Started by its schedule: a slice sized by passDays. Otherwise the rest of the pass. */
  scheduled: boolean;
  /** Start a new pass and cover all of it. */
  full: boolean;
  trigger: string;
}

const heartbeatSchema = z.object({ state: stateSchema });

export function createLibraryAuditActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;

  const mirrorProblem = () => mirrorProblemOf(lib);

  const freshPass = (number: number, at: string): NonNullable<AuditState['pass']> => ({
    number,
    startedAt: at,
    covered: 0,
    bytes: 0,
    library: emptySide(),
    mirror: emptySide(),
    skipped: { notContent: 0, outsideLibrary: 0 },
  });

  return {
    /**
     * The audit of this run's share of the pass (see auditQuota), resumed from the heartbeat of a
     * lost attempt or from the state file. Heartbeats say how far it is, in words, every second.
     */
    async auditLibrary(input: AuditLibraryInput): Promise<LibraryAuditReport> {
      const ctx = Context.current();
      const started = Date.now();
      const thread = auditThread();
      try {
        const nowIso = new Date(input.startedMs).toISOString();
        if (!(await hasFiles(lib.source))) throw new SourceEmptyError(`the library ${lib.source} is missing or holds no files: is it mounted? Nothing was audited`);

        // Where to go on from: this run's own heartbeat, else the state file.
        let state: AuditState = { version: 1 };
        let resumedFrom: string | undefined;
        const beat = heartbeatSchema.safeParse(ctx.info.heartbeatDetails);
        if (beat.success && beat.data.state.run?.workflowId === input.workflowId) {
          state = beat.data.state;
          resumedFrom = `attempt ${ctx.info.attempt - 1}'s last heartbeat (after ${state.pass?.covered ?? 0} assets of the pass)`;
        }
        let invalidNote: string | undefined;
        if (!resumedFrom) {
          const saved = await readAuditState(config);
          if (saved.invalid) {
            invalidNote = `the saved audit position was not used (${saved.invalid}): a new pass started`;
            logger.warn({ reason: saved.invalid }, 'audit state not valid; starting a new pass');
          }
          state = saved.state ?? { version: 1 };
          if (state.run?.workflowId === input.workflowId) resumedFrom = `the state file (after ${state.pass?.covered ?? 0} assets of the pass)`;
        }

        const [schema, mirrorReason] = await Promise.all([assetSchema(config, input.target), mirrorProblem()]);
        const total = await assetCount(config, input.target, schema.table);

        if (state.run?.workflowId !== input.workflowId) {
          // A new run: a new pass when none is under way (or --full), then this run's share of it.
          if (!state.pass || input.full) state.pass = freshPass((state.pass?.number ?? state.lastPass?.number ?? 0) + 1, nowIso);
          // Counted, not derived from the total: assets deleted since the pass began must not hide the rest.
          const remaining = state.pass.after ? await assetCount(config, input.target, schema.table, state.pass.after) : total;
          const quota = input.scheduled && !input.full
            ? auditQuota({ remaining, passStartedMs: Date.parse(state.pass.startedAt), nowMs: input.startedMs, lastRunMs: state.lastScheduledRunAt ? Date.parse(state.lastScheduledRunAt) : undefined, passDays: lib.audit.passDays })
            : Number.MAX_SAFE_INTEGER;
          state.run = { workflowId: input.workflowId, startedAt: nowIso, scheduled: input.scheduled, quota, covered: 0, bytes: 0, passCompleted: false, ...(mirrorReason ? { mirrorReason } : {}) };
        }
        // The mirror's reason, this attempt: it may have been plugged in or pulled since the last.
        let mirrorOff = mirrorReason;
        if (mirrorOff) state.run!.mirrorReason = mirrorOff;

        let current = '';
        const progress = () => {
          const pass = state.pass ?? state.lastPass;
          // The run's part is gone once the run is recorded as finished; a heartbeat may still fire then.
          const run = state.run ?? { covered: 0, bytes: 0, quota: 0 };
          const secs = Math.max(1, (Date.now() - started) / 1000);
          return {
            step: 'auditing the library',
            checked: `${pass?.covered ?? 0} of ${total} assets (pass ${pass?.number ?? '-'}; this run ${run.covered} of ${run.quota >= Number.MAX_SAFE_INTEGER ? 'the rest' : run.quota})`,
            bytes: formatBytes(run.bytes),
            rate: `${formatBytes(run.bytes / secs)}/s`,
            current,
            mirror: mirrorOff ? `not checked: ${mirrorOff}` : 'checked',
            state,
          };
        };
        const beatNow = () => ctx.heartbeat(redactDeep(progress()));
        beatNow();
        const timer = setInterval(beatNow, HEARTBEAT_EVERY_MS);
        let savedAt = Date.now();
        // One save at a time, the last one after every periodic one.
        let saving: Promise<void> = Promise.resolve();
        try {
          await writeAuditState(config, state);
          if (!state.run!.passCompleted && state.pass) {
            const result = await thread.run({ config, target: input.target, schema, state, mirrorOff }, (e) => {
              if (e.type === 'commit') state = e.state;
              current = e.current;
              if (Date.now() - savedAt > SAVE_EVERY_MS) {
                savedAt = Date.now();
                const snapshot = state;
                saving = saving.then(() => writeAuditState(config, snapshot)).catch((err: Error) => logger.warn({ err: err.message }, 'audit position not saved; the run goes on'));
              }
            });
            state = result.state;
            mirrorOff = result.mirrorOff;
          }
          // No heartbeat from here on: the state is rewritten below (state.run goes), and a beat
          // in between would read a run that is no longer there.
          clearInterval(timer);
          const run = state.run!;
          // The run's end: a completed pass becomes the last pass; the next run starts a new one.
          const finishedAt = new Date().toISOString();
          const pass = state.pass ?? (state.lastPass as NonNullable<AuditState['pass']>);
          const { after: _after, ...progressOnly } = pass;
          const report: LibraryAuditReport = {
            pass: { ...(progressOnly as PassProgress), completed: run.passCompleted, ...(run.passCompleted ? { completedAt: finishedAt } : {}) },
            totalAssets: total,
            run: { covered: run.covered, bytes: run.bytes, quota: Math.min(run.quota, total), durationMs: Date.now() - started, ...(resumedFrom ? { resumedFrom } : {}) },
            trigger: input.trigger,
            message: '',
          };
          if (mirrorOff && report.pass.mirror.ok + report.pass.mirror.missing + report.pass.mirror.mismatched === 0) report.pass.mirror.notCheckedReason = mirrorOff;
          report.message = `${describeAudit(report)}${invalidNote ? `; ${invalidNote}` : ''}`;
          if (run.passCompleted && state.pass) {
            state.lastPass = { ...(progressOnly as PassProgress), completedAt: finishedAt };
            delete state.pass;
          }
          state.lastRun = { workflowId: input.workflowId, startedAt: run.startedAt, finishedAt, covered: run.covered, passNumber: report.pass.number, passCompleted: run.passCompleted };
          if (run.scheduled) state.lastScheduledRunAt = run.startedAt;
          delete state.run;
          await saving;
          await writeAuditState(config, state);
          logger.info({ covered: run.covered, bytes: run.bytes, pass: report.pass.number, completed: run.passCompleted, library: report.pass.library.ok, mirror: report.pass.mirror.ok }, 'library audit done');
          return report;
        } finally {
          clearInterval(timer);
        }
      } finally {
        await thread.close();
      }
    },
  };
}
