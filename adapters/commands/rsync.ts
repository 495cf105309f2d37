import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { CommandFailedError, StalledError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { awaitCommand, awaitWithStallGuard, startCommand, withHeartbeats, type StallGuard } from './run-command.js';

// rsync through the runner, with its overall progress (--info=progress2) turned into heartbeat
// details a person can read, and its --stats turned into numbers for the report.

export interface RsyncProgress {
  step: string;
  bytes: number;
  transferred: string;
  percent: number;
  rate: string;
  filesTransferred: number;
  filesToCheck?: string;
}

export interface RsyncStats {
  filesTransferred: number;
  bytesTransferred: number;
  deleted: number;
  /** Regular files on the sending side. */
  regularFiles: number;
}

/** What rsync left out on purpose (devices, FIFOs, sockets, symlinks leading out of the tree). */
export interface RsyncSkipped {
  count: number;
  /** The first few, as rsync named them: `dev/sda (non-regular file)`, `etc -> /etc (unsafe symlink)`. */
  first: string[];
}

const SKIPPED_SHOWN = 10;

// rsync's exit codes this tool reads (rsync(1), EXIT VALUES).
/** Some source files vanished between the listing and the copy (a live library). */
export const RSYNC_VANISHED = 24;
/** --max-delete stopped the deletions. */
export const RSYNC_MAX_DELETE = 25;
/** --timeout: no data moved between rsync's processes for that long. */
export const RSYNC_TIMEOUT = 30;

/** The runbook's `ionice -c3 nice -n19` for the library's transfers and reads (library.ioniceClass / nice; 0 turns either off). */
export function ioPriority(lib: { ioniceClass: number; nice: number }): string[] {
  return [...(lib.ioniceClass ? ['ionice', '-c', String(lib.ioniceClass)] : []), ...(lib.nice ? ['nice', '-n', String(lib.nice)] : [])];
}

/**
 * rsync flags for a copy out of a tree someone else can write (the drive): nothing comes back that a
 * library never holds (no setuid/setgid bits, devices, FIFOs, sockets, symlinks leading out), and
 * rsync names what it skipped (for parseSkipped).
 */
export const FROM_UNTRUSTED_TREE = ['--no-devices', '--no-specials', '--safe-links', '--chmod=ug-s', '--info=nonreg,name1'] as const;
const SKIP_LINE = /^(?:skipping non-regular file "(.*)"|ignoring unsafe symlink "(.*)" -> "(.*)")$/;

/** rsync's "skipping non-regular file" (--info=nonreg) and "ignoring unsafe symlink" (--info=name1 with --safe-links) lines. */
export function parseSkipped(lines: Iterable<string>, into: RsyncSkipped = { count: 0, first: [] }): RsyncSkipped {
  for (const line of lines) {
    const m = SKIP_LINE.exec(line);
    if (!m) continue;
    into.count++;
    if (into.first.length < SKIPPED_SHOWN) into.first.push(m[1] !== undefined ? `${m[1]} (non-regular file)` : `${m[2]} -> ${m[3]} (unsafe symlink)`);
  }
  return into;
}

const PROGRESS = /^\s*([\d,]+)\s+(\d+)%\s+(\S+)\s+\d+:\d+:\d+(?:\s+\(xfr#(\d+), (?:ir|to)-chk=(\d+\/\d+)\))?/;

export function parseProgress(line: string, step: string): RsyncProgress | undefined {
  const m = PROGRESS.exec(line);
  if (!m) return undefined;
  const bytes = Number(m[1]!.replace(/,/g, ''));
  return {
    step,
    bytes,
    transferred: formatBytes(bytes),
    percent: Number(m[2]),
    rate: m[3]!,
    filesTransferred: Number(m[4] ?? 0),
    ...(m[5] ? { filesToCheck: m[5] } : {}),
  };
}

export function parseStats(text: string): RsyncStats {
  const num = (re: RegExp) => Number(re.exec(text)?.[1]?.replace(/,/g, '') ?? 0);
  return {
    filesTransferred: num(/Number of regular files transferred: ([\d,]+)/),
    bytesTransferred: num(/Total transferred file size: ([\d,]+)/),
    deleted: num(/Number of deleted files: ([\d,]+)/),
    regularFiles: num(/Number of files: [\d,]+ \(reg: ([\d,]+)/),
  };
}

/**
 * Runs `[prefix...] rsync --info=progress2 --stats ARGS`, heartbeating the latest progress. On a
 * first copy rsync flushes a progress line per file: 93k writes for 135k files (10 MB). Through a
 * pipe each write woke this process (0.5 s of its CPU, measured, on 2 cores shared with rsync);
 * into an unlinked temporary file they cost this process nothing, and the newest progress line is
 * read from the file's end once a second, the --stats summary from its end at exit.
 */
export interface RsyncOptions {
  step: string;
  prefix?: readonly string[];
  env?: Record<string, string>;
  /** Fail as StalledError when neither the bytes nor the files checked move for this long, or when rsync's own --timeout stops it. */
  stall?: RsyncStall;
  /** Collect what rsync skipped (pass --info=nonreg / --info=name1 with --safe-links in args). */
  reportSkipped?: boolean;
  /** Every line rsync printed, in order, in batches, once it has exited (an --itemize-changes list may run to many MB). */
  onLines?: (lines: string[]) => void;
  /** Exit codes that still count as done: 24, files that vanished from a live library between listing and copying. */
  okExitCodes?: readonly number[];
}

/** What a stalled rsync is, for both of its StalledError messages (the stall guard's, and rsync's own --timeout's). */
export interface RsyncStall extends Pick<StallGuard, 'what' | 'setting' | 'seconds' | 'advice'> {
  /**
   * rsync's --timeout message reads `<what> stalled: rsync saw no data move for <seconds> s
   * (<setting>)<ending>`; unless given here, `what` is the guard's and the ending ` and stopped: <advice>`.
   */
  timedOut?: { what?: string; ending: string };
}

/** rsync's exit 30 as the StalledError its caller describes: its --timeout saw no data move for `stall.seconds`. */
function rsyncTimeoutError(stall: RsyncStall): StalledError {
  const what = stall.timedOut?.what ?? stall.what;
  const ending = stall.timedOut?.ending ?? ` and stopped: ${stall.advice}`;
  return new StalledError(`${what} stalled: rsync saw no data move for ${stall.seconds} s (${stall.setting})${ending}`);
}

export async function runRsync(args: readonly string[], options: RsyncOptions): Promise<RsyncStats & { skipped?: RsyncSkipped }> {
  const prefix = options.prefix ?? [];
  const [file, ...rest] = [...prefix, 'rsync', '--info=progress2', '--stats', ...args] as [string, ...string[]];
  const started = Date.now();
  const dir = await mkdtemp(join(tmpdir(), 'immich-backup-rsync-'));
  const out = await open(join(dir, 'out'), 'w+', 0o600);
  await rm(dir, { recursive: true, force: true }); // the open descriptor keeps the file until it is closed
  const tail = async (bytes: number): Promise<string> => {
    const { size } = await out.stat();
    const length = Math.min(size, bytes);
    const buffer = Buffer.alloc(length);
    await out.read(buffer, 0, length, size - length);
    return buffer.toString('utf8');
  };
  /** The whole output, read in chunks: skip lines come at any point of a long run. */
  const scanSkipped = async (): Promise<RsyncSkipped> => {
    const skipped: RsyncSkipped = { count: 0, first: [] };
    await scanOutput((lines) => parseSkipped(lines, skipped));
    return skipped;
  };
  const scanOutput = async (onLines: (lines: string[]) => void): Promise<void> => {
    const chunk = Buffer.alloc(1024 * 1024);
    const decoder = new StringDecoder('utf8'); // a character split across two chunks stays whole
    let carry = '';
    for (let position = 0; ; ) {
      const { bytesRead } = await out.read(chunk, 0, chunk.length, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const lines = (carry + decoder.write(chunk.subarray(0, bytesRead))).split(/[\r\n]/);
      carry = lines.pop() ?? '';
      onLines(lines);
    }
    onLines([carry]);
  };
  let progress: RsyncProgress | undefined;
  const poll = setInterval(() => {
    tail(4096).then((text) => {
      const lines = text.split(/[\r\n]/);
      for (let i = lines.length - 1; i >= 0; i--) {
        const parsed = parseProgress(lines[i]!, options.step);
        if (parsed) return void (progress = parsed);
      }
    }, () => undefined);
  }, 1000);
  try {
    const child = startCommand(file, rest, { label: 'rsync', stdout: out.fd, ...(options.env ? { env: options.env } : {}) });
    // A scan of files already in place moves the to-check count, not the bytes: both count as moving.
    const guarded = options.stall
      ? awaitWithStallGuard(child, 'rsync', { ...options.stall, position: () => [progress?.bytes, progress?.filesToCheck, progress?.filesTransferred], where: () => `${progress?.transferred ?? '0 B'} transferred` })
      : undefined;
    const idle = () => guarded?.idleSeconds() ?? 0;
    const ok = options.okExitCodes ?? [];
    const finished = (guarded?.done ?? awaitCommand(child, 'rsync')).catch((err: unknown) => {
      if (!(err instanceof CommandFailedError) || err.exitCode === undefined) throw err;
      if (ok.includes(err.exitCode)) return undefined;
      if (err.exitCode === RSYNC_TIMEOUT && options.stall) throw rsyncTimeoutError(options.stall);
      throw err;
    });
    await withHeartbeats(finished, () => {
      const details = progress ?? { step: options.step, elapsedSeconds: Math.round((Date.now() - started) / 1000) };
      // Readable in the UI while it hangs: how long nothing has moved, and the window.
      return idle() >= 5 && options.stall ? { ...details, nothingMovedForSeconds: idle(), stallsAfterSeconds: options.stall.seconds } : details;
    });
    const stats = parseStats(await tail(16 * 1024));
    if (options.onLines) await scanOutput(options.onLines);
    return options.reportSkipped ? { ...stats, skipped: await scanSkipped() } : stats;
  } finally {
    clearInterval(poll);
    await out.close();
  }
}
