import { Transform, Writable } from 'node:stream';
import { CLUSTER_POLICY, type DumpPolicy } from './dump-policy.js';
import { DumpFilter, type Framing } from './psql-lexer.js';

// The dump's bytes on their way to psql, and their verification before a restore: the same lexer
// and policy for both, so the bytes verified are filtered exactly like the bytes loaded.

export { DumpFilter } from './psql-lexer.js';

/** A sink that verifies a dump with the lexer and its policy, and keeps the SQL's tail and databases. */
export function safetyScanner(file: string, policy: DumpPolicy = CLUSTER_POLICY): { sink: Writable; tail: () => string; sqlBytes: () => number; databases: () => string[] } {
  const filter = new DumpFilter(file, { policy });
  let bytes = 0;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      try {
        filter.push(chunk);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    final(callback) {
      try {
        filter.end();
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
  return { sink, tail: () => filter.tail(), sqlBytes: () => bytes, databases: () => filter.databases() };
}

/**
 * What psql receives during a restore: the dump as the filter passes it, with the restoring
 * role's own DROP/CREATE ROLE left out and pg_dump's empty search_path replaced; with `frame`,
 * psql's first line is the loader's `\restrict` and every allowed meta-command is framed; with
 * `pin`, pg_dump's settings are set again after every statement (DumpFilter's constructor).
 * Errors with UnsafeDumpError on anything refused, before psql has the statement.
 */
export function restoreFilter(restoringRole: string, file = 'dump', options: { policy?: DumpPolicy; frame?: Framing & { head: string }; pin?: boolean } = {}): Transform {
  const filter = new DumpFilter(file, { restoringRole, ...options });
  const send = (stream: Transform, parts: Buffer[]) => {
    for (const part of parts) if (part.length) stream.push(part);
  };
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        send(this, filter.push(chunk));
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback) {
      try {
        send(this, filter.end());
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
  if (options.frame) stream.push(options.frame.head);
  return stream;
}
