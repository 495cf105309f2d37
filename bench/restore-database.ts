// On-demand figures for RestoreDatabase (not part of `npm test`): `gunzip | psql` of a dump next to
// the workflow's restore step and the whole workflow, on the same dump, side by side in one run.
// Usage: npm run bench:restore -- [assets=100000] [runs=3]
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import type { NightlyDbBackupReport, RestoreDatabaseReport } from '../workflows/index.js';
import { spawnCli, workerStarted } from '../test/helpers/cli.js';
import { waitFor } from '../test/helpers/net.js';
import { startPingServer } from '../test/helpers/ping.js';
import { loadImmichLike, pgBin, startPostgres } from '../test/helpers/postgres.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../test/helpers/setup.js';
import { startTestTemporal } from '../test/helpers/temporal.js';

const assets = Number(process.argv[2] ?? 100_000);
const runs = Number(process.argv[3] ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

const [temporal, pg, ping] = await Promise.all([startTestTemporal(), startPostgres(), startPingServer()]);
const root = await tempDir('bench-restore');
let worker: ReturnType<typeof spawnCli> | undefined;
try {
  await loadImmichLike(pg, assets);
  const raw = rawTestConfig({ backupDir: join(root, 'dumps'), address: temporal.address, extra: { immich: { composeDir: root, pingUrl: ping.url }, log: { level: 'info' } } });
  worker = spawnCli(['-c', await writeConfigFile(root, raw), 'worker'], fixtureEnv(pg));
  await workerStarted(worker);
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection });
  const taskQueue = raw.temporal!.taskQueue as string;
  const dump = await client.workflow.execute<(i: object) => Promise<NightlyDbBackupReport>>('NightlyDbBackup', { taskQueue, workflowId: `bench-backup-${Date.now()}`, args: [{}] });

  const raws: number[] = [];
  const steps: number[] = [];
  const whole: number[] = [];
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const psql = execa(join(pgBin, 'psql'), ['-X', '-q', '-d', 'postgres'], { env: pg.env, reject: false, stdout: 'ignore', stderr: 'ignore' });
    await execa('gunzip', ['-c', dump.path], { buffer: false }).pipe(psql);
    raws.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 1000)); // restore points are named by the second
    t = performance.now();
    const report = await client.workflow.execute<(i: object) => Promise<RestoreDatabaseReport>>('RestoreDatabase', { taskQueue, workflowId: `bench-restore-${Date.now()}`, args: [{ dump: dump.file, approved: true }] });
    whole.push(performance.now() - t);
    steps.push(report.durations['restoring']!);
  }
  await connection.close();
  console.log(`database: ${assets} assets; dump ${(dump.bytes / 2 ** 20).toFixed(1)} MiB (SQL ${(dump.sqlBytes / 2 ** 20).toFixed(0)} MiB); ${runs} runs, medians`);
  console.log(`(e) gunzip -c | psql                           ${s(median(raws))}`);
  console.log(`(f) RestoreDatabase's restore step             ${s(median(steps))}   ratio (f)/(e) ${(median(steps) / median(raws)).toFixed(2)}`);
  console.log(`    whole RestoreDatabase (verify, restore point, stop, restore, start, health)  ${s(median(whole))}`);
} finally {
  worker?.process.kill('SIGTERM');
  await worker?.process;
  await Promise.all([temporal.stop(), pg.stop(), ping.stop()]);
  await execa('rm', ['-rf', root]);
}
