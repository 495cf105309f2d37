import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { countRows, countRowsFromDump } from '../../adapters/postgres/throwaway.js';
import { compareDigests, connectTarget, TableDigester, UnterminatedCopyError } from '../../adapters/postgres/table-digests.js';
import type { TableDigests } from '../../core/reports.js';
import { pgBin, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { useStack } from '../helpers/stack.js';

// The per-table digester against real pg_dumpall output: a live server whose heap order was
// shuffled by updates and deletes, a fresh server loaded from its dump, and the dump's SQL cut
// into chunks of every awkward size.

let sql: Buffer;

const dumpall = async (pg: TestPostgres) => Buffer.from((await execa(join(pgBin, 'pg_dumpall'), ['--clean', '--if-exists'], { env: pg.env, encoding: 'buffer', stripFinalNewline: false })).stdout);
const psqlOf = (pg: TestPostgres) => (database: string, query: string) => execa(join(pgBin, 'psql'), ['-X', '-q', '-A', '-t', '-F', '\t', '-d', database, '-c', query], { env: pg.env }).then((r) => r.stdout);

async function digest(chunks: Iterable<Buffer>, database?: string): Promise<TableDigests> {
  const digester = new TableDigester(database);
  await pipeline(Readable.from(chunks), digester);
  return digester.digests();
}

function* slices(buf: Buffer, size: (i: number) => number): Generator<Buffer> {
  for (let at = 0, i = 0; at < buf.length; i++) {
    const n = Math.max(1, size(i));
    yield buf.subarray(at, at + n);
    at += n;
  }
}

/** The same digests the simple way: the SQL split into lines, each COPY block's lines hashed. */
function reference(text: Buffer, database = ''): TableDigests {
  const out: TableDigests = {};
  let db = database;
  let hash: ReturnType<typeof createHash> | undefined;
  let table = '';
  for (const line of text.toString('latin1').split('\n')) {
    if (hash) {
      if (line === '\\.') {
        out[table] = hash.digest('hex');
        hash = undefined;
      } else hash.update(Buffer.from(`${line}\n`, 'latin1'));
      continue;
    }
    const connect = connectTarget(Buffer.from(line, 'latin1').toString('utf8'));
    if (connect !== undefined) db = connect;
    const copy = /^COPY ((?:[^\s."]+|"[^"]+")\.(?:[^\s."]+|"[^"]+")) .*FROM stdin;$/.exec(line);
    if (copy) {
      table = `${db}: ${Buffer.from(copy[1]!, 'latin1').toString('utf8')}`;
      hash = createHash('sha256');
    }
  }
  return out;
}

const stack = useStack({ temporal: false, postgres: 1200 }, async () => {
  // Heap order no longer follows insertion: updated rows move to the end, deleted ones leave holes
  // that later inserts fill. Plus the shapes a COPY line can take: a quoted name, a table without
  // columns, an empty table, a second database.
  await stack.pg.psql(
    `UPDATE assets SET type = 'IMAGE' WHERE id IN (SELECT id FROM assets ORDER BY id LIMIT 300);
     DELETE FROM asset_faces WHERE "boundingBoxX1" % 5 = 0;
     VACUUM asset_faces;
     INSERT INTO asset_faces SELECT md5('late' || i)::uuid, (SELECT id FROM assets ORDER BY id DESC LIMIT 1), i, i, i, i FROM generate_series(1, 50) i;
     CREATE SCHEMA "Odd Schema";
     CREATE TABLE "Odd Schema"."Mixed Case" (v text, "select" int);
     INSERT INTO "Odd Schema"."Mixed Case" VALUES ('tab\tand\\backslash', 1), (E'new\\nline', 2), ('\\.', 3), (NULL, 4);
     CREATE TABLE public.no_columns ();
     INSERT INTO public.no_columns DEFAULT VALUES;
     CREATE TABLE public.empty (x int);`,
    'immich',
  );
  await stack.pg.psql(`CREATE DATABASE "other db"`);
  await stack.pg.psql(`CREATE TABLE notes (body text); INSERT INTO notes SELECT 'note ' || i FROM generate_series(1, 100) i;`, 'other db');
  sql = await dumpall(stack.pg);
});

describe('TableDigester', () => {
  test('a fresh server loaded from a pg_dumpall re-dumps to the same digest for every table, though the live heap was reordered', async () => {
    const dumped = await digest([sql]);
    // Keyed exactly like the row counts, every table of every database that accepts connections.
    assert.deepEqual(Object.keys(dumped).sort(), Object.keys(await countRows(psqlOf(stack.pg))).sort());
    assert.ok('immich: "Odd Schema"."Mixed Case"' in dumped && 'other db: public.notes' in dumped && 'immich: public.no_columns' in dumped);
    // The premise: pg_dump wrote asset_faces in heap order, which is not insertion (or key) order any more.
    const liveOrder = await stack.pg.psql('SELECT string_agg(id::text, \',\' ORDER BY ctid) FROM asset_faces', 'immich');
    const keyOrder = await stack.pg.psql('SELECT string_agg(id::text, \',\' ORDER BY id) FROM asset_faces', 'immich');
    assert.notEqual(liveOrder, keyOrder);
    const fresh = await startPostgres();
    try {
      await execa(join(pgBin, 'psql'), ['-X', '-q', '-d', 'postgres'], { env: fresh.env, input: sql, reject: false });
      const again = await digest([await dumpall(fresh)]);
      assert.deepEqual(again, dumped);
      assert.deepEqual(compareDigests(dumped, again), []);
    } finally {
      await fresh.stop();
    }
  });

  test('cut into chunks of any size, the SQL digests as a line-by-line reading of it does', async () => {
    const expected = reference(sql);
    assert.ok(Object.keys(expected).length >= 8);
    assert.deepEqual(await digest([sql]), expected);
    for (const size of [1, 2, 3, 4, 5, 7, 4096, 65536]) assert.deepEqual(await digest(slices(sql, () => size)), expected, `chunks of ${size} bytes`);
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 9000;
    assert.deepEqual(await digest(slices(sql, random)), expected, 'chunks of random sizes');
    // The end line split at every offset from the chunk boundary.
    const end = sql.indexOf('\n\\.\n');
    for (let k = 0; k < 5; k++) assert.deepEqual(await digest([sql.subarray(0, end + k), sql.subarray(end + k)]), expected, `split ${k} bytes into the end line`);
  });

  test('its row counts equal count(*) of every table, the SQL cut into chunks of any size (a newline inside a value included)', async () => {
    const counts = async (chunks: Iterable<Buffer>) => {
      const digester = new TableDigester();
      await pipeline(Readable.from(chunks), digester);
      return digester.rowCounts();
    };
    const expected = await countRows(psqlOf(stack.pg));
    assert.equal(expected['immich: "Odd Schema"."Mixed Case"'], 4);
    assert.equal(expected['immich: public.empty'], 0);
    assert.deepEqual(await counts([sql]), expected);
    for (const size of [1, 2, 3, 4, 5, 4096]) assert.deepEqual(await counts(slices(sql, () => size)), expected, `chunks of ${size} bytes`);
    const end = sql.indexOf('\n\\.\n');
    for (let k = 0; k < 5; k++) assert.deepEqual(await counts([sql.subarray(0, end + k), sql.subarray(end + k)]), expected, `split ${k} bytes into the end line`);
    // The drill's counts from its re-dump: the catalog names every table, the dump's lines count them.
    const dumped = await counts([sql]);
    assert.deepEqual(await countRowsFromDump(psqlOf(stack.pg), dumped), expected);
    // A table the dump leaves out (an extension's own): its database is counted with count(*).
    const { 'other db: public.notes': _left, ...withoutNotes } = dumped;
    assert.deepEqual(await countRowsFromDump(psqlOf(stack.pg), withoutNotes), expected);
    // Not trusted blindly: a wrong count in the dump's lines shows as a difference, not as the truth.
    assert.notDeepEqual(await countRowsFromDump(psqlOf(stack.pg), { ...dumped, 'immich: public.empty': 3 }), expected);
    // A table that belongs to an extension (pg_dump leaves its data out, or dumps part of it):
    // its database is counted with count(*), even where the dump's lines claim a count for it.
    await stack.pg.psql('CREATE DATABASE ext_db');
    try {
      await stack.pg.psql('CREATE EXTENSION pg_trgm; CREATE TABLE ext_owned (x int); INSERT INTO ext_owned VALUES (1), (2); ALTER EXTENSION pg_trgm ADD TABLE ext_owned; CREATE TABLE plain (y int); INSERT INTO plain VALUES (1);', 'ext_db');
      const all = await countRows(psqlOf(stack.pg));
      assert.deepEqual([all['ext_db: public.ext_owned'], all['ext_db: public.plain']], [2, 1]);
      const fromDump = await counts([await dumpall(stack.pg)]);
      assert.equal(fromDump['ext_db: public.ext_owned'], undefined, 'pg_dump leaves an extension member table out');
      assert.deepEqual(await countRowsFromDump(psqlOf(stack.pg), { ...fromDump, 'ext_db: public.ext_owned': 0 }), all);
    } finally {
      await stack.pg.psql('DROP DATABASE ext_db');
    }
  });

  test('one value changed in one row of one table changes that table\'s digest and no other', async () => {
    const text = sql.toString('utf8');
    const altered = Buffer.from(text.replace('user3@example.com', 'user3@example.org'), 'utf8');
    assert.equal(altered.length, sql.length);
    assert.deepEqual(compareDigests(await digest([sql]), await digest(slices(altered, () => 1000))), ['immich: public.users']);
    // The order of rows is part of the data: two rows swapped is a difference too.
    const rows = /COPY public\.users [^\n]*\n([^\n]*\n)([^\n]*\n)/.exec(text)!;
    const swapped = Buffer.from(text.replace(rows[1]! + rows[2]!, rows[2]! + rows[1]!), 'utf8');
    assert.deepEqual(compareDigests(await digest([sql]), await digest([swapped])), ['immich: public.users']);
  });

  test('SQL that ends inside a table\'s data is an error naming the table', async () => {
    const cut = sql.subarray(0, sql.indexOf('COPY public.exif') + 2000);
    await assert.rejects(digest([cut]), (err: Error) => err instanceof UnterminatedCopyError && /^the SQL ended inside the data of immich: public\.exif \(no \\\. line\)/.test(err.message));
  });

  test('pg_dump -d DB (no \\connect) keys its tables by the database given; pg_dump\'s \\connect forms are read', async () => {
    const single = Buffer.from((await execa(join(pgBin, 'pg_dump'), ['-d', 'other db'], { env: stack.pg.env, encoding: 'buffer' })).stdout);
    assert.deepEqual(Object.keys(await digest([single], 'other db')), ['other db: public.notes']);
    assert.equal(connectTarget('\\connect immich'), 'immich');
    assert.equal(connectTarget('\\connect IMMICH'), 'immich');
    assert.equal(connectTarget('\\connect -reuse-previous=on "dbname=\'other db\'"'), 'other db');
    assert.equal(connectTarget('\\connect -reuse-previous=on "dbname=\'it\\\'s\'"'), "it's");
    assert.equal(connectTarget('\\connectx immich'), undefined);
  });
});
