import { stdin, stdout } from 'node:process';
import { READ_CHUNK, sha1OfFile } from './file-sha1.js';

// LibraryAudit's reader, a process of its own (see startReader), run under the library's
// `ionice -c3 nice -n19` like the runbook's reads. On stdin, one request per file, ended by a NUL:
// "<most bytes to read> <path>"; for each, in order, one line on stdout: "<sha1> <device>", or "-"
// for a file it could not read as a regular file of at most that size at exactly that path (a
// real path: one reached through a symlinked directory is refused, see sha1OfFile). Node's own
// modules only: it starts in tens of milliseconds and stays small.

const buffer = Buffer.allocUnsafe(READ_CHUNK);
let pending: Buffer = Buffer.alloc(0);
stdin.on('data', (chunk: Buffer) => {
  pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
  const lines: string[] = [];
  let start = 0;
  for (let nul = pending.indexOf(0); nul !== -1; nul = pending.indexOf(0, start)) {
    const request = pending.subarray(start, nul).toString('utf8');
    const space = request.indexOf(' ');
    const read = space > 0 ? sha1OfFile(request.slice(space + 1), buffer, Number(request.slice(0, space))) : undefined;
    lines.push(read ? `${read.sha1} ${read.dev}` : '-');
    start = nul + 1;
  }
  pending = Buffer.from(pending.subarray(start));
  if (lines.length && !stdout.write(`${lines.join('\n')}\n`)) {
    stdin.pause();
    stdout.once('drain', () => stdin.resume());
  }
});
