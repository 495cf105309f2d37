import { createHash } from 'node:crypto';
import { lstat, open, rm, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { finished, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../config/config.js';
import { checksumFileName, dumpFileName, partialFileName, RESTORE_POINTS_DIR, restorePointFileName, SALVAGE_DIR, salvageFileName } from '../core/dump-names.js';
import { DatabaseUnreadableError, DumpIncompleteError, DumpNameTakenError } from '../core/errors.js';
import type { Logger } from '../config/logger.js';
import { formatBytes } from '../core/format.js';
import { corruptDump, sha256OfFile } from '../adapters/files/checksums.js';
import { compressArgs, decodeArgs, formatOf } from '../adapters/commands/compression.js';
import { postgresCommand } from '../adapters/postgres/command.js';
import type { ActivityDeps } from './deps.js';
import { diskError, ownDir } from '../adapters/files/fs-safe.js';
import { openDumpStore, readChecksumFile } from '../adapters/dump-store/index.js';
import { awaitCommand, startCommand, startPipedPair, stopCommand, throwIfCancelled, withHeartbeats } from '../adapters/commands/run-command.js';
import { TableDigester, UnterminatedCopyError } from '../adapters/postgres/table-digests.js';
import type { TableDigests } from '../core/reports.js';
import type { DumpDatabaseInput, DumpResult, PostgresTarget, SalvageResult } from '../core/types.js';

export interface WrittenDump {
  file: string;
  path: string;
  bytes: number;
  sha256: string;
  /** Each table's data digest, from the SQL the compressor's own decoder gave back (this attempt's). */
  digests: TableDigests;
}

/**
 * `pg` (pg_dumpall or pg_dump) piped through the configured compressor into a hidden temporary
 * file in `dir`, hashed and decoded again by the compressor's own program (-dc, which checks the
 * format's checksum as -t does) in the same pass, its SQL digested table by table, fsynced, then
 * renamed to `name` beside its .sha256. Memory stays flat: the bytes stream through. A partial
 * dump never appears under a final name, and an existing file is never replaced (the dump store
 * publishes it). With `recordDigests`, the digests are written beside the dump before it appears.
 */
export async function writeCompressedDump(
  config: Config,
  logger: Logger,
  pg: { file: string; args: string[]; env: Record<string, string> },
  dir: string,
  name: string,
  step: string,
  { recordDigests = false, database }: { recordDigests?: boolean; database?: string } = {},
): Promise<WrittenDump> {
  const finalPath = join(dir, name);
  const tempPath = join(dir, partialFileName(name));
  await ownDir(dir);
  // An earlier attempt whose worker died leaves its temporary file behind; this attempt owns the name now.
  await rm(tempPath, { force: true });

  const started = Date.now();
  const label = [pg.file, ...pg.args].map((a) => basename(a)).find((a) => a === 'pg_dumpall' || a === 'pg_dump') ?? 'pg_dump';
  const hash = createHash('sha256');
  let bytes = 0;
  const progress = () => ({ step, file: name, bytesWritten: bytes, written: formatBytes(bytes), elapsedSeconds: Math.round((Date.now() - started) / 1000) });

  const file = await open(tempPath, 'wx', 0o600).catch((err: unknown) => {
    throw diskError(err, dir);
  });
  // The dump writes into the compressor through an OS pipe: the SQL (2-3x the dump) never
  // passes through this process. Only the compressed bytes do, to be hashed and written.
  const { producer: dump, consumer: compress } = await startPipedPair(
    { file: pg.file, args: pg.args, label, env: pg.env },
    { file: config.backup.compressor, args: compressArgs(config.backup), label: config.backup.compressor },
    progress,
  ).catch(async (err: unknown) => {
    await file.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    throw err;
  });
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.length;
      callback(null, chunk);
    },
  });
  // The compressor's own program decodes its output as it is written (checking the format's
  // checksum over the whole stream): validation then needs no second pass over the file. That
  // the dump got to its end is its exit status: its last write is the completion marker. The SQL
  // it gives back is what a restore will read: each table's data is digested from it here.
  const testLabel = `${config.backup.compressor} -dc`;
  const tester = startCommand(config.backup.compressor, decodeArgs(config.backup.compressor), { label: testLabel, stdin: 'pipe', stdout: 'stream' });
  const digester = new TableDigester(database);
  try {
    const write = pipeline(compress.stdout!, counter, teeSink(file, tester.stdin!));
    const digest = pipeline(tester.stdout!, digester);
    // Settle all five before deciding: a failing dump must not leave the compressor, the write or the test behind.
    const [dumped, compressed, written, tested, digested] = await withHeartbeats(
      Promise.allSettled([awaitCommand(dump, label), awaitCommand(compress, config.backup.compressor), write, awaitCommand(tester, testLabel), digest]),
      progress,
    );
    throwIfCancelled(); // the killed commands broke the write: that is no disk error
    // A failed write (a full disk) kills the compressor and the dump by SIGPIPE: report the
    // write, unless it failed only because the test quit on a stream it could not decode.
    const testQuit = tested.status === 'rejected' && written.status === 'rejected' && written.reason instanceof TesterStoppedError;
    if (written.status === 'rejected' && !testQuit) throw diskError(written.reason, dir);
    if (dumped.status === 'rejected') throw unreadableDatabase(dumped.reason) ?? dumped.reason;
    if (compressed.status === 'rejected') throw compressed.reason;
    if (tested.status === 'rejected') throw corruptDump(name, tested.reason, `what ${config.backup.compressor} wrote does not decode; nothing was kept`);
    if (digested.status === 'rejected') {
      const reason = digested.reason as Error;
      if (reason instanceof UnterminatedCopyError) throw new DumpIncompleteError(`dump ${name}: ${reason.message}; nothing was kept`);
      throw reason;
    }
    // fsync of a large file can take a while on a slow disk: keep heartbeating through it.
    await withHeartbeats(file.sync(), progress).catch((err: unknown) => {
      throw diskError(err, dir);
    });
  } catch (err) {
    stopCommand(dump);
    stopCommand(compress);
    stopCommand(tester);
    await file.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    logger.warn({ file: name, err: (err as Error).message }, 'dump failed; temporary file removed');
    throw err;
  }
  await file.close();

  const sha256 = hash.digest('hex');
  const digests = digester.digests();
  // The name is this run's alone (its stamp is taken under the database lock): a file already under
  // it is an earlier attempt of this run whose result was lost. Kept as it is when its .sha256
  // vouches for it; anything else under the name is never replaced, its checksum included.
  const earlier = await existingDump(dir, name);
  if (earlier) {
    await rm(tempPath, { force: true });
    if (earlier.valid) {
      logger.info({ file: name }, 'an earlier attempt of this run already wrote this dump: kept');
      // Its digests are the earlier attempt's file beside it (written before it appeared), not this attempt's.
      return { file: name, path: finalPath, bytes: earlier.bytes, sha256: earlier.sha256, digests: {} };
    }
    throw new DumpNameTakenError(`${finalPath} already exists and its .sha256 does not vouch for it: nothing was replaced; move it aside and run again`);
  }
  await openDumpStore(config, logger).publish(dir, name, tempPath, sha256, recordDigests ? digests : undefined);
  return { file: name, path: finalPath, bytes, sha256, digests };
}

/** A dump already under `name`: its size and sha256, and whether its .sha256 records that sha256. */
async function existingDump(dir: string, name: string): Promise<{ bytes: number; sha256: string; valid: boolean } | undefined> {
  const path = join(dir, name);
  const st = await lstat(path).catch(() => undefined);
  if (!st) return undefined;
  if (!st.isFile()) return { bytes: 0, sha256: '', valid: false };
  const sha256 = await withHeartbeats(sha256OfFile(path), () => ({ step: `checking the existing ${name}` }));
  return { bytes: st.size, sha256, valid: sha256 === (await readChecksumFile(join(dir, checksumFileName(name)))) };
}

// What pg_dump says when it cannot read the data itself (Immich issue #30062: damaged TOAST).
const UNREADABLE = /missing chunk number|unexpected chunk number|invalid page in block|could not read block|could not access status of transaction|compressed (?:pglz )?data is corrupt|invalid memory alloc request size|found xmin \d+ from before relfrozenxid|invalid varlena length|unexpected zero page/i;

/**
 * A pg_dump(all) failure that reads damaged data becomes DatabaseUnreadableError (retrying reads the
 * same damage), naming the server's error, the table and the database; anything else: undefined.
 */
export function unreadableDatabase(err: unknown): DatabaseUnreadableError | undefined {
  const text = err instanceof Error ? err.message : String(err);
  if (!UNREADABLE.test(text)) return undefined;
  const error = /ERROR:\s+(.+?)(?:\s+\|\s+|$)/.exec(text)?.[1] ?? text.split('\n')[0]!;
  const table = /COPY (\S+) \(/.exec(text)?.[1] ?? /table "([^"]+)"/.exec(text)?.[1];
  const database = /on database "([^"]+)"/.exec(text)?.[1];
  const where = [table && `table ${table}`, database && `database ${database}`].filter(Boolean).join(' in ');
  return Object.assign(new DatabaseUnreadableError(`pg_dump cannot read the live database${where ? ` (${where})` : ''}: ${error}: its stored data is damaged`), { table });
}

/** The table whose data pg_dump could not read, as pg_dump named it in "Command was: COPY …". */
export function unreadableTable(err: unknown): string | undefined {
  return err instanceof DatabaseUnreadableError ? (err as DatabaseUnreadableError & { table?: string }).table : undefined;
}

export function createDumpActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * pg_dumpall (the runbook's choice, with --clean --if-exists so a restore replaces what exists)
     * into backup.dir as immich_<stamp>.sql.gz (or .sql.zst), or, for a restore point, into
     * backup.dir/restore-points/ as restore-point_<stamp>.sql.gz: never mistaken for a backup.
     */
    async dumpDatabase({ target, stamp, kind = 'backup' }: DumpDatabaseInput): Promise<DumpResult> {
      const format = formatOf(config.backup.compressor);
      const point = kind === 'restore-point';
      const dir = point ? join(config.backup.dir, RESTORE_POINTS_DIR) : config.backup.dir;
      const name = point ? restorePointFileName(stamp, format) : dumpFileName(stamp, format);
      const started = Date.now();
      const pg = postgresCommand(config, target, 'pg_dumpall', ['-U', config.postgres.user, '--clean', '--if-exists']);
      const { digests, ...written } = await writeCompressedDump(config, logger, pg, dir, name, point ? 'taking a restore point' : 'dumping', { recordDigests: true });
      const durationMs = Date.now() - started;
      logger.info({ file: name, bytes: written.bytes, sha256: written.sha256, durationMs, kind, tablesDigested: Object.keys(digests).length }, 'dump written');
      return { ...written, durationMs };
    },

    /**
     * For a restore without a restore point: pg_dump of Immich's database, leaving out the data of
     * every table pg_dump cannot read (found by trying: each failure names its table), into
     * backup.dir/salvage/. A partial salvage, never a backup: nothing else reads that folder.
     */
    async salvageDatabase({ target, stamp }: { target: PostgresTarget; stamp: string }): Promise<SalvageResult> {
      const database = config.immich.database;
      const dir = join(config.backup.dir, SALVAGE_DIR);
      const name = salvageFileName(database, stamp.replace('_', 'T'));
      const skipped: string[] = [];
      for (;;) {
        const pg = postgresCommand(config, target, 'pg_dump', ['-U', config.postgres.user, '--clean', '--if-exists', ...skipped.map((t) => `--exclude-table-data=${t}`), '-d', database]);
        try {
          const written = await writeCompressedDump(config, logger, pg, dir, name, `saving a partial salvage of ${database}`, { database });
          logger.warn({ file: name, skipped }, 'partial salvage written');
          return { file: name, path: written.path, bytes: written.bytes, database, skippedTables: skipped };
        } catch (err) {
          const table = unreadableTable(err);
          // A table named twice could not be left out: stop rather than loop.
          if (!table || skipped.includes(table) || skipped.length >= MAX_SALVAGE_SKIPS) throw err;
          skipped.push(table);
        }
      }
    },
  };
}

/** A salvage gives up after leaving out this many tables' data: past that, little is left to save. */
const MAX_SALVAGE_SKIPS = 50;

/** The decode test stopped taking input (it exited, or was killed): its own result says why. */
export class TesterStoppedError extends Error {
  constructor(cause?: Error | null) {
    super(`the decode test stopped reading its input${cause ? `: ${cause.message}` : ''}`, { cause });
    this.name = 'TesterStoppedError';
  }
}

/**
 * Writes into a FileHandle we keep open (to fsync it before the rename; fs.WriteStream with
 * autoClose off never finishes a pipeline) and into `tester`, waiting for both: memory stays flat
 * whichever is slower. Ending the sink ends `tester`'s input; failing it cuts that input short.
 * A `tester` that is gone (exited, killed, its stdin destroyed by a cancellation) fails the sink
 * with TesterStoppedError: a destroyed stream never emits 'finish' or 'drain' again, so waiting
 * on one would hang the dump forever.
 */
export function teeSink(file: FileHandle, tester: Writable): Writable {
  const accepted = (chunk: Buffer) =>
    new Promise<void>((resolve, reject) => {
      if (tester.destroyed) return reject(new TesterStoppedError(tester.errored));
      if (tester.write(chunk)) return resolve();
      const done = (err?: Error) => {
        tester.off('drain', done).off('error', done).off('close', done);
        if (err || tester.destroyed) reject(new TesterStoppedError(err ?? tester.errored));
        else resolve();
      };
      tester.on('drain', done).on('error', done).on('close', done);
    });
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      Promise.all([file.write(chunk), accepted(chunk)]).then(() => callback(), callback);
    },
    final(callback) {
      if (tester.destroyed) return callback(new TesterStoppedError(tester.errored));
      tester.end();
      finished(tester, { readable: false }, (err) => callback(err ? new TesterStoppedError(err) : undefined));
    },
    destroy(err, callback) {
      if (err) tester.destroy(); // a failed write must not leave the test waiting for more
      callback(err);
    },
  });
}
