import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressor } from '../commands/compression.js';
import { ChecksumMismatchError, DumpIncompleteError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { decodeAndHash, READ_CHUNK } from '../files/checksums.js';
import { awaitCommand, startCommand, stopCommand, withHeartbeats } from '../commands/run-command.js';
import { restoreFilter, safetyScanner } from './sql-stream.js';
import type { DumpFormat, VerifiedDump } from '../../core/types.js';

/** pg_dumpall's last comment; its absence means the dump stopped early. */
export const COMPLETION_MARKER = 'PostgreSQL database cluster dump complete';

/** pg_dump's last comment (Immich's own backups); pg_dumpall's is COMPLETION_MARKER. */
const PG_DUMP_MARKER = 'PostgreSQL database dump complete';

/** A stream that counts what passes through it, for heartbeats. */
function counter(onBytes: (n: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _e, callback) {
      onBytes(chunk.length);
      callback(null, chunk);
    },
  });
}

/**
 * Streams a dump through gunzip (or zstd -d) and the restore filter into a running psql, with
 * heartbeats of how far it got; psql's own error wins over the broken pipe it causes. Returns
 * psql's stderr (its errors, when ON_ERROR_STOP is off).
 */
export async function loadDump(
  dump: { file: string; path: string; format?: DumpFormat },
  user: string,
  psql: { file: string; args: string[]; env: Record<string, string> },
  step: string,
): Promise<{ stderr: string }> {
  const child = startCommand(psql.file, psql.args, { label: 'psql', env: psql.env, stdin: 'pipe', stdout: 'ignore' });
  const { size } = await stat(dump.path);
  let read = 0;
  const feed = pipeline(createReadStream(dump.path, { highWaterMark: READ_CHUNK }), counter((n) => (read += n)), decompressor(dump.file), restoreFilter(user, dump.file, dump.format === 'immich'), child.stdin!);
  const [fed, loaded] = await withHeartbeats(Promise.allSettled([feed, awaitCommand(child, 'psql')]), () => ({
    step,
    file: dump.file,
    read: `${formatBytes(read)} of ${formatBytes(size)}`,
    percent: Math.floor((read / size) * 100),
  }));
  // The feed's failure is the cause (a line the filter refused, a stream that does not decode),
  // and psql's the consequence of its input ending in error; unless psql went away first and the
  // feed only hit the closed pipe.
  const pipeClosed = (err: unknown) => ['EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_PREMATURE_CLOSE'].includes((err as NodeJS.ErrnoException).code ?? '');
  if (fed.status === 'rejected' && !(loaded.status === 'rejected' && pipeClosed(fed.reason))) {
    stopCommand(child);
    throw fed.reason;
  }
  if (loaded.status === 'rejected') throw loaded.reason;
  return { stderr: String(loaded.value.stderr ?? '') };
}

/**
 * Before anything is touched: the checksum matches (our dumps), the compressed stream is complete,
 * the completion marker is there, and no line would run a program.
 */
export async function checkRestorable(dump: { file: string; path: string; format: DumpFormat; checksum?: string }): Promise<VerifiedDump> {
  // Immich's own dumps carry no tag: the stricter filter (ASCII only outside COPY data).
  const scan = safetyScanner(dump.file, dump.format === 'immich');
  const { sha256, size } = await decodeAndHash(dump.path, dump.file, scan.sink, 'verifying', 'not restoring it');
  if (dump.checksum !== undefined && dump.checksum !== sha256) {
    throw new ChecksumMismatchError(`dump ${dump.file} has sha256 ${sha256}, its .sha256 says ${dump.checksum}: not restoring it`);
  }
  const marker = dump.format === 'cluster' ? COMPLETION_MARKER : PG_DUMP_MARKER;
  if (!scan.tail().includes(marker)) throw new DumpIncompleteError(`dump ${dump.file} does not end with "${marker}": it stopped early; not restoring it`);
  return { bytes: size, sqlBytes: scan.sqlBytes(), sha256, databases: scan.databases() };
}

