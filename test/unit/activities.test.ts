import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { DefaultLogger } from '@temporalio/worker';
import { execa } from 'execa';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities/index.js';
import { teeSink, TesterStoppedError } from '../../activities/dump.js';
import { TableDigester } from '../../adapters/postgres/table-digests.js';
import { digestsFileName, readDigestsFile } from '../../adapters/dump-store/rows.js';
import type { Config } from '../../config/config.js';
import { createLogger } from '../../config/logger.js';
import { IMMICH_TABLES, pgBin } from '../helpers/postgres.js';
import { waitFor } from '../helpers/net.js';
import { fixture } from '../helpers/paths.js';
import { fixtureEnv, listDir, tempDir, testConfig } from '../helpers/setup.js';
import { ensureKey } from '../../adapters/dump-store/key.js';
import { useStack } from '../helpers/stack.js';
import { tagPlanted } from '../helpers/trust.js';

// Activities called directly, outside a worker, against real PostgreSQL, compressors and files.
// MockActivityEnvironment is the SDK's activity context; the fixture docker stands in for Docker.

const logger = createLogger({ level: 'fatal', fd: 2 });
// The failures below are expected; keep the SDK from printing each one.
const quiet = new DefaultLogger('ERROR', () => undefined);
const run = <T>(fn: () => Promise<T>, beats?: unknown[]) => {
  const env = new MockActivityEnvironment(undefined, { logger: quiet });
  if (beats) env.on('heartbeat', (d: unknown) => beats.push(d));
  return env.run(fn) as Promise<T>;
};
const activities = (config: Config) => createActivities({ config, logger });

const stack = useStack({ temporal: false, postgres: 500, dockerEnv: true });

/** A dump with its .sha256, as a backup left it (tagged with the key of the dir's test config, when the checksum is its own). */
async function writeDump(dir: string, name: string, sql: string | Buffer, checksum?: string, tag = false) {
  const body = Buffer.isBuffer(sql) ? sql : gzipSync(sql);
  const sha256 = createHash('sha256').update(body).digest('hex');
  await writeFile(join(dir, name), body);
  await writeFile(join(dir, `${name}.sha256`), `${checksum ?? sha256}  ${name}\n`);
  await ensureKey(`${dir}.key`);
  if (tag) await tagPlanted(testConfig({ backupDir: dir }), dir, name, sha256);
}

const COMPLETE_SQL = '-- dump\n' + 'SELECT 1;\n'.repeat(200) + '--\n-- PostgreSQL database cluster dump complete\n--\n\n';

describe('discoverPostgresContainer', () => {
  test('a Docker daemon that does not answer is a retryable failure carrying docker\'s own words', async () => {
    const dir = await tempDir('staging');
    process.env.FIXTURE_DOCKER_DOWN = '1';
    try {
      await assert.rejects(run(() => activities(testConfig({ backupDir: dir })).discoverPostgresContainer()), (err: Error) => {
        assert.equal(err.name, 'CommandFailedError');
        assert.match(err.message, /Cannot connect to the Docker daemon/);
        return true;
      });
    } finally {
      delete process.env.FIXTURE_DOCKER_DOWN;
    }
  });

  test('the pattern is applied as a regular expression, not docker\'s substring filter', async () => {
    const dir = await tempDir('staging');
    const config = testConfig({ backupDir: dir, extra: { postgres: { containerPattern: '^immich_postgres$' } } });
    process.env.FIXTURE_DOCKER_CONTAINERS = 'immich_postgres,immich_postgres_backup';
    try {
      assert.deepEqual(await run(() => activities(config).discoverPostgresContainer()), { runtime: 'docker', container: 'immich_postgres' });
    } finally {
      process.env.FIXTURE_DOCKER_CONTAINERS = fixtureEnv(stack.pg).FIXTURE_DOCKER_CONTAINERS;
    }
  });
});

describe('dumpDatabase', () => {
  test('heartbeats carry the bytes written, and the result matches the file', async () => {
    const dir = await tempDir('staging');
    const beats: unknown[] = [];
    const result = await run(() => activities(testConfig({ backupDir: dir })).dumpDatabase({ target: { runtime: 'docker', container: 'immich_postgres' }, stamp: '20261126_030000' }), beats);
    assert.equal(result.file, 'immich_20261126_030000.sql.gz');
    assert.equal(result.bytes, (await stat(result.path)).size);
    assert.equal(result.sha256, createHash('sha256').update(await readFile(result.path)).digest('hex'));
    const last = beats.at(-1) as { step: string; bytesWritten: number; written: string };
    assert.equal(last.step, 'dumping');
    assert.equal(typeof last.bytesWritten, 'number');
    assert.match(last.written, /B$/);
  });

  test('a failing pg_dumpall leaves nothing behind and says why', async () => {
    const dir = await tempDir('staging');
    const config = testConfig({ backupDir: dir, extra: { postgres: { user: 'nobody_here' } } });
    await assert.rejects(run(() => activities(config).dumpDatabase({ target: { runtime: 'docker', container: 'immich_postgres' }, stamp: '20261126_030000' })), (err: Error) => {
      assert.equal(err.name, 'CommandFailedError');
      assert.match(err.message, /^pg_dumpall failed \(exit code 1\): .*role "nobody_here" does not exist/);
      return true;
    });
    assert.deepEqual(await listDir(dir), []);
  });

  test('a retry replaces the temporary file an earlier, killed attempt left', async () => {
    const dir = await tempDir('staging');
    await writeFile(join(dir, '.immich_20261126_030000.sql.gz.partial'), 'half a dump');
    const result = await run(() => activities(testConfig({ backupDir: dir, extra: { postgres: { runtime: 'none', binDir: pgBin } } })).dumpDatabase({ target: { runtime: 'none' }, stamp: '20261126_030000' }));
    assert.deepEqual(await listDir(dir), [digestsFileName(result.file), result.file, `${result.file}.sha256`]);
  });
});

describe('the dump\'s sink (file + decode test)', () => {
  // The decode test is a real child process (cat, or sleep that never reads), killed the way an
  // activity cancellation kills it: execa's cancelSignal, which also destroys its stdin.
  const tester = (file: string, args: string[]) => {
    const abort = new AbortController();
    const child = execa(file, args, { stdin: 'pipe', stdout: 'ignore', cancelSignal: abort.signal, reject: false });
    return { child, abort };
  };
  const settlesWithin = <T>(what: Promise<T>, ms: number) =>
    Promise.race([what, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the sink did not settle within ${ms} ms: the dump would hang`)), ms).unref())]);

  test('a decode test killed before the compressor wrote anything: ending the input fails at once', async () => {
    const dir = await tempDir('staging');
    const fh = await open(join(dir, 'out'), 'w');
    try {
      const { child, abort } = tester('cat', []);
      abort.abort();
      await child;
      assert.ok(child.stdin!.destroyed, 'precondition: the cancellation destroyed its stdin');
      // The compressor was killed too: its output ends with no byte, and the sink is only ended.
      await assert.rejects(settlesWithin(pipeline(Readable.from([]), teeSink(fh, child.stdin!)), 10_000), TesterStoppedError);
    } finally {
      await fh.close();
    }
  });

  test('a decode test killed while a write waits for it to drain fails the write at once', async () => {
    const dir = await tempDir('staging');
    const fh = await open(join(dir, 'out'), 'w');
    try {
      // sleep never reads: the pipe fills and the sink waits for 'drain', which never comes.
      const { child, abort } = tester('sleep', ['60']);
      const chunks = Array.from({ length: 256 }, () => Buffer.alloc(64 * 1024, 1));
      const writing = pipeline(Readable.from(chunks), teeSink(fh, child.stdin!));
      writing.catch(() => undefined);
      await waitFor('the pipe to the test to fill', () => (child.stdin!.writableNeedDrain ? true : undefined), 10_000, 20);
      abort.abort();
      await child;
      await assert.rejects(settlesWithin(writing, 10_000), TesterStoppedError);
    } finally {
      await fh.close();
    }
  });
});

describe('dumpDatabase with each compressor', () => {
  for (const [compressor, level, decode] of [['pigz', 1, ['pigz', '-dc']], ['igzip', 1, ['igzip', '-dc']], ['gzip', 1, ['gzip', '-dc']], ['zstd', 3, ['zstd', '-dcq']]] as const) {
    test(`${compressor} -${level}: its own tool decodes the file to pg_dumpall's complete SQL, and validation re-hashes instead of decoding again`, async () => {
      const dir = await tempDir('staging');
      const config = testConfig({ backupDir: dir, extra: { backup: { compressor, compressionLevel: level } } });
      const result = await run(() => activities(config).dumpDatabase({ target: { runtime: 'docker', container: 'immich_postgres' }, stamp: '20261126_030000' }));
      assert.equal(result.file, compressor === 'zstd' ? 'immich_20261126_030000.sql.zst' : 'immich_20261126_030000.sql.gz');
      assert.deepEqual(await listDir(dir), [digestsFileName(result.file), result.file, `${result.file}.sha256`]);
      const sql = Buffer.from((await execa(decode[0], [...decode.slice(1), result.path], { encoding: 'buffer', stripFinalNewline: false })).stdout);
      assert.match(sql.subarray(-200).toString(), /PostgreSQL database cluster dump complete/);
      const beats: unknown[] = [];
      const valid = await run(() => activities(config).validateDump({ file: result.file, testedSha256: result.sha256 }), beats);
      assert.deepEqual(valid, { file: result.file, bytes: result.bytes, sha256: result.sha256 });
      assert.equal(beats.filter((b) => (b as { step?: string }).step === 'validating').length, 0);
      // Without the test's word, validation decodes the file itself and finds the same SQL.
      assert.equal((await run(() => activities(config).validateDump({ file: result.file }))).sqlBytes, sql.length);
      // Beside it, the digests of every table's data in that SQL, tagged for this dump.
      const digester = new TableDigester();
      await pipeline(Readable.from([sql]), digester);
      const recorded = await readDigestsFile(await ensureKey(config.security.keyFile), dir, result.file);
      assert.deepEqual(recorded, digester.digests());
      for (const table of IMMICH_TABLES) assert.match(recorded![`immich: public.${table}`] ?? '', /^[0-9a-f]{64}$/, table);
    });
  }

  test('a compressor whose output does not decode: DumpCorruptError from its own test, nothing kept', async () => {
    const dir = await tempDir('staging');
    const path = process.env.PATH;
    process.env.PATH = `${fixture('broken-compressor')}:${path}`;
    try {
      const config = testConfig({ backupDir: dir, extra: { backup: { compressor: 'pigz' } } });
      await assert.rejects(run(() => activities(config).dumpDatabase({ target: { runtime: 'docker', container: 'immich_postgres' }, stamp: '20261126_030000' })), (err: Error) => {
        assert.equal(err.name, 'DumpCorruptError');
        assert.match(err.message, /^dump immich_20261126_030000\.sql\.gz is not a complete gzip stream \(.*pigz.*\): what pigz wrote does not decode; nothing was kept$/);
        return true;
      });
    } finally {
      process.env.PATH = path;
    }
    assert.deepEqual(await listDir(dir), []);
  });

  test('a dump changed on disk after it was written is decoded again, not waved through on what the dump saw', async () => {
    const dir = await tempDir('staging');
    const config = testConfig({ backupDir: dir, extra: { backup: { compressor: 'zstd' } } });
    const result = await run(() => activities(config).dumpDatabase({ target: { runtime: 'docker', container: 'immich_postgres' }, stamp: '20261126_030000' }));
    await truncate(result.path, result.bytes - 100);
    await assert.rejects(run(() => activities(config).validateDump({ file: result.file, testedSha256: result.sha256 })), (err: Error) => {
      assert.equal(err.name, 'DumpCorruptError');
      assert.match(err.message, /^dump immich_20261126_030000\.sql\.zst is not a complete zstd stream \(.+\): the dump was cut short/);
      return true;
    });
    assert.deepEqual(await listDir(join(dir, 'rejected')), [result.file, `${result.file}.sha256`]);
  });
});

describe('validateDump', () => {
  const name = 'immich_20261126_030000.sql.gz';
  // These hand-made dumps compress to a few dozen bytes; the size check has its own workflow test.
  const config = (dir: string) => testConfig({ backupDir: dir, extra: { backup: { minBytes: 16 } } });

  test('a complete dump with a matching checksum passes', async () => {
    const dir = await tempDir('staging');
    await writeDump(dir, name, COMPLETE_SQL);
    const valid = await run(() => activities(config(dir)).validateDump({ file: name }));
    assert.equal(valid.sqlBytes, Buffer.byteLength(COMPLETE_SQL));
  });

  const cases: Array<[string, (dir: string) => Promise<void>, string, RegExp]> = [
    ['a truncated gzip stream', async (dir) => {
      await writeDump(dir, name, gzipSync(COMPLETE_SQL + 'x'.repeat(5000)));
      await truncate(join(dir, name), (await stat(join(dir, name))).size - 40);
    }, 'DumpCorruptError', /not a complete gzip stream/],
    ['SQL without pg_dumpall\'s completion marker', (dir) => writeDump(dir, name, COMPLETE_SQL.replace('dump complete', 'dump')), 'DumpIncompleteError', /does not end with/],
    ['bytes that differ from the .sha256', (dir) => writeDump(dir, name, COMPLETE_SQL, 'a'.repeat(64)), 'ChecksumMismatchError', /records a{64}/],
  ];
  for (const [what, make, type, message] of cases) {
    test(`${what} fails as ${type} and is moved into rejected/`, async () => {
      const dir = await tempDir('staging');
      await make(dir);
      await assert.rejects(run(() => activities(config(dir)).validateDump({ file: name })), (err: Error) => {
        assert.equal(err.name, type);
        assert.match(err.message, message);
        return true;
      });
      assert.deepEqual(await listDir(dir), ['rejected']);
      assert.deepEqual(await listDir(join(dir, 'rejected')), [name, `${name}.sha256`]);
    });
  }

  test('a name that is not ours, or escapes the directory, is refused before any file is touched', async () => {
    const dir = await tempDir('staging');
    for (const file of ['../../etc/passwd', 'immich_20261126_030000.sql.gz/../../x', 'notes.txt']) {
      await assert.rejects(run(() => activities(config(dir)).validateDump({ file })), { name: 'NotOurDumpError' });
    }
  });
});

describe('pruneDumps', () => {
  test('refuses to run when the dump it must keep is not there', async () => {
    const dir = await tempDir('staging');
    await writeDump(dir, 'immich_20200101_030000.sql.gz', COMPLETE_SQL, undefined, true);
    await assert.rejects(run(() => activities(testConfig({ backupDir: dir })).pruneDumps({ keep: 'immich_20261126_030000.sql.gz', nowMs: Date.now() })), { name: 'PruneRefusedError' });
    assert.equal((await listDir(dir)).length, 3);
  });

  test('never deletes the newest dump, even when every dump is past retention', async () => {
    const dir = await tempDir('staging');
    for (const n of ['immich_20200101_030000.sql.gz', 'immich_20200102_030000.sql.gz', 'immich_20200103_030000.sql.gz']) await writeDump(dir, n, COMPLETE_SQL, undefined, true);
    const result = await run(() => activities(testConfig({ backupDir: dir, extra: { backup: { keepMin: 1 } } })).pruneDumps({ keep: 'immich_20200102_030000.sql.gz', nowMs: Date.now() }));
    assert.deepEqual(result.pruned, ['immich_20200101_030000.sql.gz']);
    assert.deepEqual(await listDir(dir), ['immich_20200102_030000.sql.gz', 'immich_20200102_030000.sql.gz.hmac', 'immich_20200102_030000.sql.gz.sha256', 'immich_20200103_030000.sql.gz', 'immich_20200103_030000.sql.gz.hmac', 'immich_20200103_030000.sql.gz.sha256']);
  });

  test('keeps the newest backup.keepMin of ours whatever the clock says; junk past retention (no valid tag) goes', async () => {
    const dir = await tempDir('staging');
    for (const n of ['immich_20200101_030000.sql.gz', 'immich_20200102_030000.sql.gz', 'immich_20200103_030000.sql.gz']) await writeDump(dir, n, COMPLETE_SQL, undefined, true);
    await writeDump(dir, 'immich_20191231_030000.sql.gz', COMPLETE_SQL); // validated-looking, never tagged
    const result = await run(() => activities(testConfig({ backupDir: dir })).pruneDumps({ keep: 'immich_20200103_030000.sql.gz', nowMs: Date.now() + 10 * 365 * 86_400_000 }));
    assert.deepEqual(result.pruned, ['immich_20191231_030000.sql.gz']);
  });
});
