import { constants } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { Context } from '@temporalio/activity';
import { z } from 'zod';
import type { Config } from '../src/config.js';
import { AuditReaderError, CommandFailedError, SourceEmptyError, UnsafePathError } from '../src/errors.js';
import { formatBytes } from '../src/format.js';
import { auditQuota, describeAudit, emptySide, type LibraryAuditReport, type PassProgress } from '../src/library-audit-report.js';
import { redactDeep } from '../src/redact.js';
import type { ActivityDeps } from './deps.js';
import { assetSchema } from './immich-assets.js';
import { mirrorProblemOf, type SliceEvent, type SliceParams } from './library-audit-slice.js';
import { postgresCommand } from './container.js';
import { hasFiles } from './mirror.js';
import { awaitCommand, startCommand } from './run-command.js';
import type { PostgresTarget } from './types.js';

// LibraryAudit's work: every asset Immich's database lists, in id order, its file checked on the
// library and on the mirror against Immich's own SHA-1, read at idle I/O priority. The position
// (the last asset id done, the pass's running counts and first names) is one small snapshot,
// heartbeated (a retry after a lost worker resumes from it) and saved in a state file beside the
// worker's key (the next scheduled run goes on from it). Counts and the position always change
// together, so a resumed pass counts every asset exactly once.

const SAVE_EVERY_MS = 30_000;
const HEARTBEAT_EVERY_MS = 1000;

export const AUDIT_STATE_FILE = 'library-audit.json';

// --- the durable position --------------------------------------------------------------------

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const count = z.number().int().min(0);
const name = z.string().min(1).max(4096);
const when = z.string().datetime();
const sideSchema = z.strictObject({
  ok: count,
  missing: count,
  mismatched: count,
  notChecked: count,
  names: z.strictObject({ missing: z.array(name).max(100), mismatched: z.array(name).max(100) }),
  notCheckedReason: z.string().max(1000).optional(),
});
const passSchema = z.strictObject({
  number: z.number().int().min(1),
  startedAt: when,
  covered: count,
  bytes: count,
  library: sideSchema,
  mirror: sideSchema,
  skipped: z.strictObject({ notContent: count, outsideLibrary: count }),
});
const stateSchema = z.strictObject({
  version: z.literal(1),
  /** The pass in progress; undefined between a completed pass and the next run. */
  pass: passSchema.extend({ after: z.string().regex(UUID).optional() }).optional(),
  lastPass: passSchema.extend({ completedAt: when }).optional(),
  /** The start of the last scheduled run that completed: the interval slices are sized by. */
  lastScheduledRunAt: when.optional(),
  lastRun: z.strictObject({ workflowId: z.string().max(300), startedAt: when, finishedAt: when, covered: count, passNumber: count, passCompleted: z.boolean() }).optional(),
  /** The run in progress (its quota and what it did so far), so a retried attempt goes on with it. */
  run: z
    .strictObject({
      workflowId: z.string().max(300),
      startedAt: when,
      scheduled: z.boolean(),
      quota: count,
      covered: count,
      bytes: count,
      passCompleted: z.boolean(),
      mirrorReason: z.string().max(1000).optional(),
    })
    .optional(),
});
export type AuditState = z.infer<typeof stateSchema>;

export const auditStatePath = (config: Config) => join(dirname(resolve(config.security.keyFile)), AUDIT_STATE_FILE);

/** The state file's directory: owner-only, and neither in backup.dir nor on the drive. */
async function checkStateDir(config: Config, create: boolean): Promise<string> {
  const file = auditStatePath(config);
  const dir = dirname(file);
  const inside = (parent: string) => {
    const rel = relative(resolve(parent), dir);
    return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'));
  };
  if (inside(config.backup.dir) || inside(config.library.mountPoint) || inside(config.library.destination)) {
    throw new UnsafePathError(`the audit's state would go to ${dir} (beside security.keyFile), inside backup.dir or on the drive: move security.keyFile to a directory of its own`);
  }
  if (create) await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir).catch(() => undefined);
  if (!st) return file;
  if (!st.isDirectory()) throw new UnsafePathError(`${dir} (the directory of security.keyFile) is not a directory`);
  if (st.mode & 0o077 || st.uid !== process.getuid?.()) {
    throw new UnsafePathError(`${dir} (the directory of security.keyFile, where the audit keeps its position) is not owner-only (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}): chmod 700 it`);
  }
  return file;
}

/** The saved state: undefined when there is none; `invalid` says why a file that exists could not be used. */
export async function readAuditState(config: Config): Promise<{ state?: AuditState; invalid?: string }> {
  const file = await checkStateDir(config, false);
  let text: string;
  try {
    const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) return { invalid: `${file} is not a regular file` };
      if (st.size > 1024 * 1024) return { invalid: `${file} is ${st.size} bytes, far larger than an audit position` };
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return {};
    if (code === 'ELOOP') return { invalid: `${file} is a symlink` };
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { invalid: `${file} is not JSON` };
  }
  const parsed = stateSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { invalid: `${file}: ${issue.path.join('.') || 'the top level'}: ${issue.message}` };
  }
  return { state: parsed.data };
}

/** Written whole or not at all: a temporary file beside it, synced, renamed over it. */
export async function writeAuditState(config: Config, state: AuditState): Promise<void> {
  const file = await checkStateDir(config, true);
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    try {
      await fh.writeFile(JSON.stringify(stateSchema.parse(state)) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  const dir = await open(dirname(file), constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

// --- reading Immich's assets and hashing files ----------------------------------------------------

/** How many assets Immich's database lists (the pass's size), or how many lie after `after` in id order (what the pass has left). */
async function assetCount(config: Config, target: PostgresTarget, table: string, after?: string): Promise<number> {
  if (after !== undefined && !UUID.test(after)) throw new AuditReaderError(`expected an asset id (a uuid) to count from, found ${JSON.stringify(after)}`);
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

/** What `status` shows of the audit: read from the state file (no Temporal needed). */
export async function auditStatus(config: Config): Promise<{ state?: AuditState; invalid?: string; file: string }> {
  const file = auditStatePath(config);
  return { ...(await readAuditState(config)), file };
}
