import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/setup.js';

// scripts/test.sh itself, run for real on two planted test files: one that passes and records a
// fault-matrix row, one that never ends, under a time bound of a few seconds.

describe('scripts/test.sh', () => {
  test('when its time bound stops the runner, it still prints the counts and the fault matrix and exits with the runner\'s code', async () => {
    const dir = await tempDir('test-script');
    const faultMatrix = pathToFileURL(join(repoRoot, 'dist', 'test', 'helpers', 'fault-matrix.js')).href;
    await writeFile(
      join(dir, 'a-passes.test.mjs'),
      `import { test } from 'node:test';\nimport { recordFault } from '${faultMatrix}';\n` +
        `test('passes and records a fault', () => recordFault('a planted fault', 'its planted outcome'));\n` +
        `test('passes too', () => {});\n`,
    );
    await writeFile(join(dir, 'b-hangs.test.mjs'), `import { test } from 'node:test';\ntest('never ends', () => new Promise(() => setInterval(() => {}, 1000)));\n`);
    // Without the runner's NODE_TEST_CONTEXT: the script's runner is a run of its own, not a child of this one.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const r = await execa('bash', [join(repoRoot, 'scripts', 'test.sh')], {
      extendEnv: false,
      env: {
        ...env,
        TEST_SETUP: 'skip',
        TEST_FILES: `${join(dir, 'a-passes.test.mjs')} ${join(dir, 'b-hangs.test.mjs')}`,
        TEST_TIME_BOUND: '8s',
        FAULT_MATRIX_FILE: join(dir, 'fault-matrix.jsonl'),
      },
      reject: false,
      timeout: 120_000,
    });
    assert.equal(r.exitCode, 124, `exit code of timeout(1) for the runner; stderr: ${r.stderr}`);
    assert.match(r.stdout, /^2 passed, 0 failed, 0 skipped$/m, r.stdout);
    assert.match(r.stdout, /^Fault matrix \(1 rows, each measured by a test in this run\):$/m);
    assert.match(r.stdout, /^\| a planted fault \| its planted outcome \|$/m);
    assert.match(r.stderr, /^the run was stopped at its time bound \(8s, exit 124\) before the runner's summary: the counts are of the results written until then$/m);
  });
});
