import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { finished, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checksumFileName, dumpFileName, partialFileName } from '../src/dump-names.js';
import { formatBytes } from '../src/format.js';
import { corruptDump } from './checksums.js';
import { compressArgs, formatOf, testArgs } from './compression.js';
import { postgresCommand } from './container.js';
import type { ActivityDeps } from './deps.js';
import { diskError, fsyncDir, writeFileAtomic } from './fs-safe.js';
import { awaitCommand, startCommand, startPipedPair, stopCommand, throwIfCancelled, withHeartbeats } from './run-command.js';
import type { DumpDatabaseInput, DumpResult } from './types.js';

export function createDumpActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * pg_dumpall (the runbook's choice, with --clean --if-exists so a restore replaces what exists)
     * piped through the configured compressor into a hidden temporary file, hashed and tested by
     * the compressor's own -t in the same pass, fsynced, then renamed to
     * immich_<stamp>.sql.gz (or .sql.zst) beside its .sha256. Memory stays flat:
     * the bytes stream through. A partial dump never appears under a final name.
     */
    async dumpDatabase({ target, stamp }: DumpDatabaseInput): Promise<DumpResult> {
      const dir = config.backup.dir;
      const name = dumpFileName(stamp, formatOf(config.backup.compressor));
      const finalPath = join(dir, name);
      const tempPath = join(dir, partialFileName(name));
      const sumName = checksumFileName(name);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // An earlier attempt whose worker died leaves its temporary file behind; this attempt owns the name now.
      await rm(tempPath, { force: true });

      const started = Date.now();
      const pg = postgresCommand(config, target, 'pg_dumpall', ['-U', config.postgres.user, '--clean', '--if-exists']);
      const hash = createHash('sha256');
      let bytes = 0;
      const progress = () => ({
        step: 'dumping',
        file: name,
        bytesWritten: bytes,
        written: formatBytes(bytes),
        elapsedSeconds: Math.round((Date.now() - started) / 1000),
      });

      const file = await open(tempPath, 'wx', 0o600).catch((err: unknown) => {
        throw diskError(err, dir);
      });
      // pg_dumpall writes into the compressor through an OS pipe: the SQL (2-3x the dump) never
      // passes through this process. Only the compressed bytes do, to be hashed and written.
      const { producer: dump, consumer: compress } = await startPipedPair(
        { file: pg.file, args: pg.args, label: 'pg_dumpall', env: pg.env },
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
      // The compressor's own program tests its output as it is written (the format's checksum over
      // the whole stream): validation then needs no second pass over the file. That pg_dumpall got
      // to its end is its exit status: its last write is the completion marker.
      const testLabel = `${config.backup.compressor} -t`;
      const tester = startCommand(config.backup.compressor, testArgs(config.backup.compressor), { label: testLabel, stdin: 'pipe', stdout: 'ignore' });
      try {
        const write = pipeline(compress.stdout!, counter, teeSink(file, tester.stdin!));
        // Settle all four before deciding: a failing pg_dumpall must not leave the compressor, the write or the test behind.
        const [dumped, compressed, written, tested] = await withHeartbeats(
          Promise.allSettled([awaitCommand(dump, 'pg_dumpall'), awaitCommand(compress, config.backup.compressor), write, awaitCommand(tester, testLabel)]),
          progress,
        );
        throwIfCancelled(); // the killed commands broke the write: that is no disk error
        // A failed write (a full disk) kills the compressor and pg_dumpall by SIGPIPE: report the
        // write, unless it failed only because the test quit on a stream it could not decode.
        const testQuit = tested.status === 'rejected' && written.status === 'rejected' && written.reason instanceof TesterStoppedError;
        if (written.status === 'rejected' && !testQuit) throw diskError(written.reason, dir);
        if (dumped.status === 'rejected') throw dumped.reason;
        if (compressed.status === 'rejected') throw compressed.reason;
        if (tested.status === 'rejected') throw corruptDump(name, tested.reason, `what ${config.backup.compressor} wrote does not decode; nothing was kept`);
        await file.sync().catch((err: unknown) => {
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
      try {
        // Checksum first, then the dump: a dump under its final name always has its .sha256 beside it.
        await writeFileAtomic(join(dir, sumName), join(dir, partialFileName(sumName)), `${sha256}  ${name}\n`);
        await rename(tempPath, finalPath);
        await fsyncDir(dir);
      } catch (err) {
        await rm(tempPath, { force: true });
        throw diskError(err, dir);
      }
      const durationMs = Date.now() - started;
      logger.info({ file: name, bytes, sha256, durationMs }, 'dump written');
      return { file: name, path: finalPath, bytes, sha256, durationMs };
    },
  };
}

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
