// `node dist/bench/loader.js [--assets 30000] [--dims 256] [--runs 3]`: the load step alone, side
// by side in one run, on the same gzip'd dump, for both formats (our pg_dumpall, Immich's pg_dump
// of one database), into a real PostgreSQL:
//   (e) gzip -dc | psql, as the runbook loads by hand
//   (g) the loader as it was: the same decompressor and strict filter, psql without restrict mode, no settings pinned
//   (f) the loader now: the strict filter, psql in restrict mode, pg_dump's settings pinned
// Prints seconds (median of --runs) and the ratios (g)/(e) and (f)/(e). Never part of `npm test`.
import { createReadStream } from 'node:fs';
import { mkdtemp, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { decompressor } from '../adapters/commands/compression.js';
import { policyFor } from '../adapters/postgres/dump-policy.js';
import { loadDump } from '../adapters/postgres/load.js';
import { restoreFilter } from '../adapters/postgres/sql-stream.js';
import { loadImmichLike, pgBin, startPostgres } from '../test/helpers/postgres.js';

const { values: opts } = parseArgs({ options: { assets: { type: 'string', default: '30000' }, dims: { type: 'string', default: '256' }, runs: { type: 'string', default: '3' } } });
const RUNS = Number(opts.runs);

const pg = await startPostgres();
try {
  await loadImmichLike(pg, Number(opts.assets), Number(opts.dims));
  const root = await mkdtemp(join(tmpdir(), 'immich-backup-bench-loader-'));
  const formats = [
    { format: 'cluster' as const, file: 'immich_20261126_030000.sql.gz', database: 'postgres', dump: [join(pgBin, 'pg_dumpall'), '--clean', '--if-exists'] },
    { format: 'immich' as const, file: 'immich-db-backup-20261126T030000-v2.3.1-pg15.18.sql.gz', database: 'immich', dump: [join(pgBin, 'pg_dump'), '--clean', '--if-exists', '-d', 'immich'] },
  ];
  const secs = (ms: number) => (ms / 1000).toFixed(2);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const timed = async (work: () => Promise<unknown>) => {
    const t = Date.now();
    await work();
    return Date.now() - t;
  };
  for (const f of formats) {
    const path = join(root, f.file);
    await execa('sh', ['-c', `"$0" "$@" | gzip -1 > "${path}"`, ...f.dump], { env: pg.env });
    const sqlMiB = Number((await execa('sh', ['-c', 'gzip -dc "$0" | wc -c', path])).stdout) / 2 ** 20;
    const psqlArgs = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', 'postgres', '-d', f.database];
    const byHand = () => execa('sh', ['-c', `gzip -dc "$0" | "$1" -X -q -U postgres -d "$2" >/dev/null 2>&1`, path, join(pgBin, 'psql'), f.database], { env: pg.env, reject: false });
    const before = async () => {
      const psql = execa(join(pgBin, 'psql'), psqlArgs, { env: pg.env, stdin: 'pipe', stdout: 'ignore' });
      await Promise.all([pipeline(createReadStream(path), decompressor(f.file), restoreFilter('postgres', f.file, { policy: policyFor(f.format) }), psql.stdin!), psql]);
    };
    const now = async () => {
      const source = await open(path, 'r');
      try {
        await loadDump({ file: f.file, source, format: f.format }, 'postgres', { file: join(pgBin, 'psql'), args: psqlArgs, env: pg.env }, 'bench', { refuse: 'bench' });
      } finally {
        await source.close();
      }
    };
    const r = { e: [] as number[], g: [] as number[], f: [] as number[] };
    for (let i = 0; i < RUNS; i++) {
      r.e.push(await timed(byHand));
      r.g.push(await timed(before));
      r.f.push(await timed(now));
      console.log(`[${f.format}] round ${i + 1}/${RUNS}: (e) ${secs(r.e.at(-1)!)} s, (g) ${secs(r.g.at(-1)!)} s, (f) ${secs(r.f.at(-1)!)} s`);
    }
    const e = median(r.e);
    console.log(`${f.format} dump (${sqlMiB.toFixed(0)} MiB of SQL): (e) by hand ${secs(e)} s; (g) the loader as it was ${secs(median(r.g))} s = ${(median(r.g) / e).toFixed(2)} x (e); (f) the loader now ${secs(median(r.f))} s = ${(median(r.f) / e).toFixed(2)} x (e)`);
  }
} finally {
  await pg.stop();
}
