// Prints the slowest test files of a run from its TAP (scripts/test-timings.sh; scripts/test.sh
// keeps a run's TAP where TEST_TAP says). The runner reports each file's top-level suites and tests,
// not the file: each is matched to the compiled test file whose source names it, and a file's
// time is the sum of its top-level durations (its own before/after hooks, the servers it starts and
// stops, are not in the TAP).
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { repoRoot } from './paths.js';

const [tapFile, count = '10'] = process.argv.slice(2);
if (!tapFile) {
  console.error('usage: test-timings.js RUN.tap [HOW-MANY]');
  process.exit(2);
}

const entries: Array<{ name: string; ms: number }> = [];
let pending: string | undefined;
for (const line of (await readFile(tapFile, 'utf8')).split('\n')) {
  const done = /^(?:not )?ok \d+ - (.*?)(?: # (?:SKIP|TODO).*)?$/.exec(line);
  if (done) pending = done[1];
  const duration = /^ {2}duration_ms: ([\d.]+)$/.exec(line);
  if (duration && pending !== undefined) {
    entries.push({ name: pending, ms: Number(duration[1]) });
    pending = undefined;
  }
}

const dist = join(repoRoot, 'dist', 'test');
const sources = await Promise.all(
  (await readdir(dist, { recursive: true })).filter((f) => f.endsWith('.test.js')).map(async (f) => ({ file: relative(repoRoot, join(dist, f)), text: await readFile(join(dist, f), 'utf8') })),
);
const quoted = (name: string) =>
  [`'${name.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`, JSON.stringify(name), `\`${name}\``].flatMap((q) => [`describe(${q}`, `test(${q}`]);
let last = '(unknown file)';
const perFile = new Map<string, { ms: number; entries: number }>();
for (const { name, ms } of entries) {
  // A name built at run time (a template with values) matches no source: it came from the file before it.
  const file = sources.find((s) => quoted(name).some((q) => s.text.includes(q)))?.file ?? last;
  last = file;
  const sum = perFile.get(file) ?? { ms: 0, entries: 0 };
  perFile.set(file, { ms: sum.ms + ms, entries: sum.entries + 1 });
}
const total = [...perFile.values()].reduce((a, b) => a + b.ms, 0);
console.log(`${perFile.size} files, ${entries.length} top-level suites and tests, ${(total / 60_000).toFixed(1)} min of test time (summed; files running at once overlap)`);
for (const [file, { ms, entries: n }] of [...perFile].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(count))) {
  console.log(`${(ms / 1000).toFixed(1).padStart(7)} s  ${file} (${n})`);
}
