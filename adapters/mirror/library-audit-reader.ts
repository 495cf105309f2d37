import { fileURLToPath } from 'node:url';
import { AuditReaderError } from '../../core/errors.js';
import { commandError, startCommand, stopCommand } from '../commands/run-command.js';
import { ioPriority } from '../commands/rsync.js';

// LibraryAudit's readers: one process per side (the library's disk and the drive read at once, one
// reader each), `node sha1-reader.js` under the library's idle priority (library.ioniceClass, nice:
// the runbook's `ionice -c3 nice -n19`), hashing with OpenSSL's SHA-1. A process, not a thread: when
// the audit is cancelled or ends, a read stuck in the kernel (a hung NFS mount, a FUSE file planted
// on the drive) is killed and never waited on; what was asked of it fails at once.

export interface Sha1Read {
  sha1: string;
  /** The device of the file that was read. */
  dev: number;
}

export interface Reader {
  /**
   * Each file's SHA-1 and device in order (undefined for one that could not be read, is longer
   * than its size when it was looked at, or is not at exactly its path: paths must be real paths,
   * see sha1OfFile); batches queue in order.
   */
  hash(files: ReadonlyArray<{ path: string; size: number }>): Promise<Array<Sha1Read | undefined>>;
  /** Kills the reader (its whole process group); never waits on it. */
  close(): void;
}

const SCRIPT = fileURLToPath(new URL('./sha1-reader.js', import.meta.url));

export function startReader(priority: { ioniceClass: number; nice: number }, signal?: AbortSignal): Reader {
  const [file, ...args] = [...ioPriority(priority), process.execPath, SCRIPT];
  const child = startCommand(file!, args, { label: 'sha1 reader', stdin: 'pipe', stdout: 'stream', ...(signal ? { signal } : {}) });
  const queue: Array<{ count: number; out: Array<Sha1Read | undefined>; resolve: (r: Array<Sha1Read | undefined>) => void; reject: (e: Error) => void }> = [];
  let failure: Error | undefined;
  let closed = false;
  const fail = (err: Error) => {
    failure ??= err;
    for (const q of queue.splice(0)) q.reject(failure);
  };
  // Ends only when killed or broken: either way, what is still queued fails.
  child.then(
    () => fail(new Error('the sha1 reader exited before it was done')),
    (err: unknown) => fail(closed ? new Error('the sha1 reader was stopped') : (commandError(err, 'sha1 reader') as Error)),
  );
  child.stdin!.on('error', (err) => fail(err));
  // Cancelled: what is queued fails now, not when the reader exits (it may never, stuck in the kernel).
  signal?.addEventListener('abort', () => fail(new Error('the sha1 reader was stopped')), { once: true });
  let partial = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      const head = queue[0];
      if (!head) return fail(new Error('the sha1 reader answered more than it was asked'));
      const m = /^([0-9a-f]{40}) (\d+)$/.exec(line);
      head.out.push(m ? { sha1: m[1]!, dev: Number(m[2]) } : undefined);
      if (head.out.length === head.count) {
        queue.shift();
        head.resolve(head.out);
      }
    }
  });
  return {
    hash(files) {
      if (failure) return Promise.reject(failure);
      if (!files.length) return Promise.resolve([]);
      if (files.some((f) => f.path.includes('\0'))) return Promise.reject(new AuditReaderError('a path with a NUL byte cannot be read: expected the paths Immich lists, which never hold one'));
      return new Promise((resolve, reject) => {
        queue.push({ count: files.length, out: [], resolve, reject });
        child.stdin!.write(files.map((f) => `${f.size} ${f.path}\0`).join(''));
      });
    },
    close() {
      closed = true;
      fail(new Error('the sha1 reader was stopped'));
      child.stdin!.destroy();
      stopCommand(child, 'SIGKILL');
    },
  };
}
