// `node dist/bench/library-audit.js [--files 2000] [--mib 1] [--small 13500] [--large 135000] [--runs 3]`
// (PATH with .venv/bin for the temporal binary; root, for the tmpfs drive). Side by side, one run:
//   throughput: LibraryAudit (a whole pass through Temporal and a real `immich-backup worker`) vs
//               `ionice -c3 nice -n19 sha1sum` over the same files (library and mirror), one
//               sha1sum per side at once as the audit reads them, and the two one after the other;
//               medians of --runs, page cache warm for all (the files were just written)
//   memory:     the worker's peak RSS (VmHWM) over a whole pass at --small and at --large assets,
//               a fresh worker for each size
import { readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import type { LibraryAuditReport } from '../workflows/index.js';
import { spawnCli, workerStarted } from '../test/helpers/cli.js';
import { makeImmichLibrary, mountTmpfs } from '../test/helpers/library.js';
import { startPostgres } from '../test/helpers/postgres.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../test/helpers/setup.js';
import { startTestTemporal } from '../test/helpers/temporal.js';

const { values: opts } = parseArgs({
  options: {
    files: { type: 'string', default: '2000' },
    mib: { type: 'string', default: '1' },
    small: { type: 'string', default: '13500' },
    large: { type: 'string', default: '135000' },
    runs: { type: 'string', default: '3' },
    only: { type: 'string', default: 'throughput,memory' },
  },
});
const FILES = Number(opts.files);
const MIB = Number(opts.mib);
const SMALL = Number(opts.small);
const LARGE = Number(opts.large);
const RUNS = Number(opts.runs);
const PARTS = new Set(opts.only.split(','));
const PRIORITY = ['ionice', '-c', '3', 'nice', '-n', '19'];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const log = (...parts: unknown[]) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...parts);
const MiBps = (bytes: number, ms: number) => Math.round((bytes / 2 ** 20 / (ms / 1000)) * 10) / 10;
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

const [temporal, pg] = await Promise.all([startTestTemporal(), startPostgres()]);
const connection = await Connection.connect({ address: temporal.address });
const client = new Client({ connection });
const cleanups: Array<() => Promise<unknown>> = [];
const lines: string[] = [];

/** A fresh Immich (its asset table holds exactly this library), the library mirrored onto a tmpfs drive, a worker process for it. */
async function stack(tag: string, count: number, bytesEach: (i: number) => number, driveSize: string) {
  const root = await tempDir(`bench-audit-${tag}`);
  const source = join(root, 'upload');
  await pg.psql('DROP TABLE IF EXISTS asset', 'immich').catch(() => undefined);
  let t = performance.now();
  const assets = await makeImmichLibrary(pg, source, count, { bytesEach });
  log(`${tag}: ${count} assets written in ${Math.round(performance.now() - t) / 1000} s`);
  const mountPoint = join(root, 'drive');
  const drive = await mountTmpfs(mountPoint, driveSize);
  cleanups.push(() => drive.unmount());
  t = performance.now();
  await execa('rsync', ['-a', `${source}/`, `${join(mountPoint, 'immich')}/`]);
  log(`${tag}: mirrored in ${Math.round(performance.now() - t) / 1000} s`);
  const raw = rawTestConfig({
    backupDir: join(root, 'dumps'),
    address: temporal.address,
    taskQueue: `bench-audit-${tag}-${Date.now()}`,
    extra: { log: { level: 'info' }, library: { source, destination: join(mountPoint, 'immich'), mountPoint } },
  });
  const worker = spawnCli(['-c', await writeConfigFile(root, raw), 'worker'], fixtureEnv(pg));
  cleanups.push(async () => {
    worker.process.kill('SIGTERM');
    await worker.process;
  });
  await workerStarted(worker);
  let n = 0;
  return {
    root,
    source,
    mirror: join(mountPoint, 'immich'),
    assets,
    audit: () => client.workflow.execute('LibraryAudit', { taskQueue: raw.temporal!.taskQueue as string, workflowId: `bench-audit-${tag}-${Date.now()}-${n++}`, args: [{ trigger: 'bench', full: true }] }) as Promise<LibraryAuditReport>,
    peakRssMiB: async () => Math.round(Number(/VmHWM:\s+(\d+)/.exec(await readFile(`/proc/${worker.process.pid}/status`, 'utf8'))?.[1]) / 1024),
  };
}

/** `ionice -c3 nice -n19 sha1sum` over a list of files, as xargs batches them. */
async function sha1sumAll(dir: string, rel: string[]): Promise<void> {
  await execa('xargs', ['-0', ...PRIORITY, 'sha1sum', '--'], { cwd: dir, input: rel.join('\0'), stdout: 'ignore' });
}

try {
  lines.push(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}`);
  if (PARTS.has('throughput')) {
    const bytesEach = (i: number) => Math.round(MIB * 2 ** 20 * (0.5 + ((i * 7919) % 1000) / 1000));
    const s = await stack('throughput', FILES, bytesEach, `${Math.ceil(FILES * MIB * 1.6 + 64)}m`);
    const rel = s.assets.map((a) => a.relativePath);
    const bytes = s.assets.reduce((n, _, i) => n + bytesEach(i), 0) * 2;
    const parallel: number[] = [];
    const serial: number[] = [];
    const workflow: number[] = [];
    const activity: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      parallel.push(await timed(() => Promise.all([sha1sumAll(s.source, rel), sha1sumAll(s.mirror, rel)])));
      serial.push(await timed(async () => {
        await sha1sumAll(s.source, rel);
        await sha1sumAll(s.mirror, rel);
      }));
      let report: LibraryAuditReport | undefined;
      workflow.push(await timed(async () => (report = await s.audit())));
      if (report!.pass.library.ok !== FILES || report!.pass.mirror.ok !== FILES) throw new Error(`audit found problems: ${report!.message}`);
      activity.push(report!.run.durationMs);
    }
    const p = MiBps(bytes, median(parallel));
    const q = MiBps(bytes, median(serial));
    const w = MiBps(bytes, median(workflow));
    const a = MiBps(bytes, median(activity));
    lines.push(
      `throughput over ${FILES} files x ~${MIB} MiB on each side (${Math.round(bytes / 2 ** 20)} MiB read in all), medians of ${RUNS}:`,
      `  (a) ionice -c3 nice -n19 sha1sum, one per side at once: ${p} MiB/s (${Math.round(median(parallel))} ms)`,
      `  (b) ionice -c3 nice -n19 sha1sum, library then mirror:  ${q} MiB/s (${Math.round(median(serial))} ms)`,
      `  (c) LibraryAudit, whole workflow through Temporal:      ${w} MiB/s (${Math.round(median(workflow))} ms) = ${Math.round((w / p) * 100)}% of (a), ${Math.round((w / q) * 100)}% of (b)`,
      `  (d) its auditLibrary activity alone:                    ${a} MiB/s (${Math.round(median(activity))} ms) = ${Math.round((a / p) * 100)}% of (a)`,
      `  target (c) >= 90% of (a): ${w / p >= 0.9 ? 'met' : 'MISSED'}`,
    );
    log(lines.slice(-6).join('\n'));
  }
  if (PARTS.has('memory')) {
    const rss: Record<number, number> = {};
    const took: Record<number, number> = {};
    for (const count of [SMALL, LARGE]) {
      const s = await stack(`rss-${count}`, count, () => 1000, `${Math.ceil((count * 8) / 1024) + 64}m`);
      let report: LibraryAuditReport | undefined;
      took[count] = await timed(async () => (report = await s.audit()));
      if (report!.pass.covered !== count || report!.pass.library.ok !== count) throw new Error(`audit at ${count}: ${report!.message}`);
      rss[count] = await s.peakRssMiB();
      log(`worker peak RSS after a whole pass over ${count} assets: ${rss[count]} MiB (${Math.round(took[count]!)} ms)`);
      while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
    }
    const growth = Math.round((rss[LARGE]! / rss[SMALL]! - 1) * 1000) / 10;
    lines.push(
      `worker peak RSS (VmHWM of \`immich-backup worker\`) over a whole pass, a fresh worker each:`,
      `  ${SMALL} assets: ${rss[SMALL]} MiB (pass in ${Math.round(took[SMALL]!) / 1000} s); ${LARGE} assets: ${rss[LARGE]} MiB (pass in ${Math.round(took[LARGE]!) / 1000} s); growth ${growth}%`,
      `  target <= 200 MiB and flat (growth <= 10%): ${rss[LARGE]! <= 200 && Math.abs(growth) <= 10 ? 'met' : 'MISSED'}`,
    );
  }
  const text = `LibraryAudit bench, ${new Date().toISOString()}\ncommand: node dist/bench/library-audit.js --files ${FILES} --mib ${MIB} --small ${SMALL} --large ${LARGE} --runs ${RUNS} --only ${opts.only}\n${lines.join('\n')}\n`;
  process.stdout.write(text);
  await writeFile(join('bench', 'results', 'library-audit.txt'), text).catch(() => undefined);
} finally {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  await connection.close();
  await Promise.all([temporal.stop(), pg.stop()]);
}
