import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { DumpFilter, restoreFilter } from '../../adapters/postgres/sql-stream.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { HOSTILE_FIRST_LINE, HOSTILE_SNIPPETS, hostileContext, hostileDump } from '../helpers/hostile-sql.js';
import { pgBin } from '../helpers/postgres.js';
import { useStack } from '../helpers/stack.js';

// Each hostile snippet first proves it does harm through a raw `psql -X -v ON_ERROR_STOP=1` (so
// this test would fail if its payload were harmless), then that the filter refuses it, naming
// the line, and that nothing ran when the dump goes through the filter into psql.

const stack = useStack({ temporal: false, postgres: true });

const psqlArgs = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres'];
const context = () => hostileContext((sql) => stack.pg.psql(sql));

describe('faults: hostile SQL in a dump', () => {
  for (const snippet of HOSTILE_SNIPPETS) {
    test(`${snippet.name}: works through raw psql, refused by the filter`, async () => {
      const raw = await context();
      try {
        await execa(join(pgBin, 'psql'), psqlArgs, { env: stack.pg.env, input: hostileDump(snippet.sql(raw)), reject: false });
        assert.ok(await snippet.ran(raw), 'the payload did nothing through raw psql: the test would prove nothing');
      } finally {
        await snippet.undo?.(raw);
        await raw.close();
      }

      const filtered = await context();
      try {
        const dump = Buffer.from(hostileDump(snippet.sql(filtered)));
        const line = HOSTILE_FIRST_LINE + snippet.line - 1;
        assert.throws(() => {
          const filter = new DumpFilter('hostile.sql');
          filter.push(dump);
          filter.end();
        }, (err: Error) => err.name === 'UnsafeDumpError' && new RegExp(`^dump hostile\\.sql line ${line}: .*; refusing to restore it \\(nothing was changed\\)$`).test(err.message));

        const psql = execa(join(pgBin, 'psql'), psqlArgs, { env: stack.pg.env, stdin: 'pipe', reject: false });
        const fed = pipeline(Readable.from([dump]), restoreFilter('postgres', 'hostile.sql'), psql.stdin!);
        const [feed] = await Promise.allSettled([fed, psql]);
        assert.equal(feed.status, 'rejected');
        const reason = (feed as PromiseRejectedResult).reason as Error;
        assert.equal(reason.name, 'UnsafeDumpError');
        assert.equal(await snippet.ran(filtered), false, 'the payload ran although the filter refused the dump');
        await recordFault(`hostile dump: ${snippet.name}`, `raw psql -v ON_ERROR_STOP=1 ran it; the filter refused it (${reason.message.replace(/; refusing.*$/, '')}); nothing ran through the filter into psql`);
      } finally {
        await snippet.undo?.(filtered);
        await filtered.close();
      }
    });
  }
});
