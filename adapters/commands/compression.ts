import type { Duplex } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Config } from '../../config/config.js';
import { dumpFormat, type DumpFormat } from '../../core/dump-names.js';
import { filterStream } from './run-command.js';

// One place that knows the compressors: which program writes a format, and how its SQL is read
// back. gzip is decoded in-process (Node's zlib); zstd by the zstd program (Node 20's zlib has no
// zstd), as a stream whose failure is an ordinary stream error (run-command.ts's filterStream).

export function formatOf(compressor: Config['backup']['compressor']): DumpFormat {
  return compressor === 'zstd' ? 'zstd' : 'gzip';
}

/** argv for the configured compressor: stdin to stdout at the configured level. */
export function compressArgs({ compressor, compressionLevel }: Config['backup']): string[] {
  return compressor === 'zstd' ? ['-q', '-c', `-${compressionLevel}`] : ['-c', `-${compressionLevel}`];
}

/**
 * argv for the compressor's own decoder of a stream on stdin to stdout: it decodes to the end and
 * checks the format's checksum (gzip's CRC-32 and length, zstd's content checksum) as -t does,
 * exiting non-zero on a stream that is damaged or cut short, and hands on the SQL it decoded.
 */
export function decodeArgs(compressor: Config['backup']['compressor']): string[] {
  return compressor === 'zstd' ? ['-d', '-c', '-q'] : ['-d', '-c'];
}

/** A stream that turns a dump's compressed bytes (format by its name) back into SQL. */
export function decompressor(name: string): Duplex {
  if (dumpFormat(name) === 'gzip') return createGunzip();
  return filterStream('zstd', ['-d', '-c', '-q']);
}

/** True for the errors a decoder raises on bytes that are not a complete stream of its format. */
export function isCorruptStreamError(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException & { exitCode?: number; command?: string };
  const code = e.code ?? '';
  if (code.startsWith('Z_') || code === 'ERR_PADDING_1') return true;
  return typeof e.exitCode === 'number' && e.exitCode !== 0 && (e.command ?? '').startsWith('zstd -d');
}
