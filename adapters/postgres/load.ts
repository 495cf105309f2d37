import type { FileHandle } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressor } from '../commands/compression.js';
import { ChecksumMismatchError, CommandFailedError, DumpIncompleteError, PsqlTooOldError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { decodeAndHash, READ_CHUNK } from '../files/checksums.js';
import { awaitCommand, startCommand, stderrTail, stopCommand, withHeartbeats } from '../commands/run-command.js';
import { restoreFilter, safetyScanner } from './sql-stream.js';
import { policyFor } from './dump-policy.js';
import { restrictFraming, restrictRefusal, supportsRestrict, withoutKeys, type PsqlCommand } from './restricted-psql.js';
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
 * What a load may do when psql predates restrict mode: refuse (psql on this host: whatever it ran
 * would run here), or go on because psql runs inside the database's container as its unprivileged
 * user, where nothing it could run exceeds what the database server itself can already do.
 */
export type WithoutRestrict = { refuse: string } | { allow: string };

/** True, or PsqlTooOldError: a psql that would run on this host must know restrict mode. */
export async function requireRestrict(psql: PsqlCommand, hint: string): Promise<true> {
  if (await supportsRestrict(psql)) return true;
  throw new PsqlTooOldError(`psql predates restrict mode (PostgreSQL 13.22, 14.19, 15.14, 16.10, 17.6, 18 or later have it): it would run on this host any meta-command a dump holds, so it is never given one. ${hint}`);
}

/**
 * Streams a dump through gunzip (or zstd -d) and the restore filter into a running psql in restrict
 * mode, with heartbeats of how far it got; psql's own error wins over the broken pipe it causes.
 * `dump.source` is the private copy's handle (privateCopy): the verified bytes, never a path
 * re-opened. Returns psql's stderr (its errors, when ON_ERROR_STOP is off) and whether psql ran
 * restricted.
 */
export async function loadDump(
  dump: { file: string; source: FileHandle; format?: DumpFormat },
  user: string,
  psql: PsqlCommand,
  step: string,
  withoutRestrict: WithoutRestrict,
  /** The drill: psql stopping at a statement that failed (ON_ERROR_STOP, exit 3) is reported in `stderr`, not thrown. */
  options: { reportStop?: boolean } = {},
): Promise<{ stderr: string; restricted: boolean; stopped: boolean }> {
  const restricted = 'refuse' in withoutRestrict ? await requireRestrict(psql, withoutRestrict.refuse) : await supportsRestrict(psql);
  const child = startCommand(psql.file, psql.args, { label: 'psql', env: psql.env, stdin: 'pipe', stdout: 'ignore', ...(options.reportStop ? { reject: false as const } : {}) });
  const { size } = await dump.source.stat();
  let read = 0;
  const filter = restoreFilter(user, dump.file, { policy: policyFor(dump.format ?? 'cluster'), pin: true, ...(restricted ? { frame: restrictFraming() } : {}) });
  const input = dump.source.createReadStream({ start: 0, autoClose: false, highWaterMark: READ_CHUNK });
  const feed = pipeline(input, counter((n) => (read += n)), decompressor(dump.file), filter, child.stdin!);
  const mode = restricted ? 'psql in restrict mode' : `psql without restrict mode (${'allow' in withoutRestrict ? withoutRestrict.allow : ''})`;
  const [fed, loaded] = await withHeartbeats(Promise.allSettled([feed, awaitCommand(child, 'psql')]), () => ({
    step,
    file: dump.file,
    read: `${formatBytes(read)} of ${formatBytes(size)}`,
    percent: Math.floor((read / size) * 100),
    mode,
  }));
  // The feed's failure is the cause (a line the filter refused, a stream that does not decode),
  // and psql's the consequence of its input ending in error; unless psql went away first and the
  // feed only hit the closed pipe.
  const pipeClosed = (err: unknown) => ['EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_PREMATURE_CLOSE'].includes((err as NodeJS.ErrnoException).code ?? '');
  const psqlFailed = loaded.status === 'rejected' || (loaded.value.exitCode ?? 0) !== 0;
  if (fed.status === 'rejected' && !(psqlFailed && pipeClosed(fed.reason))) {
    stopCommand(child);
    throw fed.reason;
  }
  if (loaded.status === 'rejected') throw restrictRefusal(loaded.reason, dump.file);
  const stderr = withoutKeys(String(loaded.value.stderr ?? ''));
  const exit = loaded.value.exitCode ?? 0;
  // psql's exit 3: a statement failed and ON_ERROR_STOP ended the script there; any other, psql itself failed.
  if (exit !== 0 && exit !== 3) throw new CommandFailedError(`psql failed (exit code ${exit})${stderr.trim() ? `: ${stderrTail(stderr)}` : ''}`, { exitCode: exit });
  return { stderr, restricted, stopped: exit === 3 };
}

/**
 * Before anything is touched: the checksum matches (our dumps), the compressed stream is complete,
 * the completion marker is there, and no line would run a program.
 */
export async function checkRestorable(dump: { file: string; path: string; format: DumpFormat; checksum?: string }): Promise<VerifiedDump> {
  // Immich's own dumps carry no tag and hold one database: the stricter policy (dump-policy.ts).
  const scan = safetyScanner(dump.file, policyFor(dump.format));
  const { sha256, size } = await decodeAndHash(dump.path, dump.file, scan.sink, 'verifying', 'not restoring it');
  if (dump.checksum !== undefined && dump.checksum !== sha256) {
    throw new ChecksumMismatchError(`dump ${dump.file} has sha256 ${sha256}, its .sha256 says ${dump.checksum}: not restoring it`);
  }
  const marker = dump.format === 'cluster' ? COMPLETION_MARKER : PG_DUMP_MARKER;
  if (!scan.tail().includes(marker)) throw new DumpIncompleteError(`dump ${dump.file} does not end with "${marker}": it stopped early; not restoring it`);
  return { bytes: size, sqlBytes: scan.sqlBytes(), sha256, databases: scan.databases() };
}

