import { Transform, Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { UnsafeDumpError } from '../src/errors.js';

// Line-by-line views of a dump's SQL as it streams: a safety scan before a restore, and the
// small rewrites a restore needs. Data inside COPY … FROM stdin blocks is passed over, so a photo
// caption with a backslash in it is never mistaken for a command.

/** Meta-commands pg_dump and pg_dumpall write; any other backslash command is refused. */
const ALLOWED_META = /^\\(connect|restrict|unrestrict)\b/;
const COPY_FROM_STDIN = /^COPY\s.*\sFROM\s+stdin;\s*$/i;
const COPY_PROGRAM = /^\s*COPY\b.*\bPROGRAM\b/i;

class LineSplitter {
  private decoder = new StringDecoder('utf8');
  private rest = '';
  constructor(private readonly onLine: (line: string) => void) {}
  push(chunk: Buffer): void {
    const text = this.rest + this.decoder.write(chunk);
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    for (const line of lines) this.onLine(line);
  }
  end(): void {
    const last = this.rest + this.decoder.end();
    if (last) this.onLine(last);
    this.rest = '';
  }
}

/** A sink that throws UnsafeDumpError at the first line that would run a program, and keeps the SQL's tail. */
export function safetyScanner(file: string): { sink: Writable; tail: () => string; sqlBytes: () => number; databases: () => string[] } {
  let inCopy = false;
  const databases = new Set<string>();
  let lineNo = 0;
  let tail = '';
  let bytes = 0;
  const refuse = (why: string) => {
    throw new UnsafeDumpError(`dump ${file} line ${lineNo}: ${why}; refusing to restore it (nothing was changed)`);
  };
  const splitter = new LineSplitter((line) => {
    lineNo++;
    if (inCopy) {
      if (line === '\\.') inCopy = false;
      return;
    }
    if (line.includes('\\!')) refuse('a psql \\! shell escape');
    if (COPY_PROGRAM.test(line)) refuse('COPY … PROGRAM runs a program on the server');
    if (line.startsWith('\\') && !ALLOWED_META.test(line)) refuse(`a psql meta-command pg_dump never writes (${line.split(/\s/)[0]})`);
    const connect = CONNECT.exec(line);
    if (connect) databases.add(connectTarget(connect[1]!));
    if (COPY_FROM_STDIN.test(line)) inCopy = true;
    tail = (tail + line + '\n').slice(-512);
  });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      try {
        splitter.push(chunk);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    final(callback) {
      try {
        splitter.end();
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
  return { sink, tail: () => tail, sqlBytes: () => bytes, databases: () => [...databases].filter((d) => d !== 'template1').sort() };
}

const CONNECT = /^\\connect\s+(?:-reuse-previous=on\s+)?(.+?)\s*$/;

/** The database a pg_dumpall \\connect line names: `immich`, `"Immich"` or `"dbname='immich'"`. */
function connectTarget(arg: string): string {
  const conninfo = /dbname='((?:[^'\\]|\\.)*)'/.exec(arg);
  if (conninfo) return conninfo[1]!.replace(/\\(.)/g, '$1');
  return arg.replace(/^"(.*)"$/, '$1').replace(/""/g, '"');
}

const quoteIdent = (name: string) => (/^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`);

/**
 * What psql receives during a restore:
 * - the restoring role's own DROP ROLE and CREATE ROLE are left out (a session cannot drop its own
 *   role, and the role exists), so ON_ERROR_STOP can stay on for everything else;
 * - pg_dump's empty search_path is replaced as Immich's restore documentation does, so functions
 *   and extensions (vector types) resolve during the load.
 */
export function restoreFilter(restoringRole: string): Transform {
  const role = quoteIdent(restoringRole);
  const skip = new Set([`DROP ROLE IF EXISTS ${role};`, `DROP ROLE ${role};`, `CREATE ROLE ${role};`]);
  let inCopy = false;
  let out: string[] = [];
  const splitter = new LineSplitter((line) => {
    if (inCopy) {
      if (line === '\\.') inCopy = false;
      out.push(line);
      return;
    }
    if (skip.has(line)) return;
    if (line === "SELECT pg_catalog.set_config('search_path', '', false);") {
      out.push("SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);");
      return;
    }
    if (COPY_FROM_STDIN.test(line)) inCopy = true;
    out.push(line);
  });
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      splitter.push(chunk);
      const text = out.length ? out.join('\n') + '\n' : '';
      out = [];
      callback(null, text);
    },
    flush(callback) {
      splitter.end();
      callback(null, out.length ? out.join('\n') + '\n' : '');
      out = [];
    },
  });
}
