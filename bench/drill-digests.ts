// The drill's re-dump alone, side by side in one run: (r1) pg_dumpall > /dev/null, as the drill by
// hand does it, vs (r2) pg_dumpall into this process's per-table digester, as RestoreDrill does it.
// Usage: node dist/bench/drill-digests.js [--assets 33750] [--runs 3]
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { TableDigester } from '../adapters/postgres/table-digests.js';
import { loadImmichLike, pgBin, startPostgres } from '../test/helpers/postgres.js';

const { values } = parseArgs({ options: { assets: { type: 'string', default: '33750' }, runs: { type: 'string', default: '3' } } });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pg = await startPostgres();
try {
  await loadImmichLike(pg, Number(values.assets), 512);
  const plain: number[] = [];
  const digested: number[] = [];
  let tables = 0;
  let bytes = 0;
  for (let i = 0; i < Number(values.runs); i++) {
    let t = performance.now();
    await execa(join(pgBin, 'pg_dumpall'), [], { env: pg.env, stdout: 'ignore' });
    plain.push(performance.now() - t);
    t = performance.now();
    const child = execa(join(pgBin, 'pg_dumpall'), [], { env: pg.env, buffer: { stdout: false } });
    const digester = new TableDigester();
    await Promise.all([child, pipeline(child.stdout!, digester)]);
    digested.push(performance.now() - t);
    tables = Object.keys(digester.digests()).length;
    bytes = digester.bytes;
  }
  const r1 = median(plain);
  const r2 = median(digested);
  console.log(`${values.assets} assets, ${Math.round(bytes / 2 ** 20)} MiB of SQL, ${tables} tables, medians of ${values.runs}`);
  console.log(`(r1) pg_dumpall > /dev/null               ${(r1 / 1000).toFixed(2)} s  1.00x`);
  console.log(`(r2) pg_dumpall | per-table digester       ${(r2 / 1000).toFixed(2)} s  ${(r2 / r1).toFixed(2)}x`);
} finally {
  await pg.stop();
}
