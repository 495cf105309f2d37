import { formatBytes } from '../src/format.js';
import { awaitCommand, startCommand, withHeartbeats } from './run-command.js';

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
 * first copy rsync writes a progress line per file (10 MB for 135k files): --outbuf=B makes it
 * write them in blocks, and each read costs this process the same whatever its size (the newest
 * progress line and a bounded tail for --stats are all it keeps).
 */
export async function runRsync(args: readonly string[], options: { step: string; prefix?: readonly string[]; env?: Record<string, string> }): Promise<RsyncStats> {
  const prefix = options.prefix ?? [];
  const [file, ...rest] = [...prefix, 'rsync', '--outbuf=B', '--info=progress2', '--stats', ...args] as [string, ...string[]];
  const started = Date.now();
  let progress: RsyncProgress | undefined;
  let output = '';
  const child = startCommand(file, rest, { label: 'rsync', stdout: 'stream', ...(options.env ? { env: options.env } : {}) });
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    output += chunk;
    if (output.length > 256 * 1024) output = output.slice(-64 * 1024);
    const lines = chunk.split(/[\r\n]/);
    for (let i = lines.length - 1; i >= 0; i--) {
      const parsed = parseProgress(lines[i]!, options.step);
      if (parsed) {
        progress = parsed;
        break;
      }
    }
  });
  await withHeartbeats(awaitCommand(child, 'rsync'), () => progress ?? { step: options.step, elapsedSeconds: Math.round((Date.now() - started) / 1000) });
  return parseStats(output);
}
