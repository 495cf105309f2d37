// On-demand figures for NightlyDbBackup (not part of `npm test`): one backup through Temporal
// next to `pg_dumpall > /dev/null` on the same database, side by side in one run, and the worker
// process's peak RSS. Usage: npm run bench:backup -- [assets=200000] [runs=5]
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import type { NightlyDbBackup } from '../workflows/index.js';
import { spawnCli, workerStarted } from '../test/helpers/cli.js';
import { waitFor } from '../test/helpers/net.js';
import { loadImmichLike, pgBin, startPostgres } from '../test/helpers/postgres.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../test/helpers/setup.js';
import { startTestTemporal } from '../test/helpers/temporal.js';

const assets = Number(process.argv[2] ?? 200_000);
const runs = Number(process.argv[3] ?? 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const [temporal, pg] = await Promise.all([startTestTemporal(), startPostgres()]);
const dir = await tempDir('bench');
const worker: { current?: ReturnType<typeof spawnCli> } = {};
try {
  await loadImmichLike(pg, assets);
  const dbBytes = Number(await pg.psql("SELECT pg_database_size('immich')"));
  const raw = rawTestConfig({ backupDir: join(dir, 'dumps'), address: temporal.address, extra: { log: { level: 'info' }, backup: { retentionDays: 1 } } });
  const configFile = await writeConfigFile(dir, raw);
  worker.current = spawnCli(['-c', configFile, 'worker'], fixtureEnv(pg));
  await workerStarted(worker.current);
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection });
  const backup = () =>
    client.workflow.execute<typeof NightlyDbBackup>('NightlyDbBackup', { taskQueue: raw.temporal!.taskQueue as string, workflowId: `bench-${Date.now()}`, args: [{ trigger: 'bench' }] });

  const floor: number[] = [];
  const workflow: number[] = [];
  const activity: number[] = [];
  let last = await backup(); // warm-up: page cache, bundle load
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    await execa(join(pgBin, 'pg_dumpall'), ['-U', 'postgres', '--clean', '--if-exists'], { env: pg.env, stdout: 'ignore' });
    floor.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 1000)); // one dump name per second
    t = performance.now();
    last = await backup();
    workflow.push(performance.now() - t);
    activity.push(last.dumpDurationMs);
  }
  const status = await readFile(`/proc/${worker.current.process.pid}/status`, 'utf8');
  const peakKb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
  await connection.close();

  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(`database: ${assets} assets, ${(dbBytes / 2 ** 20).toFixed(0)} MiB on disk; SQL ${(last.sqlBytes / 2 ** 20).toFixed(0)} MiB, dump ${(last.bytes / 2 ** 20).toFixed(1)} MiB (${raw.backup!.compressor ?? 'pigz'} -${raw.backup!.compressionLevel ?? 1}); ${runs} runs, medians`);
  console.log(`(a) pg_dumpall > /dev/null          ${s(median(floor))}`);
  console.log(`(c) dumpDatabase activity           ${s(median(activity))}   ratio to (a) ${(median(activity) / median(floor)).toFixed(2)}`);
  console.log(`(d) NightlyDbBackup via Temporal    ${s(median(workflow))}   ratio to (a) ${(median(workflow) / median(floor)).toFixed(2)}  (includes validate + prune)`);
  console.log(`worker peak RSS (VmHWM)             ${(peakKb / 1024).toFixed(0)} MiB`);
} finally {
  worker.current?.process.kill('SIGTERM');
  await worker.current?.process;
  await Promise.all([temporal.stop(), pg.stop()]);
}
