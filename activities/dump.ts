import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checksumFileName, dumpFileName, partialFileName } from '../src/dump-names.js';
import { formatBytes } from '../src/format.js';
import { postgresCommand } from './container.js';
import type { ActivityDeps } from './deps.js';
import { diskError, fsyncDir, writeFileAtomic } from './fs-safe.js';
import { awaitCommand, startCommand, stopCommand, withHeartbeats } from './run-command.js';
import type { DumpDatabaseInput, DumpResult } from './types.js';

export function createDumpActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * pg_dumpall (the runbook's choice, with --clean --if-exists so a restore replaces what exists)
     * piped through a gzip-compatible compressor into a hidden temporary file, hashed in the same
     * pass, fsynced, then renamed to immich_<stamp>.sql.gz beside its .sha256. Memory stays flat:
     * the bytes stream through. A partial dump never appears under a final name.
     */
    async dumpDatabase({ target, stamp }: DumpDatabaseInput): Promise<DumpResult> {
      const dir = config.backup.dir;
      const name = dumpFileName(stamp);
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
      const dump = startCommand(pg.file, pg.args, { label: 'pg_dumpall', env: pg.env, stdout: 'stream' });
      const compress = startCommand(config.backup.compressor, ['-c', `-${config.backup.compressionLevel}`], {
        label: config.backup.compressor,
        stdin: 'pipe',
        stdout: 'stream',
      });
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          bytes += chunk.length;
          callback(null, chunk);
        },
      });
      try {
        const write = pipeline(compress.stdout!, counter, fileSink(file));
        const piped = dump.pipe(compress);
        // Settle all three before deciding: a failing pg_dumpall must not leave the compressor or the write behind.
        const [dumped, compressed, written] = await withHeartbeats(
          Promise.allSettled([awaitCommand(dump, 'pg_dumpall'), awaitCommand(piped, config.backup.compressor), write]),
          progress,
        );
        // A failed write (a full disk) kills the compressor and pg_dumpall by SIGPIPE: report the write.
        if (written.status === 'rejected') throw diskError(written.reason, dir);
        if (dumped.status === 'rejected') throw dumped.reason;
        if (compressed.status === 'rejected') throw compressed.reason;
        await file.sync().catch((err: unknown) => {
          throw diskError(err, dir);
        });
      } catch (err) {
        stopCommand(dump);
        stopCommand(compress);
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

/** Writes into a FileHandle we keep open (to fsync it before the rename); fs.WriteStream with autoClose off never finishes a pipeline. */
function fileSink(file: FileHandle): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      file.write(chunk).then(() => callback(), callback);
    },
  });
}
