// The versioned library mirror (issue 15: version sets, write-once guard) against plain rsync,
// side by side in one run on one machine, on a generated library and two tmpfs "drives":
//   no-change rerun:  rsync -a  vs  the versioned mirror (target <= 1.1x)
//   a 1% change:      rsync -a  vs  the versioned mirror of the same change (target <= 1.2x)
// The 1% change is what a week of Immich looks like plus the guard's worst case: half new files,
// half existing files rewritten at the same size (the guard compares their bytes with the old
// versions kept in the version set). The mirror is the mirrorLibrary activity itself (the code the
// workflow runs, with its drive checks, pairing and guard; outside Temporal, so no server round
// trips are counted), at the same CPU and I/O priority as plain rsync (library.nice and ioniceClass
// 0). Medians of --runs rounds, the order alternating between rounds.
// Usage: node dist/bench/library-mirror.js [--files 135000] [--runs 3]
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { createMirrorActivities } from '../activities/mirror.js';
import type { MirrorOutcome } from '../core/types.js';
import { parseConfig } from '../config/config.js';
import { versionSetName } from '../core/library-layout.js';
import { createLogger } from '../config/logger.js';
import { makeLibrary, mountTmpfs } from '../test/helpers/library.js';
import { rawTestConfig, tempDir } from '../test/helpers/setup.js';

const { values: opts } = parseArgs({ options: { files: { type: 'string', default: '135000' }, runs: { type: 'string', default: '3' } } });
const FILES = Number(opts.files);
const RUNS = Number(opts.runs);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const secs = (ms: number) => (Math.round(ms) / 1000).toFixed(3);
const log = (...parts: unknown[]) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...parts);
async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

const root = await tempDir('bench-library-mirror');
const library = join(root, 'library');
const plainDrive = join(root, 'plain-drive');
const mirrorDrive = join(root, 'mirror-drive');
const mounts: Array<{ unmount(): Promise<void> }> = [];
try {
  const t0 = performance.now();
  const bytes = await makeLibrary(library, FILES, (i) => 500 + ((i * 7919) % 3500));
  log(`library: ${FILES} files, ${Math.round(bytes / 2 ** 20)} MiB, generated in ${secs(performance.now() - t0)} s`);
  mounts.push(await mountTmpfs(plainDrive, '8g'), await mountTmpfs(mirrorDrive, '8g'));
  const config = parseConfig(
    rawTestConfig({
      backupDir: join(root, 'dumps'),
      extra: {
        library: { source: library, destination: join(mirrorDrive, 'immich'), mountPoint: mirrorDrive, nice: 0, ioniceClass: 0, writeOnce: { maxFiles: FILES, maxShare: 1 } },
        log: { level: 'error' },
      },
    }),
  );
  const activities = createMirrorActivities({ config, logger: createLogger({ level: process.env.BENCH_LOG === '1' ? 'info' : 'error', fd: 2 }) });
  let clock = Date.UTC(2026, 0, 4, 5);
  const mirror = () => {
    clock += 7 * 86_400_000; // one version set per run, a week apart, as the schedule makes them
    return activities.mirrorLibrary({ versionSet: versionSetName(new Date(clock)) });
  };
  const plain = () => execa('rsync', ['-a', `${library}/`, `${join(plainDrive, 'immich')}/`]);
  const files = (await execa('find', [library, '-type', 'f'])).stdout.split('\n').sort();

  log('first copies');
  log(`  rsync -a ${secs((await timed(plain)).ms)} s; versioned mirror ${secs((await timed(mirror)).ms)} s`);

  const rerun = { plain: [] as number[], mirror: [] as number[] };
  const change = { plain: [] as number[], mirror: [] as number[] };
  let changed: MirrorOutcome | undefined;
  const onePercent = Math.max(2, Math.round(FILES / 100));
  for (let round = 0; round < RUNS; round++) {
    const both = async (into: { plain: number[]; mirror: number[] }) => {
      const order = round % 2 === 0 ? (['plain', 'mirror'] as const) : (['mirror', 'plain'] as const);
      for (const which of order) {
        const { ms, value } = which === 'plain' ? await timed(plain) : await timed(mirror);
        into[which].push(ms);
        if (which === 'mirror') changed = value as MirrorOutcome;
      }
    };
    await both(rerun);
    if (changed?.ready && changed.filesTransferred !== 0) throw new Error(`a no-change rerun transferred ${changed.filesTransferred} files`);

    // 1%: half new files, half existing ones rewritten at the same size (a later mtime).
    const later = new Date(Date.now() + 60_000 * (round + 1));
    const rewritten = files.filter((_, i) => i % 200 === round).slice(0, onePercent / 2);
    for (const path of rewritten) {
      const body = await readFile(path);
      await writeFile(path, body.map((b) => b ^ (round + 1)));
      await utimes(path, later, later);
    }
    const fresh = join(library, 'user0', 'new', String(round));
    await mkdir(fresh, { recursive: true });
    for (let i = 0; i < onePercent / 2; i++) await writeFile(join(fresh, `NEW_${i}.jpg`), `new ${round} ${i}`.padEnd(2000, '.'));
    await both(change);
    if (!changed?.ready || changed.versioning?.rewrites.count !== rewritten.length || changed.versioning.versioned !== rewritten.length) {
      throw new Error(`the 1% change: expected ${rewritten.length} rewrites versioned, got ${JSON.stringify(changed)}`);
    }
    log(`round ${round + 1}/${RUNS}: no-change rerun rsync ${secs(rerun.plain.at(-1)!)} s, mirror ${secs(rerun.mirror.at(-1)!)} s; 1% change (${rewritten.length} rewritten + ${Math.round(onePercent / 2)} new) rsync ${secs(change.plain.at(-1)!)} s, mirror ${secs(change.mirror.at(-1)!)} s`);
  }
  const row = (what: string, plainMs: number, mirrorMs: number, target: number) =>
    `| ${what} | ${secs(plainMs)} | ${secs(mirrorMs)} | ${(mirrorMs / plainMs).toFixed(2)}x | <= ${target}x |`;
  const table = [
    `Library: ${FILES} files, ${Math.round(bytes / 2 ** 20)} MiB, on tmpfs drives; medians of ${RUNS} rounds, order alternating; both at the same priority.`,
    '',
    '| run | rsync -a (s) | versioned mirror (s) | ratio | target |',
    '|---|---|---|---|---|',
    row('no-change rerun', median(rerun.plain), median(rerun.mirror), 1.1),
    row(`1% changed (${onePercent / 2} rewritten at the same size + ${onePercent / 2} new)`, median(change.plain), median(change.mirror), 1.2),
  ].join('\n');
  process.stdout.write(`${table}\n`);
} finally {
  for (const m of mounts) await m.unmount();
  await rm(root, { recursive: true, force: true });
}
