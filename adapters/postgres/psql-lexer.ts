import { UnsafeDumpError } from '../../core/errors.js';
import { CLUSTER_POLICY, CONNECT_CONNINFO, CONNECT_PLAIN, CONNINFO_DBNAME, ENCODING, HEAD_WORDS, RESTRICT, type DumpPolicy } from './dump-policy.js';

// How psql reads a dump, byte for byte (src/fe_utils/psqlscan.l, src/bin/psql/psqlscanslash.l,
// copy.c handleCopyIn): quoted literals, dollar quotes, comments, parenthesis and BEGIN ATOMIC depth
// decide where a statement ends and where a backslash would be a meta-command. Each statement and
// each whole-line meta-command is handed to the dump's policy (dump-policy.ts), which decides.
//
// The verification before a restore and the stream into psql run this same code, so the bytes
// verified are filtered exactly like the bytes loaded. It is not what keeps a dump from running
// commands on the host: psql loads in restrict mode (restricted-psql.ts). Server-side code can
// change how psql reads quotes and bytes while a dump loads; the loader sets pg_dump's settings
// again after every statement (`pin`), and where psql and this lexer still disagreed, psql would
// refuse every meta-command but `\unrestrict`, whose bytes pass here only as pg_dump's own line.
//
// It assumes psql runs with ON_ERROR_STOP=1, as every load does: a COPY the server rejects
// would otherwise make psql read the COPY data as SQL.

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;
const BACKSLASH = 0x5c;
const QUOTE = 0x27;
const DQUOTE = 0x22;
const DOLLAR = 0x24;
const SEMICOLON = 0x3b;
const COLON = 0x3a;

const UNRESTRICT = Buffer.from('\\unrestrict');
const NEWLINE = Buffer.from('\n');

/** Longest line held while waiting for its newline: a bound on memory for a hostile dump. */
const MAX_LINE = 256 * 1024 * 1024;

// psql's character classes (psqlscan.l): bytes >= 0x80 are identifier characters.
const IDENT_START = new Uint8Array(256);
const IDENT_CONT = new Uint8Array(256);
const DIGIT = new Uint8Array(256);
const SPACE = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  const letter = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c >= 0x80;
  const digit = c >= 0x30 && c <= 0x39;
  IDENT_START[c] = letter ? 1 : 0;
  IDENT_CONT[c] = letter || digit || c === DOLLAR ? 1 : 0;
  DIGIT[c] = digit ? 1 : 0;
  SPACE[c] = c === 0x20 || c === 0x09 || c === 0x0b || c === 0x0c ? 1 : 0;
}

/** Where the lexer is between bytes, as in psqlscan.l's start conditions. */
const enum Lex {
  Code,
  Quote, // '…' with standard_conforming_strings on (also B'', X'', N'', U&'')
  EQuote, // E'…': backslash escapes the next byte
  Ident, // "…" (also U&"…")
  Dollar, // $tag$…$tag$
  Comment, // /* … */, nested
}

/** Words that may follow a `;` psql keeps inside a BEGIN ATOMIC body (SQL-standard function bodies). */
const BODY_WORDS = new Set(['select', 'insert', 'update', 'delete', 'merge', 'with', 'values', 'table', 'return', 'end']);

const PSQL_BEGIN_WORDS = new Map([['create', 'c'], ['function', 'f'], ['procedure', 'p'], ['or', 'o'], ['replace', 'r']]);

/** COPY text-format escapes pg_dump writes; any other backslash in data is refused (psql could read a failed COPY's data as commands). */
const COPY_ESCAPE = new Uint8Array(256);
for (const ch of 'bfnrtvNx01234567\\.') COPY_ESCAPE[ch.charCodeAt(0)] = 1;

const quoteIdent = (name: string) => (/^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`);
const preview = (text: string) => JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text);

type Verdict = 'keep' | 'drop' | Buffer;

/** How the loader frames an allowed meta-command line: lift its own restriction for that line only. */
export interface Framing {
  around(metaLine: string): string;
}

/**
 * The filter: push() chunks of SQL, get back what psql may receive. Lines are passed through
 * byte for byte except the restore rewrites; output is held back while a statement is open, so
 * a refusal never leaves psql half a statement to run at end of input.
 */
export class DumpFilter {
  private lineNo = 0;
  private partial: Buffer | undefined;
  private held: Buffer[] = [];
  private readonly dbs = new Set<string>();
  private sqlTail = '';
  private readonly rewrites = new Map<string, Buffer | 'drop'>();

  // COPY … FROM stdin data lines follow until `\.`.
  private inCopy = false;
  // Lexer state that lives across lines.
  private lex = Lex.Code;
  private dollarTag: Buffer | undefined;
  private commentDepth = 0;
  private parenDepth = 0;
  private beginDepth = 0;
  // The statement being read (psql's query buffer).
  private pending = false;
  private stmtText = '';
  private stmtLine = 0;
  private stmtWholeLine = false;
  private words: string[] = [];
  private idents: string[] = [];
  private afterBodySemicolon = false;
  // Cached positions of the next CR and NUL in the current buffer: checks stay linear in its size.
  private scanBuf: Buffer | undefined;
  private nextCr = -1;
  private nextNul = -1;
  private unrestrictBuf: Buffer | undefined;
  private nextUnrestrict = Infinity;

  private readonly policy: DumpPolicy;
  private readonly frame: Framing | undefined;
  private readonly pin: boolean;
  // The client encoding the dump last set (SET client_encoding, \encoding) in this session; a statement ended (or a session began) on this line.
  private encoding: string | undefined;
  private endedOnLine = false;

  constructor(
    readonly file: string,
    options: {
      /** What the dump's format may contain (dump-policy.ts); pg_dumpall's by default. */
      policy?: DumpPolicy;
      /** For a restore: the role loading it (its own DROP/CREATE ROLE left out, pg_dump's empty search_path replaced). */
      restoringRole?: string;
      /** For a restore: psql loads in restrict mode; the dump's own keys are dropped, each allowed meta-command is framed by the loader's. */
      frame?: Framing;
      /**
       * For a restore: after every line that ends a statement or a COPY block, pg_dump's
       * standard_conforming_strings (on) and the client_encoding the dump set are set again.
       * Server-side code that switched them while the statement ran (a CHECK during COPY) would
       * otherwise make psql read the following quotes and bytes unlike pg_dump wrote them: with the
       * settings back, a dump planted that way loads as written, its planted lines as data.
       */
      pin?: boolean;
    } = {},
  ) {
    this.policy = options.policy ?? CLUSTER_POLICY;
    this.frame = options.frame;
    this.pin = options.pin === true;
    const restoringRole = options.restoringRole;
    if (restoringRole !== undefined) {
      // The restoring role's own DROP ROLE and CREATE ROLE are left out (a session cannot drop its
      // own role, and the role exists), so ON_ERROR_STOP can stay on for everything else; pg_dump's
      // empty search_path is replaced as Immich's restore documentation does, so functions and
      // extensions (vector types) resolve during the load.
      const role = quoteIdent(restoringRole);
      for (const line of [`DROP ROLE IF EXISTS ${role};`, `DROP ROLE ${role};`, `CREATE ROLE ${role};`]) this.rewrites.set(line, 'drop');
      this.rewrites.set("SELECT pg_catalog.set_config('search_path', '', false);", Buffer.from("SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);\n"));
    }
  }

  /** Databases named by \connect lines, template1 left out. */
  databases(): string[] {
    return [...this.dbs].filter((d) => d !== 'template1').sort();
  }

  /** The last 512 characters of SQL outside COPY data (where the completion marker is). */
  tail(): string {
    return this.sqlTail;
  }

  /** Filters one chunk; returns what may go to psql now. Throws UnsafeDumpError. */
  push(chunk: Buffer): Buffer[] {
    const ready: Buffer[] = [];
    let from = 0;
    if (this.partial) {
      const nl = chunk.indexOf(LF);
      if (nl < 0) {
        this.partial = Buffer.concat([this.partial, chunk]);
        if (this.partial.length > MAX_LINE) this.refuse(this.lineNo + 1, `a line longer than ${MAX_LINE} bytes`);
        return ready;
      }
      const line = Buffer.concat([this.partial, chunk.subarray(0, nl + 1)]);
      this.partial = undefined;
      this.scan(line, ready);
      from = nl + 1;
    }
    this.scan(from === 0 ? chunk : chunk.subarray(from), ready);
    return ready;
  }

  /** Ends the input: refuses a dump that stops inside a statement, a literal or a COPY block. */
  end(): Buffer[] {
    const ready: Buffer[] = [];
    if (this.partial) {
      const last = this.partial;
      this.partial = undefined;
      this.lineNo++;
      const verdict = this.line(last, 0, last.length);
      this.held.push(verdict === 'keep' ? last : verdict === 'drop' ? Buffer.alloc(0) : verdict);
    }
    if (this.inCopy) this.refuse(this.lineNo, 'the input ends inside a COPY block');
    if (this.pending || this.lex !== Lex.Code) this.refuse(this.stmtLine || this.lineNo, 'the input ends inside a statement');
    ready.push(...this.held);
    this.held = [];
    return ready;
  }

  private refuse(line: number, why: string): never {
    throw new UnsafeDumpError(`dump ${this.file} line ${line}: ${why}; refusing to restore it (nothing was changed)`);
  }

  /** True when psql would hold nothing unsent: what came so far may go to psql. */
  private settled(): boolean {
    return this.inCopy || (!this.pending && this.lex === Lex.Code);
  }

  private scan(buf: Buffer, ready: Buffer[]): void {
    let pos = 0;
    let keepFrom = 0;
    let settledAt = -1;
    for (let nl = buf.indexOf(LF); nl >= 0; nl = buf.indexOf(LF, pos)) {
      this.lineNo++;
      const verdict = this.line(buf, pos, nl);
      if (verdict !== 'keep') {
        this.held.push(buf.subarray(keepFrom, pos));
        if (verdict !== 'drop') this.held.push(verdict);
        keepFrom = nl + 1;
      }
      pos = nl + 1;
      if (this.settled()) settledAt = pos;
    }
    if (settledAt >= 0) {
      ready.push(...this.held, buf.subarray(keepFrom, settledAt));
      this.held = [];
      keepFrom = settledAt;
    }
    if (keepFrom < pos) this.held.push(buf.subarray(keepFrom, pos));
    if (pos < buf.length) {
      this.partial = Buffer.from(buf.subarray(pos));
      if (this.partial.length > MAX_LINE) this.refuse(this.lineNo + 1, `a line longer than ${MAX_LINE} bytes`);
    }
  }

  /** True when `\unrestrict` starts in buf[start, end); the next position is cached per buffer, as in has(). */
  private hasUnrestrict(buf: Buffer, start: number, end: number): boolean {
    if (this.unrestrictBuf !== buf || (this.nextUnrestrict !== Infinity && this.nextUnrestrict < start)) {
      this.unrestrictBuf = buf;
      const at = buf.indexOf(UNRESTRICT, start);
      this.nextUnrestrict = at < 0 ? Infinity : at;
    }
    return this.nextUnrestrict < end;
  }

  /** True when byte `b` occurs in buf[start, end). */
  private has(b: typeof CR | typeof NUL, buf: Buffer, start: number, end: number): boolean {
    if (this.scanBuf !== buf) {
      this.scanBuf = buf;
      this.nextCr = -1;
      this.nextNul = -1;
    }
    let next = b === CR ? this.nextCr : this.nextNul;
    if (next !== Infinity && next < start) {
      const at = buf.indexOf(b, start);
      next = at < 0 ? Infinity : at;
      if (b === CR) this.nextCr = next;
      else this.nextNul = next;
    }
    return next < end;
  }

  /**
   * One line without its newline: buf[start, end). With `pin`, a line that ends a statement or a COPY
   * block is followed by pg_dump's own settings that psql's lexer follows (see the constructor).
   */
  private line(buf: Buffer, start: number, end: number): Verdict {
    const copying = this.inCopy;
    this.endedOnLine = false;
    const verdict = this.readLine(buf, start, end);
    if (!this.pin || !(this.endedOnLine || (copying && !this.inCopy)) || this.inCopy || this.pending || this.lex !== Lex.Code) return verdict;
    // A statement (or COPY) ended with this line, and server-side code may have run: psql reads the
    // next line the way pg_dump wrote it only with pg_dump's settings back in place.
    const pin = `SET standard_conforming_strings = on;\n${this.encoding ? `SET client_encoding = '${this.encoding}';\n` : ''}`;
    const body = verdict === 'keep' ? Buffer.concat([buf.subarray(start, end), NEWLINE]) : verdict === 'drop' ? Buffer.alloc(0) : verdict;
    return Buffer.concat([body, Buffer.from(pin)]);
  }

  /** One line without its newline, as psql would read it. */
  private readLine(buf: Buffer, start: number, end: number): Verdict {
    // psql reads lines with fgets and strlen: a NUL would hide the rest of a line from psql.
    if (this.has(NUL, buf, start, end)) this.refuse(this.lineNo, 'a NUL byte');
    // In restrict mode psql still runs \unrestrict, and expands backquotes and :variables in its
    // argument. Where server-side code makes psql read a line as a command that we read as a literal
    // (or data), that is the one way left to run something: the bytes `\unrestrict` pass only as
    // pg_dump's own whole line, which the loader drops.
    // In COPY data the bytes can only stand as the escaped `\\unrestrict` (COPY has no `\u` escape, refused
    // below), which psql, made to read the line as SQL, reads as `\\` and a word: a user's text passes.
    if (!this.inCopy && this.hasUnrestrict(buf, start, end) && !(this.lex === Lex.Code && !this.pending && RESTRICT.test(buf.toString('latin1', start, end)))) {
      this.refuse(this.lineNo, "\\unrestrict outside pg_dump's own whole line (psql, made to read this line as a command, would expand what follows it)");
    }
    if (this.inCopy) {
      if (end - start === 2 && buf[start] === BACKSLASH && buf[start + 1] === 0x2e) this.inCopy = false;
      // psql also ends the block at `\.` + CR LF; pg_dump writes CR in data as \r.
      else if (this.has(CR, buf, start, end)) this.refuse(this.lineNo, 'a carriage return in COPY data (psql would frame the block differently)');
      else {
        for (let k = buf.indexOf(BACKSLASH, start); k !== -1 && k < end; k = buf.indexOf(BACKSLASH, k + 2)) {
          if (k + 1 >= end || !COPY_ESCAPE[buf[k + 1]!]) this.refuse(this.lineNo, 'a backslash in COPY data that is not one of COPY\'s escapes (psql could read the line as a command)');
        }
      }
      return 'keep';
    }
    if (this.policy.asciiOnly) {
      for (let k = start; k < end; k++) {
        if (buf[k]! >= 0x80) this.refuse(this.lineNo, 'a byte outside ASCII outside COPY data in an unauthenticated dump (a client-encoding switch on the server would make psql read it differently)');
      }
    }
    this.keepTail(buf, start, end);
    if (this.settled() && end - start < 128) {
      const rewrite = this.rewrites.get(buf.toString('latin1', start, end));
      if (rewrite !== undefined) return rewrite;
    }
    if (this.lex === Lex.Code && buf[start] === BACKSLASH) {
      if (this.pending) this.refuse(this.lineNo, 'a psql meta-command inside a statement');
      return this.metaLine(buf.toString('latin1', start, end));
    }
    const segStart = this.lexLine(buf, start, end);
    if (this.pending) this.stmtText += buf.toString('latin1', segStart, end) + '\n';
    return 'keep';
  }

  private keepTail(buf: Buffer, start: number, end: number): void {
    const text = buf.toString('utf8', Math.max(start, end - 512), end);
    this.sqlTail = (this.sqlTail + text + '\n').slice(-512);
  }

  /** A whole-line meta-command: pg_dump's \restrict and \unrestrict; \connect and \encoding where the policy allows them. */
  private metaLine(line: string): Verdict {
    const name = /^\\[^\s\\]*/.exec(line)?.[0] ?? '\\';
    if (line.includes('`')) this.refuse(this.lineNo, `a backquote in a psql meta-command (${name} would run a shell command)`);
    if (RESTRICT.test(line)) return this.frame ? 'drop' : 'keep';
    const enc = /^\\encoding (\S+)$/.exec(line);
    if (enc) this.encoding = enc[1];
    const allowed = (): Verdict => {
      if (!this.policy.connects) this.refuse(this.lineNo, `${name} in a dump of one database (pg_dump writes none there; it could switch to another database)`);
      return this.frame ? Buffer.from(this.frame.around(line)) : 'keep';
    };
    if (ENCODING.test(line)) return allowed();
    if (/^\\(?:connect|c) /.test(line)) {
      this.encoding = undefined; // a new session: the dump sets its encoding again,
      this.endedOnLine = true; // and pg_dump's reading of quotes is pinned from its first line
    }
    const plain = CONNECT_PLAIN.exec(line);
    if (plain) {
      // psql folds an unquoted \connect argument to lower case.
      this.dbs.add(plain[1] !== undefined ? plain[1].toLowerCase() : plain[2]!);
      return allowed();
    }
    const conninfo = CONNECT_CONNINFO.exec(line);
    const dbname = conninfo && CONNINFO_DBNAME.exec(conninfo[1]!.replace(/""/g, '"'));
    if (dbname) {
      const db = Buffer.from(dbname[1] ?? dbname[2]!.replace(/\\(.)/g, '$1'), 'latin1').toString('utf8');
      // A name that libpq could read as a connection string: refused, it may point elsewhere.
      if (db.includes('=') || db.includes('://')) this.refuse(this.lineNo, `a \\connect whose database name looks like a connection string (${preview(db)})`);
      this.dbs.add(db);
      return allowed();
    }
    if (name === '\\connect' || name === '\\c') this.refuse(this.lineNo, `a \\connect that is not pg_dump's form (${preview(line)}: another host, port or option)`);
    this.refuse(this.lineNo, `a psql meta-command pg_dump never writes (${name})`);
  }

  private begin(at: number, lineStart: number): void {
    if (this.pending) return;
    this.pending = true;
    this.stmtText = '';
    this.stmtLine = this.lineNo;
    this.stmtWholeLine = at === lineStart;
    this.segStart = at;
  }

  private segStart = 0;

  /** Lexes one SQL line; returns where the open statement's text starts in it. */
  private lexLine(buf: Buffer, start: number, end: number): number {
    this.segStart = start;
    let i = start;
    while (i < end) {
      switch (this.lex) {
        case Lex.Code:
          i = this.code(buf, i, start, end);
          break;
        case Lex.Quote:
          i = this.closeDoubled(buf, i, end, QUOTE);
          break;
        case Lex.EQuote:
          for (; i < end; i++) {
            const c = buf[i];
            if (c === BACKSLASH) i++;
            else if (c === QUOTE) {
              if (buf[i + 1] === QUOTE && i + 1 < end) i++;
              else {
                this.lex = Lex.Code;
                i++;
                break;
              }
            }
          }
          break;
        case Lex.Ident:
          i = this.closeDoubled(buf, i, end, DQUOTE);
          break;
        case Lex.Dollar: {
          // The first `$tag$` closes it: psqlscan.l gives back a mismatched delimiter's last `$`.
          const tag = this.dollarTag!;
          for (; i < end; i++) {
            if (buf[i] === DOLLAR && i + tag.length <= end && buf.compare(tag, 0, tag.length, i, i + tag.length) === 0) {
              this.lex = Lex.Code;
              i += tag.length;
              break;
            }
          }
          break;
        }
        case Lex.Comment:
          for (; i < end; i++) {
            const c = buf[i];
            if (c === CR) this.refuse(this.lineNo, 'a carriage return outside a quoted literal');
            if (c === 0x2f && buf[i + 1] === 0x2a && i + 1 < end) {
              this.commentDepth++;
              i++;
            } else if (c === 0x2a && buf[i + 1] === 0x2f && i + 1 < end) {
              i++;
              if (--this.commentDepth === 0) {
                this.lex = Lex.Code;
                i++;
                break;
              }
            }
          }
          break;
      }
    }
    return this.segStart;
  }

  /** Inside '…' or "…" (a doubled quote stands for itself): where the closing quote ends it, or end of line. */
  private closeDoubled(buf: Buffer, i: number, end: number, quote: number): number {
    for (; i < end; i++) {
      if (buf[i] !== quote) continue;
      if (buf[i + 1] === quote && i + 1 < end) i++;
      else {
        this.lex = Lex.Code;
        return i + 1;
      }
    }
    return i;
  }

  /** Lexes code from i; returns where it stopped (a literal or comment opened, or the line ended). */
  private code(buf: Buffer, i: number, lineStart: number, end: number): number {
    while (i < end) {
      const c = buf[i]!;
      if (SPACE[c]) {
        i++;
        continue;
      }
      if (c === CR) this.refuse(this.lineNo, 'a carriage return outside a quoted literal');
      const next = i + 1 < end ? buf[i + 1] : -1;
      if (c === 0x2d && next === 0x2d) {
        if (this.has(CR, buf, i, end)) this.refuse(this.lineNo, 'a carriage return outside a quoted literal');
        return end;
      }
      if (c === 0x2f && next === 0x2a) {
        this.begin(i, lineStart);
        this.lex = Lex.Comment;
        this.commentDepth = 1;
        return i + 2;
      }
      if (c === BACKSLASH) {
        const name = /^\\[^\s\\]*/.exec(buf.toString('latin1', i, Math.min(end, i + 32)))?.[0] ?? '\\';
        this.refuse(this.lineNo, `a psql meta-command after other input on its line (${name})`);
      }
      if (IDENT_START[c]) {
        let j = i + 1;
        while (j < end && IDENT_CONT[buf[j]!]) j++;
        const after = j < end ? buf[j] : -1;
        if (j === i + 1 && after === QUOTE && /[eEbBxXnN]/.test(String.fromCharCode(c))) {
          this.token(i, lineStart);
          this.lex = c === 0x65 || c === 0x45 ? Lex.EQuote : Lex.Quote;
          return j + 1;
        }
        if (j === i + 1 && (c === 0x75 || c === 0x55) && after === 0x26 && j + 1 < end && (buf[j + 1] === QUOTE || buf[j + 1] === DQUOTE)) {
          // U&'…' and U&"…" spell any character with escapes (a setting's name, hidden from every check here).
          this.refuse(this.lineNo, 'a U& Unicode-escape literal or identifier (pg_dump never writes one)');
        }
        this.word(buf.toString('latin1', i, j).toLowerCase(), i, lineStart);
        i = j;
        continue;
      }
      this.token(i, lineStart);
      if (DIGIT[c] || (c === 0x2e && next !== -1 && DIGIT[next as number])) {
        // digits [. digits] [e [+-] digits]: the numbers pg_dump writes.
        let j = i;
        while (j < end && DIGIT[buf[j]!]) j++;
        if (j < end && buf[j] === 0x2e) for (j++; j < end && DIGIT[buf[j]!]; ) j++;
        if (j < end && (buf[j] === 0x65 || buf[j] === 0x45)) {
          let k = j + 1;
          if (k < end && (buf[k] === 0x2b || buf[k] === 0x2d)) k++;
          if (k < end && DIGIT[buf[k]!]) for (j = k; j < end && DIGIT[buf[j]!]; ) j++;
        }
        // psql and the server may split `1e'…'` or `1$a$` differently from here: pg_dump never writes them.
        if (j < end && (buf[j] === QUOTE || buf[j] === DQUOTE || buf[j] === DOLLAR)) this.refuse(this.lineNo, 'a quote or $ right after a number');
        // psql 14 and older read `1end` as a number and END, this lexer (and psql 15) as one token: they would disagree where a body ends.
        if (j < end && IDENT_CONT[buf[j]!]) this.refuse(this.lineNo, 'a number run into a word (psql versions split it differently)');
        i = j;
        continue;
      }
      switch (c) {
        case QUOTE:
          this.lex = Lex.Quote;
          return i + 1;
        case DQUOTE:
          this.lex = Lex.Ident;
          return i + 1;
        case DOLLAR: {
          let j = i + 1;
          if (j < end && DIGIT[buf[j]!]) {
            while (j < end && DIGIT[buf[j]!]) j++;
            if (j < end && (IDENT_CONT[buf[j]!] || buf[j] === QUOTE)) this.refuse(this.lineNo, 'a parameter run into other characters');
            i = j;
            continue;
          }
          if (j < end && IDENT_START[buf[j]!]) {
            j++;
            while (j < end && IDENT_CONT[buf[j]!] && buf[j] !== DOLLAR) j++;
          }
          if (j < end && buf[j] === DOLLAR) {
            this.dollarTag = Buffer.from(buf.subarray(i, j + 1));
            this.lex = Lex.Dollar;
            return j + 1;
          }
          i++; // a lone `$`: psql reads what follows as an identifier
          continue;
        }
        case 0x28:
          this.parenDepth++;
          break;
        case 0x29:
          if (this.parenDepth > 0) this.parenDepth--;
          break;
        case COLON:
          if (next === COLON) {
            i += 2;
            continue;
          }
          if (next !== -1 && (IDENT_START[next as number] || next === QUOTE || next === DQUOTE || next === 0x7b)) {
            this.refuse(this.lineNo, 'a psql variable reference (:name) outside a quoted literal');
          }
          break;
        case SEMICOLON:
          if (this.parenDepth === 0 && this.beginDepth === 0) {
            this.endStatement(buf, i, end);
            // psql reads a whole line with the settings it had when the line began: a statement that
            // changed them mid-line would leave the rest read unlike this lexer, before any pin.
            let k = i + 1;
            while (k < end && SPACE[buf[k]!]) k++;
            if (k < end && !(buf[k] === 0x2d && k + 1 < end && buf[k + 1] === 0x2d)) this.refuse(this.lineNo, "more after a statement's `;` on its line (pg_dump ends every statement with its line)");
            i++;
            continue;
          }
          // psql keeps this `;` inside the statement (a BEGIN ATOMIC body): what follows must be a
          // body statement, since an older psql or the server could run it as a statement of its own.
          if (this.parenDepth === 0) this.afterBodySemicolon = true;
          break;
      }
      i++;
    }
    return i;
  }

  /** A token other than a word: a statement starts, and a body `;` must be followed by a word. */
  private token(at: number, lineStart: number): void {
    this.begin(at, lineStart);
    if (this.afterBodySemicolon) this.refuse(this.lineNo, 'a statement inside a BEGIN ATOMIC body that is not a SQL body statement');
  }

  private word(w: string, at: number, lineStart: number): void {
    this.begin(at, lineStart);
    if (this.afterBodySemicolon) {
      if (!BODY_WORDS.has(w)) this.refuse(this.lineNo, `a statement inside a BEGIN ATOMIC body that is not a SQL body statement (${w.toUpperCase()})`);
      this.afterBodySemicolon = false;
    }
    if (this.words.length < HEAD_WORDS) this.words.push(w);
    // psqlscan.l's heuristic: in CREATE [OR REPLACE] FUNCTION|PROCEDURE, BEGIN … END hides `;`.
    if (this.idents.length < 4) this.idents.push(PSQL_BEGIN_WORDS.get(w) ?? '');
    const [a, b, c, d] = this.idents;
    if (a === 'c' && (b === 'f' || b === 'p' || (b === 'o' && c === 'r' && (d === 'f' || d === 'p'))) && this.parenDepth === 0) {
      if (w === 'begin') this.beginDepth++;
      else if (w === 'case' && this.beginDepth >= 1) this.beginDepth++;
      else if (w === 'end' && this.beginDepth > 0) this.beginDepth--;
    }
  }

  private endStatement(buf: Buffer, semicolon: number, end: number): void {
    this.begin(semicolon, -1);
    const text = this.stmtText + buf.toString('latin1', this.segStart, semicolon + 1);
    const wholeLine = this.stmtWholeLine && semicolon + 1 === end;
    const words = this.words;
    const line = this.stmtLine;
    this.pending = false;
    this.words = [];
    this.idents = [];
    this.stmtText = '';
    this.afterBodySemicolon = false;
    this.segStart = semicolon + 1;
    this.check(text, words, line, wholeLine);
  }

  /** The dump's policy decides; COPY data follows an allowed COPY. */
  private check(text: string, words: string[], line: number, wholeLine: boolean): void {
    this.endedOnLine = true;
    const verdict = this.policy.check({ text, words, wholeLine });
    if (verdict === 'copy') this.inCopy = true;
    else if (verdict !== undefined) this.refuse(line, verdict);
    const encoding = /^SET client_encoding = '([A-Za-z0-9_]+)';$/.exec(text);
    if (encoding) this.encoding = encoding[1];
  }
}

