// `node dist/bench/sql-filter.js [MB]`: the restore filter's throughput next to the deny-list
// scanner it replaced (copied below, for comparison only), side by side in one run, over a
// generated pg_dump-shaped SQL text held in memory (no disk, no gzip: the filter alone).
import { StringDecoder } from 'node:string_decoder';
import { DumpFilter } from '../adapters/postgres/sql-stream.js';

const mb = Number(process.argv[2] ?? 256);

function generate(bytes: number): Buffer[] {
  const head = "SET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n\\connect immich\n";
  const block: string[] = ['CREATE TABLE public.assets (\n    id uuid NOT NULL,\n    "originalPath" text,\n    caption text\n);\n', 'COMMENT ON TABLE public.assets IS \'photos; and "videos"\';\n', 'COPY public.assets (id, "originalPath", caption) FROM stdin;\n'];
  for (let i = 0; i < 2000; i++) block.push(`0e3f${String(i).padStart(4, '0')}-aaaa-bbbb-cccc-1234567890ab\t/photos/2024/IMG_${i}.jpg\tA caption with a \\\\ backslash, a tab\\t and \\n newline ${i}\n`);
  block.push('\\.\n\n');
  const unit = Buffer.from(block.join(''));
  const chunks: Buffer[] = [Buffer.from(head)];
  const text = Buffer.concat(Array.from({ length: Math.ceil(bytes / unit.length) }, () => unit));
  for (let at = 0; at < text.length; at += 65536) chunks.push(text.subarray(at, at + 65536));
  return chunks;
}

/** The deny-list scanner this project used before the filter (kept here only to measure it). */
function oldScanner(chunks: Buffer[]): void {
  const COPY_FROM_STDIN = /^COPY\s.*\sFROM\s+stdin;\s*$/i;
  const COPY_PROGRAM = /^\s*COPY\b.*\bPROGRAM\b/i;
  const ALLOWED_META = /^\\(connect|restrict|unrestrict)\b/;
  const decoder = new StringDecoder('utf8');
  let rest = '';
  let inCopy = false;
  let tail = '';
  const onLine = (line: string) => {
    if (inCopy) {
      if (line === '\\.') inCopy = false;
      return;
    }
    if (line.includes('\\!')) throw new Error('shell');
    if (COPY_PROGRAM.test(line)) throw new Error('program');
    if (line.startsWith('\\') && !ALLOWED_META.test(line)) throw new Error('meta');
    if (COPY_FROM_STDIN.test(line)) inCopy = true;
    tail = (tail + line + '\n').slice(-512);
  };
  for (const chunk of chunks) {
    const lines = (rest + decoder.write(chunk)).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  }
}

function newFilter(chunks: Buffer[]): void {
  const filter = new DumpFilter('bench.sql', { restoringRole: 'postgres' });
  for (const chunk of chunks) filter.push(chunk);
  filter.end();
}

const chunks = generate(mb * 1024 * 1024);
const size = chunks.reduce((n, c) => n + c.length, 0) / 1024 / 1024;
const time = (run: (c: Buffer[]) => void) => {
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = process.hrtime.bigint();
    run(chunks);
    runs.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  return runs.sort((a, b) => a - b)[1]!;
};
const before = time(oldScanner);
const after = time(newFilter);
console.log(`${size.toFixed(0)} MiB of pg_dump-shaped SQL, median of 3, one process:`);
console.log(`  old deny-list scanner: ${(size / before).toFixed(0)} MiB/s`);
console.log(`  DumpFilter (allow-list, restore rewrites on): ${(size / after).toFixed(0)} MiB/s`);
