import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

// The fault matrix: every fault test records the fault it injected and the outcome it measured;
// scripts/test.sh prints the table after the run (print-fault-matrix.ts).

export const FAULT_MATRIX_FILE = process.env.FAULT_MATRIX_FILE ?? join(repoRoot, 'dist', 'fault-matrix.jsonl');

export async function recordFault(fault: string, outcome: string): Promise<void> {
  await appendFile(FAULT_MATRIX_FILE, JSON.stringify({ fault, outcome }) + '\n');
}

export async function readFaults(): Promise<Array<{ fault: string; outcome: string }>> {
  const text = await readFile(FAULT_MATRIX_FILE, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { fault: string; outcome: string });
}
