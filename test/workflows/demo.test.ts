import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { cliEnv } from '../helpers/cli.js';
import { waitFor } from '../helpers/net.js';
import { repoRoot } from '../helpers/paths.js';

// Problem 7 of issue 16: `npm run demo` without a terminal removed everything right after printing
// the Web UI's address. With --keep it stays up until a signal, terminal or not.

describe('npm run demo without a terminal', () => {
  test('with --keep, the demo runs its steps, keeps the Web UI up until SIGTERM, then removes everything', async () => {
    const demo = execa('node', [join(repoRoot, 'dist', 'demo', 'run.js'), '--keep'], { env: cliEnv(), extendEnv: false, stdin: 'ignore', reject: false, buffer: false });
    let out = '';
    demo.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    demo.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    try {
      // The address it keeps up, or what it printed instead: a failure, or cleaning up at once.
      const uiUrl = await waitFor('the demo to finish its steps', () => /demo failed: .*|== cleaning up/.exec(out)?.[0] ?? /Everything stays up \(--keep\) until Ctrl-C or SIGTERM: (http:\/\/\S+)/.exec(out)?.[1], 240_000, 500);
      assert.match(uiUrl, /^http:/, out);
      // Still up a while later: nothing is removed behind the user's back.
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal((await fetch(uiUrl)).status, 200, 'the Web UI answers');
      assert.doesNotMatch(out, /cleaning up/);
      demo.kill('SIGTERM');
      const { exitCode } = await demo;
      assert.equal(exitCode, 0, out);
      assert.match(out, /== cleaning up\n.*removed the throwaway PostgreSQL, NAS, drive, dev server and files\n$/s);
      assert.ok(await fetch(uiUrl).then(() => false, () => true), 'the Web UI is gone');
    } finally {
      demo.kill('SIGKILL');
    }
  });
});
