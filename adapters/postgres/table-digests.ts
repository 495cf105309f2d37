import { createHash, type Hash } from 'node:crypto';
import { Writable } from 'node:stream';
import type { TableDigests } from '../../core/reports.js';

// A digest of each table's data, taken from pg_dump(all)'s SQL as it streams past: the rows of
// every `COPY schema.table (…) FROM stdin;` block up to its `\.` line, hashed per table and keyed
// like the row counts ("<database>: <schema>.<table>", the database from the \connect before it).
// The dump writes each table's rows in physical order (pg_dump turns synchronized scans off), and a
// fresh load appends them in that order, so a re-dump of a restored copy digests the same: any
// other value in any row changes its table's digest. Node only looks at line starts outside the
// data; inside it, native Buffer.indexOf finds the end and the bytes go to the hash in slices.
// The dump writer hands the digests to the dump store (adapters/dump-store/rows.ts), which keeps
// them, tagged, beside the dump.

/** The line that ends a COPY block's data, with the newline before it (a data row never is `\.`). */
const END = Buffer.from('\n\\.\n');
/** `COPY <schema>.<table> (<columns>) FROM stdin;` (two spaces and no list for a table without columns). */
const IDENT = '(?:[^\\s."]+|"(?:[^"]|"")+")';
const COPY_LINE = new RegExp(`^COPY (${IDENT}\\.${IDENT}) (?:\\(.*\\) |\\s)?FROM stdin;$`);
// The \connect forms pg_dump writes (appendPsqlMetaConnect), as activities/sql-stream.ts reads them.
const CONNECT_PLAIN = /^\\connect (?:([A-Za-z0-9_.]+)|"([A-Za-z0-9_.]+)")$/;
const CONNECT_CONNINFO = /^\\connect -reuse-previous=on "((?:[^"]|"")*)"$/;
const CONNINFO_DBNAME = /^dbname=(?:([A-Za-z0-9_.]+)|'((?:[^'\\]|\\['\\])*)')$/;
/** A line longer than this is neither a COPY nor a \connect line pg_dump writes: passed over, never held. */
const MAX_LINE = 1 << 20;
const C = 0x43; // 'C'
const BACKSLASH = 0x5c;
const NL = 0x0a;

/** The database a pg_dump \connect line switches to; undefined for any other line. */
export function connectTarget(line: string): string | undefined {
  const plain = CONNECT_PLAIN.exec(line);
  // psql folds an unquoted \connect argument to lower case.
  if (plain) return plain[1] !== undefined ? plain[1].toLowerCase() : plain[2]!;
  const conninfo = CONNECT_CONNINFO.exec(line);
  const dbname = conninfo && CONNINFO_DBNAME.exec(conninfo[1]!.replace(/""/g, '"'));
  return dbname ? (dbname[1] ?? dbname[2]!.replace(/\\(.)/g, '$1')) : undefined;
}

export class UnterminatedCopyError extends Error {
  constructor(table: string) {
    super(`the SQL ended inside the data of ${table} (no \\. line): the dump is incomplete`);
    this.name = 'UnterminatedCopyError';
  }
}

/**
 * A Writable that digests pg_dump(all)'s plain SQL per table. `database` names the tables before
 * any \connect (pg_dump -d DB writes none). After 'finish', `digests()` holds one sha256 (hex) per
 * table whose data the SQL carries, empty tables included.
 */
export class TableDigester extends Writable {
  /** Bytes of SQL seen. */
  bytes = 0;
  private readonly result: TableDigests = {};
  private readonly counts: Record<string, number> = {};
  private database: string;
  // Outside the data: 'start' at a line start, 'keep' collecting a line that may matter, 'skip' the rest of one that does not.
  private mode: 'start' | 'keep' | 'skip' | 'data' = 'start';
  private line: Buffer[] = [];
  private lineBytes = 0;
  // Inside the data: the table, its hash, and up to 3 bytes held back (they may begin the end line).
  private table = '';
  private hash: Hash | undefined;
  private held = Buffer.alloc(0);
  /** Leading bytes of `held` that are not data: the newline assumed before the first row. */
  private heldVirtual = 0;

  constructor(database = '') {
    super({ highWaterMark: 1 << 16 });
    this.database = database;
  }

  digests(): TableDigests {
    return { ...this.result };
  }

  /** Each table's row count: the lines of its data (COPY's text format escapes a newline in a value). */
  rowCounts(): Record<string, number> {
    return { ...this.counts };
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.bytes += chunk.length;
    let pos = 0;
    while (pos < chunk.length) pos = this.mode === 'data' ? this.inData(chunk, pos) : this.outside(chunk, pos);
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.mode === 'data') return callback(new UnterminatedCopyError(this.table));
    if (this.mode === 'keep') this.endLine(Buffer.concat(this.line));
    callback();
  }

  /** Between data blocks: finds line ends, looks only at lines that start with C or a backslash. */
  private outside(chunk: Buffer, pos: number): number {
    if (this.mode === 'start') {
      const first = chunk[pos]!;
      if (first === NL) return pos + 1;
      this.mode = first === C || first === BACKSLASH ? 'keep' : 'skip';
      this.line = [];
      this.lineBytes = 0;
    }
    const nl = chunk.indexOf(NL, pos);
    const end = nl === -1 ? chunk.length : nl;
    if (this.mode === 'keep') {
      this.lineBytes += end - pos;
      if (this.lineBytes > MAX_LINE) {
        this.mode = 'skip';
        this.line = [];
      } else if (nl === -1) {
        this.line.push(Buffer.from(chunk.subarray(pos, end))); // a copy: the chunk is not ours to keep
      } else {
        this.line.push(chunk.subarray(pos, end));
        const line = this.line.length === 1 ? this.line[0]! : Buffer.concat(this.line);
        this.line = [];
        this.mode = 'start';
        this.endLine(line);
        return nl + 1;
      }
    }
    if (nl === -1) return chunk.length;
    this.mode = 'start';
    return nl + 1;
  }

  /** A whole line outside the data: a \connect switches the database, a COPY starts a table's data. */
  private endLine(bytes: Buffer): void {
    const line = bytes.toString('utf8');
    if (line.startsWith('\\connect ')) {
      const db = connectTarget(line);
      if (db !== undefined) this.database = db;
      return;
    }
    const copy = COPY_LINE.exec(line);
    if (!copy) return;
    let table = `${this.database}: ${copy[1]!}`;
    // pg_dump writes a table once per database; a second block (never seen) gets a name of its own.
    for (let n = 2; table in this.result; n++) table = `${this.database}: ${copy[1]!} (${n})`;
    this.table = table;
    this.result[table] = ''; // claimed now, its digest set at the end of the block
    this.counts[table] = 0;
    this.hash = createHash('sha256');
    this.mode = 'data';
    // The end line is "\n\.\n": a newline is assumed before the first row (not hashed), so an
    // empty table's "\.\n" right after the COPY line ends it too.
    this.held = Buffer.from('\n');
    this.heldVirtual = 1;
  }

  private digest(buf: Buffer, from: number, to: number): void {
    if (to <= from) return;
    const data = buf.subarray(from, to);
    this.hash!.update(data);
    let rows = 0;
    for (let at = data.indexOf(NL); at !== -1; at = data.indexOf(NL, at + 1)) rows++;
    this.counts[this.table]! += rows;
  }

  private endBlock(): void {
    this.result[this.table] = this.hash!.digest('hex');
    this.hash = undefined;
    this.held = Buffer.alloc(0);
    this.heldVirtual = 0;
    this.mode = 'start';
  }

  /** Inside a table's data: hashes up to the end line, holding back the last 3 bytes of each chunk. */
  private inData(chunk: Buffer, pos: number): number {
    if (this.held.length) {
      const probe = Buffer.concat([this.held, chunk.subarray(pos, pos + END.length - 1)]);
      const at = probe.indexOf(END);
      if (at !== -1) {
        this.digest(probe, this.heldVirtual, at + 1); // the last row's newline is data
        this.endBlock();
        return pos + at + END.length - this.held.length;
      }
      if (chunk.length - pos < END.length - 1) {
        // A short chunk: all of it is in the probe; hold back its last 3 bytes again.
        const keep = Math.min(END.length - 1, probe.length);
        this.digest(probe, this.heldVirtual, probe.length - keep);
        if (probe.length - keep > 0) this.heldVirtual = 0;
        this.held = Buffer.from(probe.subarray(probe.length - keep));
        return chunk.length;
      }
      this.digest(this.held, this.heldVirtual, this.held.length);
      this.held = Buffer.alloc(0);
      this.heldVirtual = 0;
    }
    const at = chunk.indexOf(END, pos);
    if (at !== -1) {
      this.digest(chunk, pos, at + 1);
      this.endBlock();
      return at + END.length;
    }
    const keep = Math.min(END.length - 1, chunk.length - pos);
    this.digest(chunk, pos, chunk.length - keep);
    this.held = Buffer.from(chunk.subarray(chunk.length - keep));
    return chunk.length;
  }
}

/** Tables whose data differs between what a dump recorded and a re-dump: each side's extra tables included. */
export function compareDigests(recorded: TableDigests, restored: TableDigests): string[] {
  const tables = [...new Set([...Object.keys(recorded), ...Object.keys(restored)])].sort();
  return tables.filter((t) => recorded[t] !== restored[t]);
}
