import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot } from '../helpers/paths.js';

// Where each concept lives, read from the sources themselves: what issue 24 moved into one place
// stays there. The linter (eslint.config.js) keeps the layers pointing down; this keeps the folders
// inside a layer from leaning on each other, and the concepts from spreading again.

/** Every .ts file under `dir` (relative to the repository), recursively. */
function sources(dir: string): string[] {
  const full = join(repoRoot, dir);
  return readdirSync(full).flatMap((name) => {
    const path = join(full, name);
    if (statSync(path).isDirectory()) return sources(relative(repoRoot, path));
    return name.endsWith('.ts') ? [relative(repoRoot, path)] : [];
  });
}
const read = (file: string) => readFileSync(join(repoRoot, file), 'utf8');
/** The relative module paths a file imports (static imports and re-exports). */
const imports = (file: string) => [...read(file).matchAll(/^(?:import|export)\b[^;]*?from '(\.[^']+)'/gms)].map((m) => m[1]!);
const PRODUCTION = ['core', 'config', 'adapters', 'temporal', 'status', 'activities', 'workflows', 'workers', 'cli'];

describe('one concept, one place', () => {
  test('adapter folders import each other without a cycle (files/ and postgres/ used to import each other)', () => {
    const edges = new Map<string, Set<string>>();
    for (const file of sources('adapters')) {
      const from = file.split('/')[1]!;
      for (const spec of imports(file)) {
        const to = join(file, '..', spec).split('/');
        if (to[0] === 'adapters' && to[1] !== from) (edges.get(from) ?? edges.set(from, new Set()).get(from)!).add(to[1]!);
      }
    }
    const cycle = (start: string): string[] | undefined => {
      const walk = (at: string, path: string[]): string[] | undefined => {
        for (const next of edges.get(at) ?? []) {
          if (next === start) return [...path, next];
          if (!path.includes(next)) {
            const found = walk(next, [...path, next]);
            if (found) return found;
          }
        }
        return undefined;
      };
      return walk(start, [start]);
    };
    for (const folder of edges.keys()) assert.equal(cycle(folder)?.join(' → '), undefined);
  });

  test('the worker key is read, and dumps are tagged and verified, only in adapters/dump-store (activities, status and workflows go through the store)', () => {
    const trustPrimitives = /\b(readKey|ensureKey|tagDump|verifyDumpTag|tagRows|dumpTag|rowsTag)\(/;
    const outside = PRODUCTION.flatMap(sources).filter((f) => !f.startsWith('adapters/dump-store/') && !f.startsWith('adapters/run-auth/') && !f.startsWith('cli/'));
    assert.deepEqual(outside.filter((f) => trustPrimitives.test(read(f))), []);
    // The primitives are defined in one folder.
    const defines = PRODUCTION.flatMap(sources).filter((f) => /^export (async )?function (readKey|ensureKey|tagDump|verifyDumpTag)\b/m.test(read(f)));
    assert.ok(defines.length > 0 && defines.every((f) => f.startsWith('adapters/dump-store/')), defines.join(', '));
  });

  test('activities import no other activity module (only index.ts gathers them): shared logic lives in adapters', () => {
    const crossing = sources('activities')
      .filter((f) => f !== 'activities/index.ts')
      .flatMap((f) => imports(f).filter((s) => s.startsWith('./') && s !== './deps.js').map((s) => `${f} → ${s}`));
    assert.deepEqual(crossing, []);
  });

  test("a command's exit code is read from CommandFailedError.exitCode, never matched in its message text", () => {
    const matching = PRODUCTION.flatMap(sources).filter((f) => /\\\(exit code( \d+|\b)/.test(read(f)));
    assert.deepEqual(matching, []);
  });

  test('cli/cli.ts is the program only: every command is defined in a command group under cli/commands/', () => {
    assert.doesNotMatch(read('cli/cli.ts'), /\.command\(/);
    assert.ok(sources('cli/commands').length >= 5);
  });

  test('every patched() ID is defined in workflows/patches.ts and imported from there', () => {
    const definedElsewhere = sources('workflows').filter((f) => f !== 'workflows/patches.ts' && /export const \w+_PATCH\b/.test(read(f)));
    assert.deepEqual(definedElsewhere, []);
    for (const f of sources('workflows').filter((w) => w !== 'workflows/patches.ts' && /\bpatched\(/.test(read(w)))) {
      assert.ok(imports(f).includes('./patches.js'), `${f} calls patched() without importing its ID from ./patches.js`);
    }
  });

  test('no hand-written cryptography: no source holds SHA-256 round constants', () => {
    assert.deepEqual(PRODUCTION.flatMap(sources).filter((f) => /0x428a2f98/i.test(read(f))), []);
  });

  test("tests look at their own processes and sockets only: no pgrep and no /proc/net/tcp outside test/helpers/processes.ts", () => {
    const machineWide = sources('test').filter((f) => f !== 'test/helpers/processes.ts' && f !== 'test/unit/structure.test.ts' && /['"]pgrep['"]|\/proc\/net\/tcp/.test(read(f)));
    assert.deepEqual(machineWide, []);
  });
});
