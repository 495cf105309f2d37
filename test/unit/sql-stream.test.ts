import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { DumpFilter, restoreFilter, safetyScanner } from '../../adapters/postgres/sql-stream.js';
import { CLUSTER_POLICY, DATABASE_POLICY } from '../../adapters/postgres/dump-policy.js';
import { HOSTILE_FIRST_LINE, HOSTILE_SNIPPETS, hostileDump, type HostileContext } from '../helpers/hostile-sql.js';
import { pgBin } from '../helpers/postgres.js';
import { useStack } from '../helpers/stack.js';

const chunks = (sql: string | Buffer, size: number) => {
  const buf = Buffer.from(sql);
  return Array.from({ length: Math.ceil(buf.length / size) }, (_, i) => buf.subarray(i * size, (i + 1) * size));
};

const scan = async (sql: string | Buffer, chunk = 7) => {
  const s = safetyScanner('test.sql.gz');
  await pipeline(Readable.from(chunks(sql, chunk)), s.sink);
  return s;
};

const filtered = async (sql: string | Buffer, role = 'postgres', chunk = 50) => {
  const parts: Buffer[] = [];
  await pipeline(Readable.from(chunks(sql, chunk)), restoreFilter(role, 'test.sql.gz'), async (source: AsyncIterable<Buffer>) => {
    for await (const part of source) parts.push(part);
  });
  return Buffer.concat(parts);
};

const refusedAt = (line: number) => (err: Error) => {
  assert.equal(err.name, 'UnsafeDumpError');
  assert.match(err.message, new RegExp(`^dump test\\.sql\\.gz line ${line}: .*; refusing to restore it \\(nothing was changed\\)$`));
  return true;
};

describe('the restore safety scan', () => {
  test('passes a pg_dumpall dump whose COPY data holds backslashes, even \\\\!', async () => {
    const sql = "\\restrict abc\n\\connect immich\nCOPY public.exif (raw) FROM stdin;\n{\"Note\": \"a\\\\! b\"}\n\\\\!an escaped backslash in data\\tand a tab\\N\n\\.\n\\unrestrict abc\n-- PostgreSQL database cluster dump complete\n";
    const s = await scan(sql);
    assert.match(s.tail(), /dump complete/);
    assert.equal(s.sqlBytes(), Buffer.byteLength(sql));
    assert.deepEqual(s.databases(), ['immich']);
  });

  test('reads quotes, E-strings, dollar quotes, nested comments and BEGIN ATOMIC bodies as psql does', async () => {
    const sql = [
      "COMMENT ON TABLE public.t IS 'a \\! b '' \\o |x';",
      "INSERT INTO public.t VALUES (E'it\\'s \\\\ \\! x', 'multi",
      '\\! still inside the literal',
      "line');",
      'CREATE FUNCTION public.f() RETURNS text LANGUAGE plpgsql AS $_$ BEGIN RETURN $x$ \\o |y $x$; END $_$;',
      '/* outer /* inner \\! */ still a comment; */ CREATE TABLE public.u (a "we""ird;" text);',
      'CREATE FUNCTION public.g(a integer) RETURNS integer',
      '    LANGUAGE sql',
      '    BEGIN ATOMIC',
      ' SELECT (a + 1);',
      'END;',
      "SELECT pg_catalog.setval('public.s', 42, true);",
      '',
    ].join('\n');
    for (const size of [1, 3, 7, 4096]) await scan(sql, size);
  });

  test('reads \\connect names as psql does: folded, quoted, and pg_dump\'s conninfo form; template1 left out', async () => {
    const s = await scan('\\connect template1\n\\connect Immich\n\\connect "Photos"\n\\connect -reuse-previous=on "dbname=\'my db\\\'s ""x""\'"\n');
    assert.deepEqual(s.databases(), ['Photos', 'immich', 'my db\'s "x"']);
  });

  for (const [what, sql, line] of [
    ['a shell escape', 'SET statement_timeout = 0;\n\\! rm -rf /\n', 2],
    ['a shell escape after SQL on the same line', 'SET statement_timeout = 0;\nSELECT 1; \\! id\n', 2],
    ['COPY … PROGRAM', "SET statement_timeout = 0;\nCOPY users FROM PROGRAM 'id';\n", 2],
    ['\\copy', "SET statement_timeout = 0;\n\\copy users from program 'id'\n", 2],
    ['output to a pipe', 'SET statement_timeout = 0;\n\\o | sh\n', 2],
    ['an include', 'SET statement_timeout = 0;\n\\i /etc/passwd\n', 2],
    ['\\set', 'SET statement_timeout = 0;\n\\set ON_ERROR_STOP 0\n', 2],
    ['a meta-command inside a statement', 'CREATE TABLE public.t (\n\\connect immich\n);\n', 2],
    ['a psql variable', 'SET statement_timeout = 0;\nCREATE TABLE public.t (a int DEFAULT :foo);\n', 2],
    ['a \\connect to another port', '\\connect "dbname=immich port=5433"\n', 1],
    ['a \\connect with a host in pg_dump\'s conninfo form', '\\connect -reuse-previous=on "dbname=\'x\' host=evil"\n', 1],
    ['a \\connect whose name is a connection string', '\\connect -reuse-previous=on "dbname=\'host=evil dbname=x\'"\n', 1],
    ['a \\restrict key that is not alphanumeric', '\\restrict a;b\n', 1],
    ['a bare CR between statements', 'SET statement_timeout = 0;\rSET y = 2;\n', 1],
    ['a CR in a -- comment', '-- hello\r\nSET statement_timeout = 0;\n', 1],
    ['a NUL byte', 'SET statement_timeout = 0;\nSELECT 1\0;\n', 2],
    ['standard_conforming_strings off', 'SET standard_conforming_strings = off;\n', 1],
    ['standard_conforming_strings by set_config', "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);\n", 1],
    ['standard_conforming_strings set for a database', 'ALTER DATABASE immich SET standard_conforming_strings TO off;\n', 1],
    ['a client encoding psql reads differently', "SET client_encoding = 'SJIS';\n", 1],
    ['a SELECT pg_dump never writes', "SELECT pg_catalog.setval('public.s', 1, true), pg_sleep(1);\n", 1],
    ['LOAD', "LOAD 'auto_explain';\n", 1],
    ['ANALYZE', 'ANALYZE;\n', 1],
    ['an untrusted language', "CREATE FUNCTION public.f() RETURNS int LANGUAGE plpython3u AS 'return 1';\n", 1],
    ['a C function', "CREATE FUNCTION public.f() RETURNS int AS '/tmp/x.so', 'f' LANGUAGE c;\n", 1],
    ['a library preload setting', "ALTER ROLE immich SET session_preload_libraries = 'x';\n", 1],
    ['CREATE SUBSCRIPTION', "CREATE SUBSCRIPTION s CONNECTION 'host=evil' PUBLICATION p;\n", 1],
    ['a COPY with more on its line', 'COPY public.t (a) FROM stdin; SELECT 1;\n\\.\n', 1],
    ['a COPY split over lines', 'COPY public.t (a)\nFROM stdin;\n\\.\n', 1],
    ['a COPY from a file', "COPY public.t (a) FROM '/etc/passwd';\n", 1],
    ['a dump that ends inside COPY data', 'COPY public.t (a) FROM stdin;\n1\n', 2],
    ['a dump that ends inside a literal', "COMMENT ON TABLE public.t IS 'x\n", 1],
    ['a number run into a quote', "CREATE TABLE public.t (a int DEFAULT 1e'\\'' );\n", 1],
    ['SET NAMES (a client encoding psql follows)', "SET NAMES 'SJIS';\n", 1],
    ['a SET pg_dump never writes', "SET application_name = 'x';\n", 1],
    ['a U& identifier spelling a setting', 'SET U&"standard\\005fconforming_strings" = off;\n', 1],
    ['set_config with a name built from pieces, inside INSERT … SELECT', "INSERT INTO public.t SELECT set_config('client_'||'encoding', 'SJIS', false);\n", 1],
    ['a backslash in COPY data that is not one of COPY\'s escapes', 'COPY public.t (a) FROM stdin;\n\\! id\n\\.\n', 2],
    ['a COPY after a ; psql keeps inside a BEGIN ATOMIC body', "CREATE FUNCTION begin() RETURNS int LANGUAGE sql AS 'select 1';\nCOPY public.t (a) FROM stdin;\nend;\n", 2],
  ] as const) {
    test(`refuses ${what}, naming the line`, async () => {
      await assert.rejects(scan(sql), refusedAt(line));
      await assert.rejects(filtered(sql), refusedAt(line));
    });
  }

  test('refuses every snippet of the hostile corpus at its line', async () => {
    const ctx: HostileContext = { markerDir: '/nonexistent', fakeServerPort: 9, fakeServerConnected: () => false, query: async () => '' };
    for (const snippet of HOSTILE_SNIPPETS) {
      await assert.rejects(scan(hostileDump(snippet.sql(ctx))), refusedAt(HOSTILE_FIRST_LINE + snippet.line - 1), snippet.name);
    }
  });
});

describe('unauthenticated dumps (Immich\'s own)', () => {
  test('no byte outside ASCII outside COPY data: a client-encoding switch on the server could make psql read it differently', async () => {
    const comment = "COMMENT ON TABLE public.t IS 'café';\n";
    const data = 'COPY public.t (a) FROM stdin;\ncafé\n\\.\n';
    const run = (sql: string, asciiOnly: boolean) => pipeline(Readable.from([Buffer.from(sql)]), safetyScanner('test.sql.gz', asciiOnly ? DATABASE_POLICY : CLUSTER_POLICY).sink);
    await run(comment, false);
    await assert.rejects(run(comment, true), refusedAt(1));
    await run(data, true);
  });
});

describe('the restore filter', () => {
  test('leaves out the restoring role\'s own DROP/CREATE ROLE and fixes the search_path, nothing else', async () => {
    const sql = [
      'DROP ROLE IF EXISTS immich;',
      'DROP ROLE IF EXISTS postgres;',
      'CREATE ROLE immich;',
      'CREATE ROLE postgres;',
      'ALTER ROLE postgres WITH SUPERUSER;',
      "SELECT pg_catalog.set_config('search_path', '', false);",
      'COPY public.t (a) FROM stdin;',
      'DROP ROLE IF EXISTS postgres;',
      '\\.',
      '',
    ].join('\n');
    assert.equal(
      (await filtered(sql)).toString(),
      [
        'DROP ROLE IF EXISTS immich;',
        'CREATE ROLE immich;',
        'ALTER ROLE postgres WITH SUPERUSER;',
        "SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);",
        'COPY public.t (a) FROM stdin;',
        'DROP ROLE IF EXISTS postgres;',
        '\\.',
        '',
      ].join('\n'),
    );
  });

  test('holds back an open statement, so a refusal leaves psql nothing to run at end of input', () => {
    const filter = new DumpFilter('test.sql.gz', { restoringRole: 'postgres' });
    const out = filter.push(Buffer.from("SET statement_timeout = 0;\nCREATE TABLE public.loot AS\nSELECT pg_catalog.pg_read_file('/etc/passwd')"));
    assert.equal(Buffer.concat(out).toString(), 'SET statement_timeout = 0;\n');
    assert.throws(() => filter.push(Buffer.from(';\n')), refusedAt(2));
  });
});

// Awkward data a real server dumps: every quoting and framing case the filter must pass untouched.
const AWKWARD = String.raw`
CREATE TABLE captions (id int PRIMARY KEY, caption text, raw bytea);
INSERT INTO captions VALUES
  (1, E'back\\slash \\. and \\! and quote '' and "dq"', '\x5c2e0a'),
  (2, E'tab\there\nnewline\r\ncrlf and a bare\rCR', NULL),
  (3, E'\\.', NULL),
  (4, E'line1\n\\.\nline3\n\\.\r\nline5', NULL),
  (5, 'ünïcødé 🚀 日本語', NULL),
  (6, '$$ dollar $tag$ $1 :var :''x''', NULL),
  (7, '-- not a comment; /* nor this */ \o |x', NULL);
CREATE FUNCTION awk(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN t || ';' || $q$'quoted' \! $q$; END $$;
CREATE FUNCTION atomic_add(a integer) RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT a + 1; SELECT a + 2; END;
COMMENT ON TABLE captions IS E'semi; colon '' quote "dq" \\ backslash\nsecond line \\! no';
COMMENT ON FUNCTION awk(text) IS '$$ not a dollar quote';
CREATE VIEW v_captions AS SELECT id, upper(caption) AS c FROM captions WHERE caption <> ';' AND caption NOT LIKE '%\%';
CREATE SEQUENCE s START 42;
SELECT nextval('s');
CREATE TABLE "Weird ""Name""" ("col;umn" text, "copy" text);
INSERT INTO "Weird ""Name""" VALUES ('a;b', E'c\\d');
CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM captions;
SELECT lo_from_bytea(0, '\x00010203'::bytea);
`;

describe('real pg_dumpall and pg_dump output', () => {
  const stack = useStack({ temporal: false, postgres: 200 }, async () => {
    await stack.pg.psql('CREATE DATABASE awkward;');
    await stack.pg.psql(`CREATE DATABASE "Awk ward's";`);
    await stack.pg.psql(AWKWARD, 'awkward');
    await stack.pg.psql(AWKWARD, "Awk ward's");
  });

  const dump = async (tool: string, args: string[]) => Buffer.from((await execa(join(pgBin, tool), args, { env: stack.pg.env, encoding: 'buffer', stripFinalNewline: false })).stdout);
  const SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);\n";
  const FIXED = "SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);\n";
  const rewritten = (sql: Buffer) => Buffer.from(sql.toString('latin1').split(SEARCH_PATH).join(FIXED), 'latin1');

  for (const [name, tool, args, databases] of [
    ['pg_dumpall', 'pg_dumpall', [], ['Awk ward\'s', 'awkward', 'immich', 'postgres']],
    ['pg_dumpall --clean --if-exists', 'pg_dumpall', ['--clean', '--if-exists'], ['Awk ward\'s', 'awkward', 'immich', 'postgres']],
    ['pg_dump --create', 'pg_dump', ['--create', '-d', 'awkward'], ['awkward']],
    ['pg_dump --create of a name that needs a conninfo \\connect', 'pg_dump', ['--create', '--clean', '-d', "Awk ward's"], ["Awk ward's"]],
    ['pg_dump --inserts', 'pg_dump', ['--inserts', '-d', 'awkward'], []],
  ] as const) {
    test(`passes ${name} byte for byte apart from the rewrites`, async () => {
      const sql = await dump(tool, [...args]);
      const s = await scan(sql, 65536);
      assert.deepEqual(s.databases(), [...databases]);
      assert.ok((await filtered(sql, 'nobody', 65536)).equals(rewritten(sql)));
      assert.ok((await filtered(sql, 'nobody', 13)).equals(rewritten(sql)));
    });
  }

  test('a pg_dump through the filter loads into psql with every awkward value intact', async () => {
    const sql = await dump('pg_dump', ['-d', 'awkward']);
    await stack.pg.psql('CREATE DATABASE awkward_copy;');
    const psql = execa(join(pgBin, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'awkward_copy'], { env: stack.pg.env, stdin: 'pipe' });
    await Promise.all([pipeline(Readable.from(chunks(sql, 4096)), restoreFilter('nobody', 'awkward.sql'), psql.stdin!), psql]);
    const digest = "SELECT md5(string_agg(id || caption || coalesce(encode(raw, 'hex'), ''), '|' ORDER BY id)) || awk('x') || atomic_add(1) || (SELECT n FROM mv) || last_value FROM captions, s GROUP BY last_value";
    assert.equal(await stack.pg.psql(digest, 'awkward_copy'), await stack.pg.psql(digest, 'awkward'));
  });
});
