import { constants } from 'node:fs';
import { lstat, mkdir, open, realpath, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { Context } from '@temporalio/activity';
import { ExecaError } from 'execa';
import { z } from 'zod';
import type { Config } from '../src/config.js';
import { SourceEmptyError, UnsafePathError } from '../src/errors.js';
import { formatBytes } from '../src/format.js';
import { auditQuota, describeAudit, emptySide, type LibraryAuditReport, type PassProgress, type SideReport } from '../src/library-audit-report.js';
import { redactDeep } from '../src/redact.js';
import type { ActivityDeps } from './deps.js';
import { assetSchema, readAssetPage, type ImmichAsset } from './immich-assets.js';
import { postgresCommand } from './container.js';
import { hasFiles, isMountPoint } from './mirror.js';
import { awaitCommand, commandError, startCommand, throwIfCancelled } from './run-command.js';
import type { PostgresTarget } from './types.js';

// LibraryAudit's work: every asset Immich's database lists, in id order, its file checked on the
// library and on the mirror against Immich's own SHA-1, read at idle I/O priority. The position
// (the last asset id done, the pass's running counts and first names) is one small snapshot,
// heartbeated (a retry after a lost worker resumes from it) and saved in a state file beside the
// worker's key (the next scheduled run goes on from it). Counts and the position always change
// together, so a resumed pass counts every asset exactly once.

const PAGE = 1000;
/** A hash batch: this many files or bytes per side, whichever comes first (one sha1sum each side). */
const BATCH_FILES = 512;
const BATCH_BYTES = 128 * 1024 * 1024;
const SAVE_EVERY_MS = 30_000;
const HEARTBEAT_EVERY_MS = 1000;

export const AUDIT_STATE_FILE = 'library-audit.json';

// --- the durable position --------------------------------------------------------------------

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
  pass: passSchema.extend({ after: z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/).optional() }).optional(),
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
  const tmp = `${file}.${process.pid}.tmp`;
  await unlink(tmp).catch(() => undefined);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(JSON.stringify(stateSchema.parse(state)) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(dirname(file), constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

// --- reading Immich's assets and hashing files ----------------------------------------------------

/** How many assets Immich's database lists (the pass's size). */
async function assetCount(config: Config, target: PostgresTarget, table: string): Promise<number> {
  const cmd = postgresCommand(config, target, 'psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-U', config.postgres.user, '-d', config.immich.database, '-c', `SELECT count(*) FROM public.${table}`]);
  const out = String((await awaitCommand(startCommand(cmd.file, cmd.args, { label: 'psql (asset count)', env: cmd.env }), 'psql (asset count)')).stdout ?? '').trim();
  if (!/^\d+$/.test(out)) throw new Error(`psql (asset count) answered ${JSON.stringify(out.slice(0, 80))}, not a number`);
  return Number(out);
}

/**
 * SHA-1 of each file (hex), or undefined for one sha1sum could not read; one sha1sum for the lot,
 * under `prefix` (ionice, nice). -z: names unescaped, records NUL-terminated, in argument order.
 */
export async function sha1Files(paths: readonly string[], prefix: readonly string[]): Promise<Array<string | undefined>> {
  if (!paths.length) return [];
  const [file, ...args] = [...prefix, 'sha1sum', '-z', '--', ...paths];
  const child = startCommand(file!, args, { label: 'sha1sum' });
  let stdout: string;
  try {
    stdout = String((await child).stdout ?? '');
  } catch (err) {
    // Exit 1: some file could not be read (the others were hashed); anything else is a failure.
    if (!(err instanceof ExecaError) || err.exitCode !== 1) throw commandError(err, 'sha1sum');
    throwIfCancelled();
    stdout = String(err.stdout ?? '');
  }
  const records = stdout.split('\0');
  const out: Array<string | undefined> = [];
  let r = 0;
  for (const path of paths) {
    const record = records[r];
    // "<40 hex> <' ' or '*'><name>"
    if (record !== undefined && record.slice(42) === path && /^[0-9a-f]{40} [ *]/.test(record)) {
      out.push(record.slice(0, 40));
      r++;
    } else out.push(undefined);
  }
  return out;
}

type FileCheck = { kind: 'missing' } | { kind: 'other'; why: string } | { kind: 'file'; size: number };
type Skipped = { a: ImmichAsset; skip: 'notContent' | 'outsideLibrary' };
type Audited = { a: ImmichAsset; skip?: undefined; rel: string; library: FileCheck; mirror: FileCheck | undefined };

async function checkFile(path: string): Promise<FileCheck> {
  try {
    const st = await lstat(path);
    return st.isFile() ? { kind: 'file', size: st.size } : { kind: 'other', why: 'not a regular file' };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'missing' };
    return { kind: 'other', why: code ?? 'unreadable' };
  }
}

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
  const priority = [...(lib.ioniceClass ? ['ionice', '-c', String(lib.ioniceClass)] : []), ...(lib.nice ? ['nice', '-n', String(lib.nice)] : [])];
  const keep = lib.audit.reportNames;

  /** Why the mirror cannot be checked now (its files would all read as missing), or undefined. */
  async function mirrorProblem(): Promise<string | undefined> {
    if (!(await isMountPoint(lib.mountPoint))) return `drive not mounted at ${lib.mountPoint}`;
    const mount = await realpath(lib.mountPoint);
    const rel = relative(mount, resolve(lib.destination));
    if (rel.startsWith('..') || rel.startsWith('/')) return `library.destination ${lib.destination} is not on the drive mounted at ${lib.mountPoint}`;
    const real = await realpath(lib.destination).catch(() => undefined);
    if (!real) return `the mirror ${lib.destination} does not exist on the drive`;
    // A symlink on the drive could send the reads anywhere: the mirror must really lie on the drive.
    const [a, b] = await Promise.all([stat(mount), stat(real)]);
    const realRel = relative(mount, real);
    if (a.dev !== b.dev || realRel.startsWith('..') || realRel.startsWith('/')) return `library.destination ${lib.destination} leads to ${real}, off the drive mounted at ${lib.mountPoint}`;
    return undefined;
  }

  const freshPass = (number: number, at: string): NonNullable<AuditState['pass']> => ({
    number,
    startedAt: at,
    covered: 0,
    bytes: 0,
    library: emptySide(),
    mirror: emptySide(),
    skipped: { notContent: 0, outsideLibrary: 0 },
  });

  const note = (side: SideReport, kind: 'missing' | 'mismatched', path: string) => {
    side[kind]++;
    if (side.names[kind].length < keep) side.names[kind].push(path);
  };

  return {
    /**
     * The audit of this run's share of the pass (see auditQuota), resumed from the heartbeat of a
     * lost attempt or from the state file. Heartbeats say how far it is, in words, every second.
     */
    async auditLibrary(input: AuditLibraryInput): Promise<LibraryAuditReport> {
      const ctx = Context.current();
      const started = Date.now();
      const nowIso = new Date(input.startedMs).toISOString();
      if (!(await hasFiles(lib.source))) throw new SourceEmptyError(`the library ${lib.source} is missing or holds no files: is it mounted? Nothing was audited`);

      // Where to go on from: this run's own heartbeat, else the state file.
      let state: AuditState | undefined;
      let resumedFrom: string | undefined;
      const beat = heartbeatSchema.safeParse(ctx.info.heartbeatDetails);
      if (beat.success && beat.data.state.run?.workflowId === input.workflowId) {
        state = beat.data.state;
        resumedFrom = `attempt ${ctx.info.attempt - 1}'s last heartbeat (after ${state.pass?.covered ?? 0} assets of the pass)`;
      }
      let invalidNote: string | undefined;
      if (!state) {
        const saved = await readAuditState(config);
        if (saved.invalid) {
          invalidNote = `the saved audit position was not used (${saved.invalid}): a new pass started`;
          logger.warn({ reason: saved.invalid }, 'audit state not valid; starting a new pass');
        }
        state = saved.state ?? { version: 1 };
        if (state.run?.workflowId === input.workflowId) resumedFrom = `the state file (after ${state.pass?.covered ?? 0} assets of the pass)`;
      }

      const schema = await assetSchema(config, input.target);
      const total = await assetCount(config, input.target, schema.table);
      const mirrorReason = await mirrorProblem();

      if (state.run?.workflowId !== input.workflowId) {
        // A new run: a new pass when none is under way (or --full), then this run's share of it.
        if (!state.pass || input.full) state.pass = freshPass((state.pass?.number ?? state.lastPass?.number ?? 0) + 1, nowIso);
        const remaining = Math.max(0, total - state.pass.covered);
        const quota = input.scheduled && !input.full
          ? auditQuota({ remaining, passStartedMs: Date.parse(state.pass.startedAt), nowMs: input.startedMs, lastRunMs: state.lastScheduledRunAt ? Date.parse(state.lastScheduledRunAt) : undefined, passDays: lib.audit.passDays })
          : Number.MAX_SAFE_INTEGER;
        state.run = { workflowId: input.workflowId, startedAt: nowIso, scheduled: input.scheduled, quota, covered: 0, bytes: 0, passCompleted: false, ...(mirrorReason ? { mirrorReason } : {}) };
      }
      const run = state.run!;
      // The mirror's reason, this attempt: it may have been plugged in or pulled since the last.
      let mirrorOff = mirrorReason;
      if (mirrorOff) run.mirrorReason = mirrorOff;

      let current = '';
      const progress = () => {
        const pass = state.pass ?? state.lastPass;
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
      try {
        await writeAuditState(config, state);
        if (!run.passCompleted && state.pass) {
          const pass = state.pass;
          const fetch = (after: string | undefined, limit: number) => {
            const rows: ImmichAsset[] = [];
            const done = readAssetPage(config, input.target, schema, { after, limit }, (a) => void rows.push(a)).then(() => ({ rows, asked: limit }));
            done.catch(() => undefined); // a prefetched page the loop never reaches
            return done;
          };
          const ask = (left: number) => Math.min(PAGE, left + 1);
          let left = run.quota - run.covered;
          let pending = left > 0 ? fetch(pass.after, ask(left)) : undefined;
          while (pending) {
            const { rows, asked } = await pending;
            pending = undefined;
            const take = rows.slice(0, left);
            const endOfPass = rows.length < asked;
            if (!endOfPass && left - take.length > 0 && take.length) pending = fetch(take.at(-1)!.id, ask(left - take.length));
            for (let i = 0; i < take.length; i += BATCH_FILES) {
              const group = take.slice(i, i + BATCH_FILES);
              const checks = await Promise.all(
                group.map(async (a): Promise<Skipped | Audited> => {
                  if (a.algorithm !== 'sha1') return { a, skip: 'notContent' as const };
                  if (a.relativePath === undefined) return { a, skip: 'outsideLibrary' as const };
                  const [library, mirror] = await Promise.all([checkFile(join(lib.source, a.relativePath)), mirrorOff ? undefined : checkFile(join(lib.destination, a.relativePath))]);
                  return { a, rel: a.relativePath, library, mirror };
                }),
              );
              // Cut the group into hash batches of at most BATCH_BYTES; each batch is committed whole.
              let from = 0;
              while (from < checks.length) {
                let to = from;
                let bytes = 0;
                while (to < checks.length && (to === from || bytes < BATCH_BYTES)) {
                  const c = checks[to]!;
                  if (!c.skip && c.library.kind === 'file') bytes += c.library.size;
                  to++;
                }
                const batch = checks.slice(from, to);
                from = to;
                const hashed = batch.filter((c): c is Audited => !c.skip);
                const libFiles = hashed.filter((c) => c.library.kind === 'file');
                const mirFiles = hashed.filter((c) => c.mirror?.kind === 'file');
                current = hashed[0]?.rel ?? current;
                const [libSums, mirSums] = await Promise.all([
                  sha1Files(libFiles.map((c) => join(lib.source, c.rel)), priority),
                  sha1Files(mirFiles.map((c) => join(lib.destination, c.rel)), priority),
                ]);
                // The drive may have gone while it was read: its files would read as missing.
                if (!mirrorOff && hashed.length && (await mirrorProblem())) {
                  mirrorOff = `the drive went away during the audit (${lib.mountPoint})`;
                  run.mirrorReason = mirrorOff;
                }
                const libSum = new Map(libFiles.map((c, k) => [c, libSums[k]]));
                const mirSum = new Map(mirFiles.map((c, k) => [c, mirSums[k]]));
                // A file sha1sum could not read may have gone since it was looked at: missing, not damaged.
                for (const c of libFiles) if (libSum.get(c) === undefined && (await checkFile(join(lib.source, c.rel))).kind === 'missing') c.library = { kind: 'missing' };
                for (const c of mirFiles) if (mirSum.get(c) === undefined && (await checkFile(join(lib.destination, c.rel))).kind === 'missing') c.mirror = { kind: 'missing' };
                // Commit: counts and the position move together, in id order.
                for (const c of batch) {
                  if (c.skip) pass.skipped[c.skip]++;
                  else {
                    const want = c.a.checksum.toLowerCase();
                    if (c.library.kind === 'missing') note(pass.library, 'missing', c.rel);
                    else if (c.library.kind === 'file' && libSum.get(c) === want) pass.library.ok++;
                    else note(pass.library, 'mismatched', c.rel);
                    if (mirrorOff || !c.mirror) {
                      pass.mirror.notChecked++;
                      pass.mirror.notCheckedReason = mirrorOff ?? pass.mirror.notCheckedReason;
                    } else if (c.mirror.kind === 'missing') note(pass.mirror, 'missing', c.rel);
                    else if (c.mirror.kind === 'file' && mirSum.get(c) === want) pass.mirror.ok++;
                    else note(pass.mirror, 'mismatched', c.rel);
                    const read = (c.library.kind === 'file' ? c.library.size : 0) + (!mirrorOff && c.mirror?.kind === 'file' ? c.mirror.size : 0);
                    pass.bytes += read;
                    run.bytes += read;
                  }
                  pass.covered++;
                  run.covered++;
                  pass.after = c.a.id;
                }
                if (Date.now() - savedAt > SAVE_EVERY_MS) {
                  await writeAuditState(config, state);
                  savedAt = Date.now();
                }
              }
            }
            left -= take.length;
            if (endOfPass) {
              run.passCompleted = true;
              break;
            }
            if (left <= 0) break;
          }
        }

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
        await writeAuditState(config, state);
        logger.info({ covered: run.covered, bytes: run.bytes, pass: report.pass.number, completed: run.passCompleted, library: report.pass.library.ok, mirror: report.pass.mirror.ok }, 'library audit done');
        return report;
      } finally {
        clearInterval(timer);
      }
    },
  };
}

/** What `status` shows of the audit: read from the state file (no Temporal needed). */
export async function auditStatus(config: Config): Promise<{ state?: AuditState; invalid?: string; file: string }> {
  const file = auditStatePath(config);
  return { ...(await readAuditState(config)), file };
}
