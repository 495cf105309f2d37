import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { execa } from 'execa';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/setup.js';

// Problem 7 of issue 16: every `npm start` ran scripts/setup.sh's provisioning checks again, and
// the first one compiled for half a minute without a word. The script runs here on a copy of the
// project (its own dist/, never this checkout's), with `bash -x` showing which checks ran.

let project = '';

before(async () => {
  project = await tempDir('setup-script');
  // Every folder the build compiles (tsconfig's include), and what set-up reads.
  const { include } = JSON.parse(await readFile(join(repoRoot, 'tsconfig.json'), 'utf8')) as { include: string[] };
  for (const entry of [...include, 'scripts', 'eslint.config.js', 'tsconfig.json', 'package.json', 'package-lock.json']) {
    await cp(join(repoRoot, entry), join(project, entry), { recursive: true });
  }
  // node_modules as a folder of links into this checkout's (a fresh lockfile stamp inside, so no
  // `npm ci` runs: it would empty the folder, never the packages it links to); .venv likewise.
  const modules = join(project, 'node_modules');
  await mkdir(modules);
  for (const entry of await readdir(join(repoRoot, 'node_modules'))) {
    if (entry !== '.package-lock.json') await symlink(join(repoRoot, 'node_modules', entry), join(modules, entry));
  }
  await writeFile(join(modules, '.package-lock.json'), '{}\n');
  await symlink(join(repoRoot, '.venv'), join(project, '.venv'));
  // This checkout's build, copied after the sources so it is newer: the one build below is the rebuild.
  await cp(join(repoRoot, 'dist'), join(project, 'dist'), { recursive: true });
  // Without this checkout's own set-up stamps (an `npm start` here leaves one): the copy's first run is a first run.
  for (const stamp of (await readdir(join(project, 'dist'))).filter((f) => f.startsWith('.setup-'))) await rm(join(project, 'dist', stamp));
});


/** `bash -x scripts/setup.sh runtime` in the copy: its exit code, its messages and the commands it ran. */
async function setup(): Promise<{ exitCode: number | undefined; messages: string[]; trace: string[] }> {
  const r = await execa('bash', ['-x', 'scripts/setup.sh', 'runtime'], { cwd: project, reject: false, timeout: 240_000 });
  const lines = r.stderr.split('\n');
  return { exitCode: r.exitCode, messages: lines.filter((l) => l.startsWith('setup: ')), trace: lines.filter((l) => l.startsWith('+')) };
}

const ranChecks = (trace: string[]) => trace.some((l) => /command -v pigz/.test(l));

describe('scripts/setup.sh', () => {
  test('the first run checks what is installed and leaves a stamp', async () => {
    const first = await setup();
    assert.equal(first.exitCode, 0, first.messages.join('\n'));
    assert.ok(ranChecks(first.trace), 'the OS packages were checked');
    assert.ok(existsSync(join(project, 'dist', '.setup-runtime')));
  });

  test('a second run with nothing changed skips the checks and the build', async () => {
    const second = await setup();
    assert.equal(second.exitCode, 0);
    assert.ok(!ranChecks(second.trace), `no package was looked up: ${second.trace.join('\n')}`);
    assert.ok(!second.trace.some((l) => l.includes('scripts/build.sh')), 'nothing was built');
    assert.deepEqual(second.messages, []);
  });

  test('after a source changed, it says it is compiling and rebuilds, still skipping the checks', async () => {
    const later = new Date(Date.now() + 5_000);
    await utimes(join(project, 'core', 'format.ts'), later, later);
    const third = await setup();
    assert.equal(third.exitCode, 0);
    assert.ok(!ranChecks(third.trace));
    assert.deepEqual(third.messages, ['setup: compiling into dist/ (tsc, then the workflow bundle; about half a minute) ...']);
    assert.ok(existsSync(join(project, 'dist', 'cli', 'cli.js')) && existsSync(join(project, 'dist', 'workflow-bundle.js')));
    assert.ok(existsSync(join(project, 'dist', '.setup-runtime')), 'the stamp survives the rebuild');
  });
});
