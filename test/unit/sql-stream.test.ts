import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { restoreFilter, safetyScanner } from '../../activities/sql-stream.js';

const scan = async (sql: string, chunk = 7) => {
  const s = safetyScanner('test.sql.gz');
  const parts = Array.from({ length: Math.ceil(sql.length / chunk) }, (_, i) => Buffer.from(sql.slice(i * chunk, (i + 1) * chunk)));
  await pipeline(Readable.from(parts), s.sink);
  return s;
};

describe('the restore safety scan', () => {
  test('passes a pg_dumpall dump whose COPY data holds backslashes, even \\\\!', async () => {
    const sql = "\\restrict abc\n\\connect immich\nCOPY public.exif (raw) FROM stdin;\n{\"Note\": \"a\\\\! b\"}\n\\!not a command inside data\n\\.\n-- PostgreSQL database cluster dump complete\n";
    const s = await scan(sql);
    assert.match(s.tail(), /dump complete/);
    assert.equal(s.sqlBytes(), Buffer.byteLength(sql));
  });

  for (const [what, line] of [
    ['a shell escape', '\\! rm -rf /'],
    ['a shell escape after SQL on the same line', 'SELECT 1; \\! id'],
    ['COPY … PROGRAM', "COPY users FROM PROGRAM 'id';"],
    ['\\copy', "\\copy users from program 'id'"],
    ['output to a pipe', '\\o | sh'],
    ['an include', '\\i /etc/passwd'],
  ] as const) {
    test(`refuses ${what}, naming the line`, async () => {
      await assert.rejects(scan(`SET x = 1;\n${line}\n`), (err: Error) => {
        assert.equal(err.name, 'UnsafeDumpError');
        assert.match(err.message, /^dump test\.sql\.gz line 2: .*; refusing to restore it \(nothing was changed\)$/);
        return true;
      });
    });
  }
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
      'COPY t (a) FROM stdin;',
      'DROP ROLE IF EXISTS postgres;',
      '\\.',
      '',
    ].join('\n');
    let out = '';
    await pipeline(Readable.from([Buffer.from(sql.slice(0, 50)), Buffer.from(sql.slice(50))]), restoreFilter('postgres'), async (source: AsyncIterable<Buffer | string>) => {
      for await (const chunk of source) out += chunk.toString();
    });
    assert.equal(
      out,
      [
        'DROP ROLE IF EXISTS immich;',
        'CREATE ROLE immich;',
        'ALTER ROLE postgres WITH SUPERUSER;',
        "SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);",
        'COPY t (a) FROM stdin;',
        'DROP ROLE IF EXISTS postgres;',
        '\\.',
        '',
      ].join('\n'),
    );
  });
});
