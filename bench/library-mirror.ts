// On-demand figures for WeeklyLibraryMirror (not part of `npm test`): raw `rsync -a` next to the
// workflow through Temporal on the same generated library, first copy and no-change rerun, side by
// side in one run. Destinations are two real tmpfs mounts. Usage: npm run bench:mirror -- [files=100000] [runs=5]
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import type { WeeklyLibraryMirrorReport } from '../workflows/index.js';
import { spawnCli, workerStarted } from '../test/helpers/cli.js';
import { makeLibrary, mountTmpfs } from '../test/helpers/library.js';
import { waitFor } from '../test/helpers/net.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../test/helpers/setup.js';
import { startTestTemporal } from '../test/helpers/temporal.js';

const files = Number(process.argv[2] ?? 100_000);
const runs = Number(process.argv[3] ?? 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

const root = await tempDir('bench-mirror');
const source = join(root, 'library');
const t0 = performance.now();
const bytes = await makeLibrary(source, files, (i) => 500 + ((i * 7919) % 3500));
console.log(`generated ${files} files, ${(bytes / 2 ** 20).toFixed(0)} MiB, in ${s(performance.now() - t0)}`);
const rawDrive = await mountTmpfs(join(root, 'raw'), '2g');
const wfDrive = await mountTmpfs(join(root, 'wd-backup'), '2g');
const temporal = await startTestTemporal();
let worker: ReturnType<typeof spawnCli> | undefined;
try {
  const raw = rawTestConfig({
    backupDir: join(root, 'dumps'),
    address: temporal.address,
    extra: { log: { level: 'info' }, library: { source, destination: join(root, 'wd-backup', 'immich'), mountPoint: join(root, 'wd-backup') } },
  });
  worker = spawnCli(['-c', await writeConfigFile(root, raw), 'worker']);
  await workerStarted(worker);
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection });
  const mirror = async () => {
    const t = performance.now();
    const report = await client.workflow.execute<(i: object) => Promise<WeeklyLibraryMirrorReport>>('WeeklyLibraryMirror', {
      taskQueue: raw.temporal!.taskQueue as string,
      workflowId: `bench-mirror-${Date.now()}`,
      args: [{ trigger: 'bench' }],
    });
    return { ms: performance.now() - t, report };
  };
  const rsync = async () => {
    const t = performance.now();
    await execa('rsync', ['-a', `${source}/`, `${join(root, 'raw', 'immich')}/`]);
    return performance.now() - t;
  };

  await execa('sh', ['-c', `find ${source} -type f | wc -l`]); // warm the page cache for both
  const firstRaw = await rsync();
  const first = await mirror();
  const rawRerun: number[] = [];
  const wfRerun: number[] = [];
  for (let i = 0; i < runs; i++) {
    rawRerun.push(await rsync());
    const r = await mirror();
    if (r.report.filesTransferred !== 0) throw new Error('a no-change rerun transferred files');
    wfRerun.push(r.ms);
  }
  await connection.close();
  console.log(`(g) raw rsync -a, first copy              ${s(firstRaw)}`);
  console.log(`(h) WeeklyLibraryMirror, first copy       ${s(first.ms)}   ratio (h)/(g) ${(first.ms / firstRaw).toFixed(2)}   (${first.report.filesTransferred} files)`);
  console.log(`(g) raw rsync -a, no-change rerun         ${s(median(rawRerun))}   median of ${runs}`);
  console.log(`(h) WeeklyLibraryMirror, no-change rerun  ${s(median(wfRerun))}   ratio (h)/(g) ${(median(wfRerun) / median(rawRerun)).toFixed(2)}   median of ${runs}`);
} finally {
  worker?.process.kill('SIGTERM');
  await worker?.process;
  await temporal.stop();
  await rawDrive.unmount();
  await wfDrive.unmount();
  await execa('rm', ['-rf', root]);
}
