import { closeSync, constants, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Context } from '@temporalio/activity';
import { execa, ExecaError, type Options, type ResultPromise } from 'execa';
import { CommandFailedError, CommandNotFoundError, StalledError } from '../../core/errors.js';
import { redactDeep } from '../../core/redact.js';

// The one way this tool runs subprocesses: argument arrays only (never a shell string), the
// activity's cancellation wired to the child's whole process group, heartbeats while it runs,
// and failures mapped to named errors whose message ends with the child's stderr tail.

const STDERR_TAIL_CHARS = 500;
const HEARTBEAT_EVERY_MS = 1000;
// pg_dumpall waits on its pg_dump children; give them a moment to exit on SIGTERM, then SIGKILL.
const FORCE_KILL_AFTER_MS = 5000;

export interface CommandOptions {
  /** Names the step in error messages, e.g. "pg_dumpall". */
  label: string;
  cwd?: string;
  /** Added to this process's environment (secrets travel here, never in argv). */
  env?: Record<string, string>;
  input?: string;
  /** 'stream': the caller consumes stdout itself; nothing is buffered. A number: that open file descriptor (one end of a pipe between two commands). */
  stdout?: 'pipe' | 'stream' | 'ignore' | number;
  stdin?: 'pipe' | 'ignore' | number;
  /** Also stops the command (its whole process group) when aborted, e.g. by status's row bound. */
  signal?: AbortSignal;
  /** Stops the command (its whole process group) after this long; the failure says "did not finish within". */
  timeoutMs?: number;
  /** Runs as this user and group (this process is root): the drill's throwaway PostgreSQL. */
  uid?: number;
  gid?: number;
  /** false: a non-zero exit resolves (read exitCode) instead of failing; the activity's cancellation still stops it. */
  reject?: false;
  /**
   * A server that runs beside this process (the drill's throwaway PostgreSQL, the Temporal dev
   * server): it stays in this process's group so a Ctrl-C reaches it, is stopped when this process
   * exits, and its exit resolves (reject: false) for the caller to read its exitCode and stderr.
   */
  server?: true;
}

export type Subprocess = ResultPromise<Options>;

// Servers are not process-group leaders: they are stopped by their own pid.
const servers = new WeakSet<Subprocess>();

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // not inside an activity (CLI, tests of the runner itself)
  }
}

/** Starts a subprocess; pair with `awaitCommand` (or use `runCommand`). */
export function startCommand(file: string, args: readonly string[], options: CommandOptions): Subprocess {
  const signals = [activityContext()?.cancellationSignal, options.signal].filter((s): s is AbortSignal => s !== undefined);
  const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  const stdout = options.stdout ?? 'pipe';
  const subprocess = execa(file, args, {
    cwd: options.cwd,
    env: options.env,
    extendEnv: true,
    // A file descriptor number is handed to the child as is (execa's types only name 0-2).
    ...(options.input !== undefined ? { input: options.input } : { stdin: (options.stdin ?? 'ignore') as 'ignore' }),
    stdout: (stdout === 'stream' ? 'pipe' : stdout) as 'pipe',
    stderr: 'pipe',
    buffer: { stdout: stdout === 'pipe', stderr: true },
    // Own process group: cancelling reaches grandchildren too (pg_dumpall's pg_dump, rsync's ssh).
    // A server stays in ours instead, and execa stops it when this process exits.
    ...(options.server ? { detached: false, cleanup: true, reject: false } : { detached: true }),
    ...(options.reject === false ? { reject: false } : {}),
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
    cancelSignal: signal,
    // execa's timeout marks the failure (timedOut); the group kill below reaches grandchildren too.
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
    forceKillAfterDelay: FORCE_KILL_AFTER_MS,
  }) as Subprocess;
  if (options.server) servers.add(subprocess);
  const killGroup = () => {
    stopCommand(subprocess);
    // A child that ignores SIGTERM (or whose grandchildren do) still goes.
    setTimeout(() => stopCommand(subprocess, 'SIGKILL'), FORCE_KILL_AFTER_MS).unref();
  };
  const timer = options.timeoutMs !== undefined ? setTimeout(killGroup, options.timeoutMs) : undefined;
  signal?.addEventListener('abort', killGroup, { once: true });
  const settled = () => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', killGroup);
  };
  subprocess.then(settled, settled);
  return subprocess;
}

interface PipedCommand {
  file: string;
  args: readonly string[];
  label: string;
  env?: Record<string, string>;
}

/**
 * `producer | consumer` without a shell: the two share an OS pipe (a FIFO opened here, unlinked
 * at once), so the bytes between them never pass through this process. The consumer's stdout is
 * the caller's to stream.
 */
export async function startPipedPair(
  producer: PipedCommand,
  consumer: PipedCommand,
  progress?: () => unknown,
): Promise<{ producer: Subprocess; consumer: Subprocess }> {
  const dir = await mkdtemp(join(tmpdir(), 'immich-backup-pipe-'));
  const fifo = join(dir, 'pipe');
  let readEnd: number | undefined;
  let writeEnd: number | undefined;
  try {
    await runCommand('mkfifo', ['-m', '600', fifo], { label: 'mkfifo', ...(progress ? { progress } : {}) });
    // Opening a FIFO blocks until the other end is open, except a non-blocking read: with that one
    // held, the write end and a blocking read end open at once, and the children get plain pipes.
    const probe = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      writeEnd = openSync(fifo, constants.O_WRONLY);
      readEnd = openSync(fifo, constants.O_RDONLY);
    } finally {
      closeSync(probe);
    }
  } catch (err) {
    if (writeEnd !== undefined) closeSync(writeEnd);
    throw err;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  try {
    const reader = startCommand(consumer.file, consumer.args, { label: consumer.label, env: consumer.env, stdin: readEnd, stdout: 'stream' });
    const writer = startCommand(producer.file, producer.args, { label: producer.label, env: producer.env, stdout: writeEnd });
    // Returned in the tick they started, so the caller consumes the consumer's stdout from its first byte.
    return { producer: writer, consumer: reader };
  } finally {
    // The children hold their own copies; ours must go, or the consumer never sees the end.
    closeSync(readEnd);
    closeSync(writeEnd);
  }
}

/** SIGTERM (or `signal`) to the subprocess's whole process group (it leads one: see `detached`), or to a server itself. */
export function stopCommand(subprocess: Subprocess, signal: NodeJS.Signals = 'SIGTERM'): void {
  if (subprocess.pid === undefined) return;
  try {
    process.kill(servers.has(subprocess) ? subprocess.pid : -subprocess.pid, signal);
  } catch {
    // already gone
  }
}

/** Awaits a subprocess, turning its failure into a named error (or the activity's cancellation). */
export async function awaitCommand<T>(subprocess: PromiseLike<T>, label: string): Promise<T> {
  try {
    return await subprocess;
  } catch (err) {
    throw commandError(err, label);
  }
}

/** The activity's cancellation, when it was cancelled. Rethrowing it makes Temporal record a cancellation, not a failure. */
function cancellation(): { reason: unknown } | undefined {
  const signal = activityContext()?.cancellationSignal;
  return signal?.aborted ? { reason: signal.reason } : undefined;
}

/** Throws the activity's cancellation, when it was cancelled: whatever else failed is its echo. */
export function throwIfCancelled(): void {
  const cancelled = cancellation();
  if (cancelled) throw cancelled.reason;
}

export function commandError(err: unknown, label: string): unknown {
  const cancelled = cancellation();
  if (cancelled) return cancelled.reason;
  if (!(err instanceof ExecaError)) return err;
  if (err.code === 'ENOENT') {
    return new CommandNotFoundError(`${label}: command not found: ${String(err.command).split(' ')[0]} (install it or fix its path in the config)`);
  }
  if (err.timedOut) {
    const tail = stderrTail(err.stderr);
    return new CommandFailedError(`${label} timed out: stopped it${tail ? `: ${tail}` : ''}`, outcome(err));
  }
  const how = err.signal ? `killed by ${err.signal}` : err.exitCode !== undefined ? `exit code ${err.exitCode}` : err.shortMessage;
  const tail = stderrTail(err.stderr);
  return new CommandFailedError(`${label} failed (${how})${tail ? `: ${tail}` : ''}`, outcome(err));
}

/** How the child ended, for CommandFailedError's fields (execa's signal wins over its exit code, as in the message). */
function outcome(err: ExecaError): { exitCode?: number; signal?: string } {
  if (err.signal) return { signal: err.signal };
  return err.exitCode !== undefined ? { exitCode: err.exitCode } : {};
}

export function stderrTail(stderr: unknown): string {
  const text = typeof stderr === 'string' ? stderr : Array.isArray(stderr) ? stderr.join('\n') : '';
  const oneLine = text.trim().split('\n').map((l) => l.trim()).filter(Boolean).join(' | ');
  return oneLine.length > STDERR_TAIL_CHARS ? '…' + oneLine.slice(-STDERR_TAIL_CHARS) : oneLine;
}

/** Heartbeats `details()` every second while `work` runs, when called inside an activity. */
export async function withHeartbeats<T>(work: Promise<T>, details: () => unknown): Promise<T> {
  const ctx = activityContext();
  if (!ctx) return work;
  // Heartbeat details reach workflow history and the CLI's progress lines: no URL credentials.
  ctx.heartbeat(redactDeep(details()));
  const timer = setInterval(() => ctx.heartbeat(redactDeep(details())), HEARTBEAT_EVERY_MS);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}

/** Runs a command to its end. `progress: false`: no heartbeats of its own (the caller heartbeats around it). */
export async function runCommand(
  file: string,
  args: readonly string[],
  options: CommandOptions & { progress?: (() => unknown) | false },
): Promise<{ stdout: string; stderr: string }> {
  const started = Date.now();
  const progress = options.progress ?? (() => ({ step: options.label, runningSeconds: Math.round((Date.now() - started) / 1000) }));
  const running = awaitCommand(startCommand(file, args, options), options.label);
  const result = await (progress === false ? running : withHeartbeats(running, progress));
  return { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? '') };
}

/**
 * Runs a command whose exit code is the answer (pg_isready; `docker inspect` of a container that
 * may be gone): a non-zero exit, or a command not found, is an answer, not a failure. Only the
 * activity's cancellation throws.
 */
export async function probeCommand(file: string, args: readonly string[], options: CommandOptions): Promise<{ exitCode: number | undefined; stdout: string; stderr: string }> {
  const result = await startCommand(file, args, { ...options, reject: false });
  throwIfCancelled();
  return { exitCode: result.exitCode, stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? '') };
}

/**
 * A filter command (bytes in, bytes out: `zstd -d`) as one Duplex stream. Destroying the stream (a
 * failed or cancelled pipeline) closes its pipes, which ends the command; a non-zero exit is the
 * stream's error, an ExecaError that carries exitCode and command.
 */
export function filterStream(file: string, args: readonly string[]): Duplex {
  return execa(file, args, { encoding: 'buffer', buffer: { stdout: false, stderr: true } }).duplex();
}

export interface StallGuard {
  /** What is moving, for the message: "the upload of immich_….sql.gz", "the library mirror". */
  what: string;
  /** The config key that sets the window, for the message. */
  setting: string;
  seconds: number;
  /** A value that changes whenever the transfer moves (bytes transferred, files checked). */
  position: () => unknown;
  /** Where it stood, for the message: "1.2 MiB transferred". */
  where: () => string;
  /** What to do, for the message: "check the drive". */
  advice: string;
}

// After the kill, how long to wait for the process to go. One blocked in the kernel (a write to a
// frozen filesystem) cannot die until the filesystem thaws: the activity must not wait on it.
const STALL_EXIT_WAIT_MS = 10_000;
const STALL_POLL_MS = 1000;

/**
 * Awaits a subprocess, killing its whole process group (SIGKILL) when `guard.position()` has not
 * changed for `guard.seconds`: the failure is then a StalledError naming what stalled and for how
 * long. `idleSeconds` is for heartbeats: how long nothing has moved.
 */
export function awaitWithStallGuard<T>(subprocess: Subprocess & PromiseLike<T>, label: string, guard: StallGuard): { done: Promise<T>; idleSeconds: () => number } {
  let last = JSON.stringify(guard.position());
  let movedAt = Date.now();
  const idleSeconds = () => Math.floor((Date.now() - movedAt) / 1000);
  const done = new Promise<T>((resolve, reject) => {
    let stalled = false;
    const timer = setInterval(() => {
      const now = JSON.stringify(guard.position());
      if (now !== last) {
        last = now;
        movedAt = Date.now();
        return;
      }
      if (Date.now() - movedAt < guard.seconds * 1000) return;
      stalled = true;
      clearInterval(timer);
      const message = `${guard.what} stalled: nothing moved for ${idleSeconds()} s (${guard.setting} ${guard.seconds}) at ${guard.where()}; stopped ${label}: ${guard.advice}`;
      stopCommand(subprocess, 'SIGKILL');
      const exited = new Promise<boolean>((r) => void subprocess.then(() => r(true), () => r(true)));
      const waited = new Promise<boolean>((r) => setTimeout(() => r(false), STALL_EXIT_WAIT_MS).unref());
      void Promise.race([exited, waited]).then((gone) =>
        reject(new StalledError(gone ? message : `${message} (${label}, pid ${subprocess.pid}, is stuck in the kernel and exits only once the device answers again)`)),
      );
    }, STALL_POLL_MS);
    awaitCommand(subprocess, label).then(
      (value) => {
        clearInterval(timer);
        if (!stalled) resolve(value);
      },
      (err: unknown) => {
        clearInterval(timer);
        if (!stalled) reject(err);
      },
    );
  });
  return { done, idleSeconds };
}
