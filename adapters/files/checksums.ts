import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { dumpFormat } from '../../core/dump-names.js';
import { DumpCorruptError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { decompressor, isCorruptStreamError } from '../commands/compression.js';
import { withHeartbeats } from '../commands/run-command.js';

/** Reads of 1 MiB: half the time of the default 64 KiB for a dump-sized file (measured: 0.3 s vs 0.6 s for 350 MB). */
export const READ_CHUNK = 1 << 20;

export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path, { highWaterMark: READ_CHUNK }), hash);
  return hash.digest('hex');
}

/** A sink that counts a dump's SQL bytes and keeps its last `keep` bytes (where the completion marker is). */
export function sqlTailSink(keep = 512): { sink: Writable; sqlBytes: () => number; tail: () => string } {
  let bytes = 0;
  let tail = Buffer.alloc(0);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      tail = chunk.length >= keep ? Buffer.from(chunk.subarray(-keep)) : Buffer.concat([tail, chunk]).subarray(-keep);
      callback();
    },
  });
  return { sink, sqlBytes: () => bytes, tail: () => tail.toString('utf8') };
}

/**
 * One pass over a dump (.sql.gz or .sql.zst): the compressed bytes are hashed while their SQL
 * streams into `sql`, with heartbeats of how far it got. A stream that does not decode to its end
 * is a DumpCorruptError whose message ends with `consequence`.
 */
export async function decodeAndHash(path: string, file: string, sql: Writable, step: string, consequence: string): Promise<{ sha256: string; size: number }> {
  const { size } = await stat(path);
  const hash = createHash('sha256');
  let read = 0;
  const source = createReadStream(path, { highWaterMark: READ_CHUNK });
  source.on('data', (chunk: Buffer | string) => {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    hash.update(buf);
    read += buf.length;
  });
  try {
    await withHeartbeats(pipeline(source, decompressor(file), sql), () => ({
      step,
      file,
      checked: `${formatBytes(read)} of ${formatBytes(size)}`,
      percent: Math.floor((read / size) * 100),
    }));
  } catch (err) {
    if (isCorruptStreamError(err)) throw corruptDump(file, err, consequence);
    throw err;
  }
  return { sha256: hash.digest('hex'), size };
}

export function corruptDump(file: string, err: unknown, consequence: string): DumpCorruptError {
  const what = dumpFormat(file) === 'zstd' ? 'zstd' : 'gzip';
  const detail = ((err as { stderr?: unknown }).stderr ? String((err as { stderr: unknown }).stderr) : (err as Error).message).trim().split('\n').at(-1);
  return new DumpCorruptError(`dump ${file} is not a complete ${what} stream (${detail}): ${consequence}`);
}
