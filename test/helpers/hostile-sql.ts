import { chmodSync, existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Hostile dump text, each snippet proven to do harm through a real `psql -X -v ON_ERROR_STOP=1`
// (test/faults/hostile-sql.test.ts) and refused by the restore filter. Other tests push the same
// dumps through the restore and drill workflows: hostileDump() wraps a snippet into a complete,
// otherwise-valid pg_dumpall-like dump.

/** Where a snippet leaves its evidence. */
export interface HostileContext {
  /** A directory the test PostgreSQL server's OS user (and psql) can write: markers go here. */
  markerDir: string;
  /** A local TCP listener that records connections (a fake PostgreSQL server). */
  fakeServerPort: number;
  /** True once something connected to the fake server. */
  fakeServerConnected(): boolean;
  /** Runs SQL as the superuser on the test server, returns psql's unaligned output. */
  query(sql: string): Promise<string>;
}

export interface HostileSnippet {
  name: string;
  /** Dump text (no trailing newline needed) for this context. */
  sql(ctx: HostileContext): string;
  /** The snippet's line (1-based) at which the filter must refuse. */
  line: number;
  /** True when the attack worked. */
  ran(ctx: HostileContext): Promise<boolean>;
  /** Puts back server state the attack changed. */
  undo?(ctx: HostileContext): Promise<void>;
}

const marker = (ctx: HostileContext, name: string) => join(ctx.markerDir, name);
const touched = (name: string) => async (ctx: HostileContext) => existsSync(marker(ctx, name));

/** A table the snippets COPY into; created by hostileDump's header. */
export const HOSTILE_TABLE = 'public.hostile_notes';

export const HOSTILE_SNIPPETS: HostileSnippet[] = [
  {
    name: 'a \\! shell escape',
    sql: (ctx) => `\\! touch ${marker(ctx, 'shell')}`,
    line: 1,
    ran: touched('shell'),
  },
  {
    name: 'a \\! shell escape after SQL on the same line',
    sql: (ctx) => `SELECT 1; \\! touch ${marker(ctx, 'shell-after-sql')}`,
    line: 1,
    ran: touched('shell-after-sql'),
  },
  {
    name: '\\o |cmd after leading spaces',
    sql: (ctx) => `   \\o |touch ${marker(ctx, 'o-spaces')}\n\\o`,
    line: 1,
    ran: touched('o-spaces'),
  },
  {
    name: '\\o |cmd after SQL on the same line',
    sql: (ctx) => `SELECT 1; \\o |touch ${marker(ctx, 'o-after-sql')}\n\\o`,
    line: 1,
    ran: touched('o-after-sql'),
  },
  {
    name: '\\o |cmd after a bare CR',
    sql: (ctx) => `SELECT 1;\r\\o |touch ${marker(ctx, 'o-after-cr')}\n\\o`,
    line: 1,
    ran: touched('o-after-cr'),
  },
  {
    name: '\\g |cmd mid-line',
    sql: (ctx) => `SELECT 1 \\g |touch ${marker(ctx, 'g-pipe')}`,
    line: 1,
    ran: touched('g-pipe'),
  },
  {
    name: 'backquotes in an allowed \\connect',
    sql: (ctx) => `\\connect \`touch ${marker(ctx, 'connect-backquote')}; echo postgres\``,
    line: 1,
    ran: touched('connect-backquote'),
  },
  {
    name: 'backquotes in an allowed \\restrict',
    sql: (ctx) => `\\restrict \`touch ${marker(ctx, 'restrict-backquote')}; echo abc\`\n\\unrestrict abc`,
    line: 1,
    ran: touched('restrict-backquote'),
  },
  {
    name: 'a \\connect with host= and port= (a conninfo string to another server)',
    sql: (ctx) => `\\connect -reuse-previous=on "dbname='postgres' host=127.0.0.1 port=${ctx.fakeServerPort}"`,
    line: 1,
    ran: async (ctx) => ctx.fakeServerConnected(),
  },
  {
    name: 'a fake COPY … FROM stdin inside a string literal, then \\!',
    sql: (ctx) => `COMMENT ON TABLE ${HOSTILE_TABLE} IS '\nCOPY ${HOSTILE_TABLE} (note) FROM stdin;\n';\n\\! touch ${marker(ctx, 'fake-copy-literal')}\n\\.`,
    line: 4,
    ran: touched('fake-copy-literal'),
  },
  {
    name: 'a fake COPY … FROM stdin inside a comment, then \\!',
    sql: (ctx) => `/*\nCOPY ${HOSTILE_TABLE} (note) FROM stdin;\n*/\n\\! touch ${marker(ctx, 'fake-copy-comment')}\n\\.`,
    line: 4,
    ran: touched('fake-copy-comment'),
  },
  {
    name: 'CRLF framing: psql ends COPY at \\.\\r\\n and runs the next line',
    sql: (ctx) => `COPY ${HOSTILE_TABLE} (note) FROM stdin;\nhello\r\n\\.\r\n\\! touch ${marker(ctx, 'crlf-copy')}\n\\.`,
    line: 2,
    ran: touched('crlf-copy'),
  },
  {
    name: 'COPY … TO on one line, PROGRAM on the next',
    sql: (ctx) => `COPY (SELECT 1) TO\nPROGRAM 'touch ${marker(ctx, 'copy-program-newline')}';`,
    line: 1,
    ran: touched('copy-program-newline'),
  },
  {
    name: 'a comment before COPY … TO PROGRAM',
    sql: (ctx) => `/* data */ COPY (SELECT 1) TO PROGRAM 'touch ${marker(ctx, 'copy-program-comment')}';`,
    line: 1,
    ran: touched('copy-program-comment'),
  },
  {
    name: "DO $$ … EXECUTE 'COPY … TO PROGRAM' $$",
    sql: (ctx) => `DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch ${marker(ctx, 'do-copy-program')}'''; END $$;`,
    line: 1,
    ran: touched('do-copy-program'),
  },
  {
    name: 'a DO block writing a server file',
    sql: (ctx) => `DO $$ BEGIN EXECUTE format('COPY (SELECT 1) TO %L', '${marker(ctx, 'do-file')}'); END $$;`,
    line: 1,
    ran: touched('do-file'),
  },
  {
    name: 'COPY … TO a server file',
    sql: (ctx) => `COPY (SELECT 1) TO '${marker(ctx, 'copy-to-file')}';`,
    line: 1,
    ran: touched('copy-to-file'),
  },
  {
    name: 'lo_export writing a server file',
    sql: (ctx) => `SELECT lo_from_bytea(4242, 'x');\nSELECT lo_export(4242, '${marker(ctx, 'lo-export')}');`,
    line: 1,
    ran: touched('lo-export'),
    undo: async (ctx) => void (await ctx.query('SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = 4242')),
  },
  {
    name: 'ALTER SYSTEM',
    sql: () => "ALTER SYSTEM SET work_mem = '7777kB';",
    line: 1,
    ran: async (ctx) => (await ctx.query("SELECT count(*) FROM pg_file_settings WHERE name = 'work_mem' AND setting = '7777kB'")) !== '0',
    undo: async (ctx) => void (await ctx.query('ALTER SYSTEM RESET work_mem')),
  },
  {
    name: "pg_read_file('/etc/passwd') into a table",
    sql: () => "CREATE TABLE public.hostile_loot AS SELECT pg_read_file('/etc/passwd') AS loot;",
    line: 1,
    ran: async (ctx) => (await ctx.query("SELECT count(*) FROM pg_tables WHERE tablename = 'hostile_loot'")) !== '0',
    undo: async (ctx) => void (await ctx.query('DROP TABLE IF EXISTS public.hostile_loot')),
  },
  {
    // In SJIS, 0x81 0x5C is one character: psql does not see the backslash, closes the string early and runs \!.
    name: "SET NAMES 'SJIS', then a character whose second byte is a backslash hides \\! inside a string",
    sql: (ctx) => `SET NAMES 'SJIS';\nSET application_name = E'\x81\\' ; \\! touch ${marker(ctx, 'sjis')}\n';\nSET NAMES 'UTF8';`,
    line: 1,
    ran: touched('sjis'),
  },
  {
    name: 'standard_conforming_strings off spelled with U& escapes, so a quote hides \\! from a lexer that assumes on',
    sql: (ctx) => `SET U&"standard\\005fconforming_strings" = off;\nSET application_name = 'a\\' ' ; \\! touch ${marker(ctx, 'uescape')}\n';\nSET standard_conforming_strings = on;`,
    line: 1,
    ran: touched('uescape'),
  },
  {
    name: "set_config('client_'||'encoding', 'SJIS') inside INSERT … SELECT, then a hidden backslash",
    sql: (ctx) => `INSERT INTO ${HOSTILE_TABLE} SELECT set_config('client_'||'encoding', 'SJIS', false);\nSET application_name = E'\x81\\' ; \\! touch ${marker(ctx, 'set-config-pieces')}\n';\nSET NAMES 'UTF8';`,
    line: 1,
    ran: touched('set-config-pieces'),
  },
  {
    name: 'standard_conforming_strings off, so a quote hides \\o |cmd from a lexer that assumes on',
    sql: (ctx) => `SET standard_conforming_strings = off;\nSELECT 'a\\'' ; \\o |touch ${marker(ctx, 'scs-off')}\n\\o\nSELECT 1; --'`,
    line: 1,
    ran: touched('scs-off'),
  },
];

/** Lines hostileDump() writes before the snippet: its first line is line HOSTILE_FIRST_LINE. */
const HEADER = [
  '--',
  '-- PostgreSQL database cluster dump',
  '--',
  '',
  'SET default_transaction_read_only = off;',
  '',
  "SET client_encoding = 'UTF8';",
  'SET standard_conforming_strings = on;',
  '',
  '\\connect postgres',
  '',
  'SET statement_timeout = 0;',
  "SELECT pg_catalog.set_config('search_path', '', false);",
  `DROP TABLE IF EXISTS ${HOSTILE_TABLE};`,
  `CREATE TABLE ${HOSTILE_TABLE} (note text);`,
];
export const HOSTILE_FIRST_LINE = HEADER.length + 1;

/** A complete pg_dumpall-like dump around `sql`: header, \connect, the completion marker at the end. */
export function hostileDump(sql: string): string {
  return [...HEADER, sql, '', '--', '-- PostgreSQL database cluster dump complete', '--', ''].join('\n');
}

/** A marker directory the server's OS user can write, and a fake server that records connections. */
export async function hostileContext(query: HostileContext['query']): Promise<HostileContext & { close(): Promise<void> }> {
  const markerDir = await mkdtemp(join(tmpdir(), 'immich-backup-hostile-'));
  chmodSync(markerDir, 0o777); // the test server runs as the postgres user when the tests run as root
  let connected = false;
  const server = createServer((socket) => {
    connected = true;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    markerDir,
    fakeServerPort: (server.address() as { port: number }).port,
    fakeServerConnected: () => connected,
    query,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
