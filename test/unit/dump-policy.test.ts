import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLUSTER_POLICY, DATABASE_POLICY, type DumpPolicy } from '../../adapters/postgres/dump-policy.js';
import { restrictFraming } from '../../adapters/postgres/restricted-psql.js';
import { restoreFilter, safetyScanner } from '../../adapters/postgres/sql-stream.js';
import { pgBin } from '../helpers/postgres.js';
import { useStack } from '../helpers/stack.js';

// The policy per dump format, decided at the adapter: what pg_dump of one database (Immich's own
// backups) may hold is much less than pg_dumpall; and the restrict-mode framing the loader wraps
// around every load, run through a real psql against a real PostgreSQL.

const stack = useStack({ postgres: 10 });

const scan = (sql: string, policy: DumpPolicy) => pipeline(Readable.from([Buffer.from(sql)]), safetyScanner('test.sql.gz', policy).sink);

const filtered = async (sql: string, frame = restrictFraming()) => {
  const parts: Buffer[] = [];
  await pipeline(Readable.from([Buffer.from(sql)]), restoreFilter('postgres', 'test.sql.gz', { frame }), async (source: AsyncIterable<Buffer>) => {
    for await (const part of source) parts.push(part);
  });
  return Buffer.concat(parts).toString('utf8');
};

/** What a single-database pg_dump writes that reaches beyond that database, and pg_dumpall legitimately holds. */
const CLUSTER_ONLY = [
  "CREATE ROLE intruder SUPERUSER LOGIN PASSWORD 'x';",
  'ALTER ROLE immich WITH SUPERUSER;',
  'DROP ROLE IF EXISTS intruder;',
  'CREATE USER intruder;',
  'GRANT postgres TO immich;',
  'GRANT pg_read_all_data TO "on";',
  'REVOKE pg_monitor FROM immich;',
  "ALTER DATABASE immich SET search_path TO 'evil';",
  'CREATE EVENT TRIGGER t ON ddl_command_start EXECUTE FUNCTION public.f();',
  'CREATE OR REPLACE TRUSTED PROCEDURAL LANGUAGE plx HANDLER plpgsql_call_handler;',
  "CREATE SERVER s FOREIGN DATA WRAPPER w OPTIONS (host 'x');",
  'CREATE USER MAPPING FOR immich SERVER s;',
  '\\connect postgres',
  '\\encoding UTF8',
];

describe('the policy per dump format', () => {
  test("one database's dump (Immich's own) refuses role DDL, role memberships, ALTER DATABASE, event triggers, languages, foreign servers and \\connect; pg_dumpall's passes them", async () => {
    for (const line of CLUSTER_ONLY) {
      await assert.rejects(scan(`${line}\n`, DATABASE_POLICY), (err: Error) => err.name === 'UnsafeDumpError' && /line 1: /.test(err.message), line);
      await scan(`${line}\n`, CLUSTER_POLICY);
    }
  });

  test('both refuse ALTER SYSTEM, subscriptions, DO, LOAD and the server-file roles', async () => {
    for (const line of ["ALTER SYSTEM SET shared_preload_libraries = 'x';", "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p;", 'ALTER SUBSCRIPTION s ENABLE;', 'DO $$BEGIN END$$;', "LOAD 'x';", 'GRANT pg_execute_server_program TO immich;']) {
      for (const policy of [DATABASE_POLICY, CLUSTER_POLICY]) await assert.rejects(scan(`${line}\n`, policy), /UnsafeDumpError|refusing to restore/, `${policy.format}: ${line}`);
    }
  });

  test("a real pg_dump of one database, grants on objects included, passes the one-database policy", async () => {
    await stack.pg.psql("CREATE ROLE reader; GRANT SELECT ON TABLE public.assets TO reader; GRANT SELECT (id) ON public.users TO reader; COMMENT ON TABLE public.assets IS 'it''s'; ALTER TABLE public.assets OWNER TO postgres;", 'immich');
    try {
      const { stdout } = await execa(`${pgBin}/pg_dump`, ['--clean', '--if-exists', '-d', 'immich'], { env: stack.pg.env });
      assert.match(stdout, /GRANT SELECT ON TABLE public\.assets TO reader;/);
      await scan(stdout, DATABASE_POLICY);
    } finally {
      await stack.pg.psql('REVOKE ALL ON TABLE public.assets FROM reader; REVOKE ALL (id) ON public.users FROM reader; DROP ROLE reader;', 'immich');
    }
  });
});

describe('\\unrestrict, the one command psql still runs in restrict mode', () => {
  test("passes only as pg_dump's own whole line (which the loader drops), or escaped in COPY data (a user's text); anywhere else, literal, comment or dollar quote, it is refused", async () => {
    await scan('\\restrict abc\nSET lock_timeout = 0;\n\\unrestrict abc\n', CLUSTER_POLICY);
    // An album description typed by an Immich user: COPY writes it as \\unrestrict, which psql never reads as the command.
    await scan('COPY public.albums (description) FROM stdin;\nmy \\\\unrestrict `id` album\n\\.\n', DATABASE_POLICY);
    await assert.rejects(scan('COPY public.albums (description) FROM stdin;\n\\unrestrict `id`\n\\.\n', DATABASE_POLICY), /a backslash in COPY data that is not one of COPY's escapes/);
    assert.doesNotMatch(await filtered('\\restrict abc\nSET lock_timeout = 0;\n\\unrestrict abc\n'), /abc/);
    const hidden = [
      "COMMENT ON TABLE public.t IS '\n\\unrestrict `id`\n';",
      "COMMENT ON TABLE public.t IS 'a \\unrestrict b';",
      '/*\n\\unrestrict :k\n*/ SET lock_timeout = 0;',
      'CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$\n\\unrestrict `id`\nSELECT 1$$;',
      '\\unrestrict `id`',
    ];
    for (const sql of hidden) {
      for (const policy of [CLUSTER_POLICY, DATABASE_POLICY]) {
        await assert.rejects(scan(`${sql}\n`, policy), (err: Error) => err.name === 'UnsafeDumpError' && /unrestrict|backquote/.test(err.message), `${policy.format}: ${sql}`);
      }
    }
  });

  test('is why: a restricted psql still expands a backquote in its argument', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'immich-backup-unrestrict-'));
    const marker = join(dir, 'ran');
    await execa(`${pgBin}/psql`, ['-X', '-q', '-d', 'postgres'], { env: stack.pg.env, input: `${restrictFraming().head}\\unrestrict \`touch ${marker}\`\n`, reject: false });
    assert.ok(existsSync(marker), 'psql ran the backquote: the lexer must never let the bytes through');
  });
});

describe("pg_dump's settings pinned after every statement", () => {
  test('a dump whose server-side code switches standard_conforming_strings off mid-load loads as pg_dump wrote it, its planted line as data, even through a psql without restrict mode', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'immich-backup-pin-'));
    const marker = join(dir, 'ran');
    const sql = [
      '\\connect immich',
      "CREATE FUNCTION public.pin_flip(integer) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SET standard_' || 'conforming_strings = off'; RETURN true; END$$;",
      'CREATE TABLE public.pin_t (a integer CHECK (public.pin_flip(a)));',
      'COPY public.pin_t (a) FROM stdin;',
      '1',
      '\\.',
      "COMMENT ON TABLE public.pin_t IS 'x\\';",
      "COMMENT ON COLUMN public.pin_t.a IS '",
      `\\! touch ${marker}`,
      "';",
      '',
    ].join('\n');
    const load = async (pin: boolean) => {
      const parts: Buffer[] = [];
      await pipeline(Readable.from([Buffer.from(sql)]), restoreFilter('postgres', 'test.sql.gz', { pin }), async (source: AsyncIterable<Buffer>) => {
        for await (const part of source) parts.push(part);
      });
      return execa(`${pgBin}/psql`, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres'], { env: stack.pg.env, input: Buffer.concat(parts), reject: false });
    };
    try {
      await load(false);
      assert.ok(existsSync(marker), 'without the pins, the construction makes an unrestricted psql run \\!');
      await stack.pg.psql('DROP TABLE public.pin_t; DROP FUNCTION public.pin_flip(integer);', 'immich');
      await rm(marker);
      const pinned = await load(true);
      assert.equal(pinned.exitCode, 0, pinned.stderr);
      assert.ok(!existsSync(marker), 'with them, nothing ran');
      // (the helper trims the value's leading newline)
      assert.equal(await stack.pg.psql("SELECT col_description('public.pin_t'::regclass, 1)", 'immich'), `\\! touch ${marker}`, 'the planted line is data, as pg_dump wrote it');
    } finally {
      await stack.pg.psql('DROP TABLE IF EXISTS public.pin_t; DROP FUNCTION IF EXISTS public.pin_flip(integer);', 'immich');
    }
  });

  test('the pins follow the client_encoding the dump set, start each new session, and never land inside a statement or COPY data', async () => {
    const parts: Buffer[] = [];
    const sql = "SET client_encoding = 'LATIN1';\nCREATE TABLE public.t (a text,\n b text);\nCOPY public.t (a, b) FROM stdin;\nx\ty\n\\.\n\\connect immich\nSET lock_timeout = 0;\n";
    await pipeline(Readable.from([Buffer.from(sql)]), restoreFilter('postgres', 'test.sql.gz', { pin: true }), async (source: AsyncIterable<Buffer>) => {
      for await (const part of source) parts.push(part);
    });
    const scs = 'SET standard_conforming_strings = on;\n';
    const pin = `${scs}SET client_encoding = 'LATIN1';\n`;
    assert.equal(
      Buffer.concat(parts).toString('utf8'),
      `SET client_encoding = 'LATIN1';\n${pin}CREATE TABLE public.t (a text,\n b text);\n${pin}COPY public.t (a, b) FROM stdin;\nx\ty\n\\.\n${pin}\\connect immich\n${scs}SET lock_timeout = 0;\n${scs}`,
    );
  });
});

describe('where psql and this lexer could read a line differently', () => {
  test("a statement shares its line with nothing but a comment: psql reads the rest of a line with the settings it had when the line began, before any pin", async () => {
    await scan('SET lock_timeout = 0; -- a comment\nSET statement_timeout = 0;   \n', DATABASE_POLICY);
    const bypass = [
      "INSERT INTO public.t VALUES (1); COMMENT ON TABLE public.t IS\n'y\\''; CREATE ROLE planted SUPERUSER LOGIN; --';\n",
      'INSERT INTO public.t VALUES (1); /*\n*/\n',
      'SET lock_timeout = 0;SET statement_timeout = 0;\n',
    ];
    for (const sql of bypass) {
      for (const policy of [CLUSTER_POLICY, DATABASE_POLICY]) await assert.rejects(scan(sql, policy), /line 1: more after a statement's `;` on its line/, sql);
    }
  });

  test('a number runs into no word (psql 14 reads `1end` as a number and END, psql 15 and this lexer as one token); exponents pass', async () => {
    await scan('CREATE TABLE public.t (x double precision CHECK (x < 1e+10 AND x > 1.5e-3 AND x <> .5 AND x <> 2E7));\n', CLUSTER_POLICY);
    for (const sql of ['CREATE FUNCTION public.f() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT 1end; END;\n', 'CREATE TABLE public.t (x integer DEFAULT 1begin);\n', 'CREATE TABLE public.t (x integer DEFAULT 1_000);\n']) {
      await assert.rejects(scan(sql, CLUSTER_POLICY), /a number run into a word/, sql);
    }
  });
});

describe('the restrict-mode framing', () => {
  test("psql's first line is the loader's \\restrict; the dump's own keys are dropped; each allowed \\connect is lifted alone, under a fresh key", async () => {
    const out = await filtered('\\restrict dumpkey\nSET statement_timeout = 0;\n\\unrestrict dumpkey\n\\connect immich\n\\restrict dumpkey2\nSET lock_timeout = 0;\n');
    const lines = out.split('\n');
    const keys = lines.filter((l) => /^\\(un)?restrict /.test(l)).map((l) => l.split(' ')[1]);
    assert.doesNotMatch(out, /dumpkey/, "the dump's own keys never reach psql");
    assert.match(lines[0]!, /^\\restrict [0-9a-f]{48}$/);
    assert.deepEqual(lines.slice(2, 5).map((l) => l.split(' ')[0]), ['\\unrestrict', '\\connect', '\\restrict']);
    assert.equal(keys[0], keys[1], 'the loader lifts its own key');
    assert.notEqual(keys[1], keys[2], 'and sets a new one right after the \\connect');
    assert.equal(new Set([...keys]).size, 2);
  });

  test('through a real psql: a framed load connects where the dump says and refuses any meta-command the lexer would have counted as string content', async () => {
    const psql = (input: string) => execa(`${pgBin}/psql`, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres'], { env: stack.pg.env, input, reject: false });
    const ok = await psql(await filtered('\\connect immich\nSELECT pg_catalog.set_config(\'search_path\', \'\', false);\n'));
    assert.equal(ok.exitCode, 0, ok.stderr);
    // What a desynchronised psql would see: a meta-command outside any literal. The framing's restriction refuses it.
    const frame = restrictFraming();
    const refused = await psql(`${frame.head}SELECT 1;\n\\! echo ran\n`);
    assert.equal(refused.exitCode, 3);
    assert.match(refused.stderr, /backslash commands are restricted/);
    assert.doesNotMatch(refused.stdout, /ran/);
  });
});
