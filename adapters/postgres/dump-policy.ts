// What each dump format may contain, as data a reviewer reads on one screen. The lexer
// (psql-lexer.ts) finds the statements and whole-line meta-commands; this file decides.
//
// This is a second line, not the boundary: psql runs every load in restrict mode (restricted-psql.ts),
// so no byte of a dump can run a meta-command whatever this allows. The policy refuses, before
// anything stops, what pg_dump or pg_dumpall would never write, and what a dump of that format has no
// business doing to the cluster. It cannot see server-side code built at run time (EXECUTE 'CO' ||
// 'PY …' in a function body): that runs as the database server, as in any restore.

/** A dump as pg_dumpall writes it (ours, restore points) or as pg_dump writes one database (Immich's own). */
export type PolicyFormat = 'cluster' | 'database';

const LITERAL = `'(?:[^']|'')*'`;
const IDENT = `(?:[A-Za-z_\\x80-\\xff][A-Za-z0-9_$\\x80-\\xff]*|"(?:[^"]|"")+")`;

/** pg_dump's COPY: `COPY schema.table (a, b) FROM stdin;` (two spaces and no list for a table without columns). */
const COPY_FROM_STDIN = new RegExp(`^COPY ${IDENT}\\.${IDENT} (?:\\(${IDENT}(?:, ${IDENT})*\\))? ?FROM stdin;$`);

/** The settings pg_dump and pg_dumpall SET at top level; any other SET (SET NAMES, …) is refused. */
const SET_FORM = /^SET (?:SESSION AUTHORIZATION (?:'(?:[^']|'')*'|DEFAULT)|ROLE [^;]+|(statement_timeout|lock_timeout|idle_in_transaction_session_timeout|transaction_timeout|client_encoding|standard_conforming_strings|check_function_bodies|xmloption|client_min_messages|row_security|default_tablespace|default_table_access_method|default_with_oids|default_transaction_read_only|search_path|escape_string_warning|synchronous_commit|extra_float_digits) = [^;]*);$/;
const RESET_FORM = /^RESET (?:SESSION AUTHORIZATION|ROLE);$/;

/** The SELECTs pg_dump writes: search_path, sequences, large objects, PostgreSQL 18's statistics. */
const SELECT_FORMS = [
  new RegExp(`^SELECT pg_catalog\\.set_config\\('search_path', ${LITERAL}, false\\);$`),
  new RegExp(`^SELECT pg_catalog\\.setval\\(${LITERAL}, -?\\d+, (?:true|false)\\);$`),
  /^SELECT pg_catalog\.lo_create\('\d+'\);$/,
  /^SELECT pg_catalog\.lo_open\('\d+', \d+\);$/,
  /^SELECT pg_catalog\.lowrite\(0, '\\x[0-9a-f]*'\);$/,
  /^SELECT pg_catalog\.lo_close\(0\);$/,
  /^SELECT pg_catalog\.lo_unlink\(oid\) FROM pg_catalog\.pg_largeobject_metadata WHERE oid = '\d+';$/,
  new RegExp(`^SELECT \\* FROM pg_catalog\\.pg_restore_(?:relation|attribute)_stats\\((?:[\\s,]|${LITERAL}|::[a-z_]+(?:\\[\\])?|NULL|-?\\d+)*\\);$`),
];
const UPDATE_TEMPLATE = new RegExp(`^UPDATE pg_catalog\\.pg_database SET datistemplate = (?:true|false) WHERE datname = ${LITERAL};$`);

/** How many of a statement's first unquoted words the lexer keeps: enough for the longest head and a GRANT's `ON`. */
export const HEAD_WORDS = 8;

/** A statement as the lexer hands it over: its text, its first unquoted words (lower case), whether it fills its lines. */
export interface Statement {
  text: string;
  words: readonly string[];
  wholeLine: boolean;
}

/** A statement head (its first words) and what it may be: any form, one of some forms, a check, or refused with a reason. */
type Head = [head: string, rule: 'any' | RegExp[] | { refuse: string } | ((s: Statement) => string | undefined)];

/** GRANT/REVOKE on an object (`… ON …` before `TO`/`FROM`, unquoted words only): never a role membership, which pg_dump of one database never writes. */
const onObject = ({ words }: Statement) => {
  const on = words.indexOf('on');
  const to = words.findIndex((w) => w === 'to' || w === 'from');
  return on > 0 && (to < 0 || on < to) ? undefined : 'a role membership GRANT or REVOKE (pg_dump of one database never writes one; it could hand out a privileged role)';
};

/** Every spelling of CREATE LANGUAGE: create [or replace] [trusted] [procedural] language. */
const LANGUAGE_HEADS = ['', 'or replace '].flatMap((a) => ['', 'trusted '].flatMap((b) => ['', 'procedural '].map((c) => `create ${a}${b}${c}language`)));

/** Statement heads every format allows; anything not listed here is refused as "a statement pg_dump never writes". */
const ALLOWED: Head[] = [
  ['create', 'any'],
  ['alter', 'any'],
  ['comment', 'any'],
  ['grant', 'any'],
  ['revoke', 'any'],
  ['drop', 'any'],
  ['insert', 'any'],
  ['begin', 'any'],
  ['commit', 'any'],
  ['start transaction', 'any'],
  ['security label', 'any'],
  ['refresh materialized', 'any'],
  ['copy', [COPY_FROM_STDIN]],
  ['set', [SET_FORM]],
  ['reset', [RESET_FORM]],
  ['select', SELECT_FORMS],
  ['update', [UPDATE_TEMPLATE]],
];

/** Refused in every format, checked before ALLOWED (the longer head wins). */
const REFUSED_ALWAYS: Head[] = [
  ['create subscription', { refuse: 'CREATE SUBSCRIPTION connects to another server' }],
  ['alter subscription', { refuse: 'ALTER SUBSCRIPTION connects to another server' }],
  ['alter system', { refuse: "ALTER SYSTEM rewrites the server's configuration" }],
  ['do', { refuse: 'a DO block runs code on the server' }],
  ['load', { refuse: 'LOAD loads a library into the server' }],
];

/** Refused in a single database's dump (Immich's own): pg_dump writes none of these, they reach beyond the database. */
const REFUSED_IN_DATABASE: Head[] = [
  ...['create role', 'alter role', 'drop role', 'create user', 'alter user', 'drop user', 'create group', 'alter group', 'drop group'].map((h): Head => [h, { refuse: 'role DDL (pg_dump of one database never writes any; it could make a superuser)' }]),
  ['alter database', { refuse: 'ALTER DATABASE (pg_dump of one database writes none; its settings apply to every later session)' }],
  ['create event trigger', { refuse: 'an event trigger (it runs code on every later DDL, as whoever runs it)' }],
  ['alter event trigger', { refuse: 'an event trigger (it runs code on every later DDL, as whoever runs it)' }],
  ...LANGUAGE_HEADS.map((h): Head => [h, { refuse: 'CREATE LANGUAGE (Immich uses none of its own)' }]),
  ['grant', onObject],
  ['revoke', onObject],
  ...['create server', 'alter server', 'create foreign data wrapper', 'create user mapping', 'alter user mapping'].map((h): Head => [h, { refuse: 'a foreign server or user mapping (it reaches other servers)' }]),
];

/** Server-side execution recognisable anywhere in a statement, literals and function bodies included. */
const SERVER_SIDE: Array<[RegExp, string]> = [
  [/\bcopy\b[\s\S]*\bprogram\b/i, 'COPY … PROGRAM runs a program on the server'],
  [/\b(?:pg_read_file|pg_read_binary_file|pg_ls_dir|pg_stat_file|lo_import|lo_export|pg_execute_server_program|pg_read_server_files|pg_write_server_files|dblink\w*)\b/i, "a function or role that reaches the server's files or programs"],
  [/\blanguage\s+["']?(?:c|internal|plpython\w*|plperlu|pltclu|plsh|plr)\b/i, 'an untrusted procedural language'],
  [/\bextension\s+(?:if\s+not\s+exists\s+)?["']?(?:file_fdw|dblink|postgres_fdw|adminpack|plpython\w*|plperlu|pltclu|plsh|plr)\b/i, 'an extension that reaches files, programs or other servers'],
  [/\b(?:session_preload_libraries|local_preload_libraries|shared_preload_libraries|dynamic_library_path)\b/i, 'a setting that loads server libraries'],
];

/** Settings psql's lexer depends on: only pg_dump's own values, set as pg_dump sets them. */
const LEXER_SETTINGS: Array<[RegExp, RegExp, string]> = [
  [/standard_conforming_strings/i, /^SET standard_conforming_strings = on;$/, "standard_conforming_strings other than pg_dump's SET … = on (psql would read quotes differently)"],
  [/client_encoding/i, /^SET client_encoding = '(?:UTF8|SQL_ASCII|LATIN\d+)';$/, "a client_encoding other than pg_dump's SET … (psql would read bytes differently)"],
  // set_config can spell any setting (client_encoding from concatenated pieces): only pg_dump's search_path line.
  [/\bset_config\b/i, /^SELECT pg_catalog\.set_config\('search_path', '[^']*', false\);$/, "set_config other than pg_dump's search_path line (it could change settings psql's lexer follows)"],
];

/** Whole-line meta-commands pg_dump writes (appendPsqlMetaConnect, the CVE-2025-8714 keys), by format. */
export const CONNECT_PLAIN = /^\\connect (?:([A-Za-z0-9_.]+)|"([A-Za-z0-9_.]+)")$/;
export const CONNECT_CONNINFO = /^\\connect -reuse-previous=on "((?:[^"]|"")*)"$/;
export const CONNINFO_DBNAME = /^dbname=(?:([A-Za-z0-9_.]+)|'((?:[^'\\]|\\['\\])*)')$/;
/** The dump's own restrict keys: always dropped from what psql receives (the loader sets its own). */
export const RESTRICT = /^\\(?:un)?restrict [A-Za-z0-9]+$/;
/** pg_dump switches psql to SQL_ASCII around a \connect with a conninfo name, then back: encodings psql lexes like UTF8. */
export const ENCODING = /^\\encoding (?:SQL_ASCII|UTF8|LATIN\d+)$/;

export interface DumpPolicy {
  format: PolicyFormat;
  /** Whether `\connect` and `\encoding` may appear (pg_dumpall's database sections); never in one database's dump. */
  connects: boolean;
  /** Unauthenticated dumps (Immich's own): no byte outside ASCII outside COPY data. */
  asciiOnly: boolean;
  /** A refusal reason for a statement, 'copy' when COPY data follows, or undefined when it passes. */
  check(statement: Statement): string | 'copy' | undefined;
}

const preview = (text: string) => JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text);

/** The longest head in `heads` that the statement's first words spell. */
function headOf(words: readonly string[], heads: readonly Head[]): Head | undefined {
  let best: Head | undefined;
  for (const h of heads) {
    const parts = h[0].split(' ');
    if (parts.every((p, i) => words[i] === p) && (!best || parts.length > best[0].split(' ').length)) best = h;
  }
  return best;
}

function policy(format: PolicyFormat, refused: readonly Head[], asciiOnly: boolean): DumpPolicy {
  return {
    format,
    connects: format === 'cluster',
    asciiOnly,
    check({ text, words, wholeLine }) {
      for (const [pattern, why] of SERVER_SIDE) if (pattern.test(text)) return why;
      for (const [mention, allowed, why] of LEXER_SETTINGS) if (mention.test(text) && !allowed.test(text)) return why;
      const head = headOf(words, refused) ?? headOf(words, ALLOWED);
      if (!head) return `a statement pg_dump never writes (${preview(text)})`;
      const rule = head[1];
      if (rule === 'any') return undefined;
      if (typeof rule === 'function') return rule({ text, words, wholeLine });
      if (!Array.isArray(rule)) return rule.refuse;
      if (head[0] === 'copy') return wholeLine && COPY_FROM_STDIN.test(text) ? 'copy' : `a COPY that is not pg_dump's one-line COPY … FROM stdin (${preview(text)})`;
      if (rule.some((form) => form.test(text))) return undefined;
      if (head[0] === 'set') return `a SET pg_dump never writes (${preview(text)}): settings can change how psql reads what follows`;
      return `${head[0] === 'update' ? 'an' : 'a'} ${head[0].toUpperCase()} pg_dump never writes (${preview(text)})`;
    },
  };
}

/** pg_dumpall (our dumps, restore points): every database and role of the cluster. */
export const CLUSTER_POLICY = policy('cluster', REFUSED_ALWAYS, false);
/** pg_dump of one database (Immich's own backups, unauthenticated): that database's objects and data only. */
export const DATABASE_POLICY = policy('database', [...REFUSED_ALWAYS, ...REFUSED_IN_DATABASE], true);

export const policyFor = (format: 'cluster' | 'immich'): DumpPolicy => (format === 'immich' ? DATABASE_POLICY : CLUSTER_POLICY);
