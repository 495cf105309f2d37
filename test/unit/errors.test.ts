import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import * as errors from '../../core/errors.js';
import { failWith } from '../../workflows/failures.js';
import { repoRoot } from '../helpers/paths.js';

const classes = Object.values(errors as Record<string, unknown>).filter((v): v is new () => Error => typeof v === 'function' && v.prototype instanceof Error);

describe('which failures are retried', () => {
  test('every error class in core/errors.ts is declared retryable or not, exactly once, under its own name', () => {
    assert.ok(classes.length > 40, `found ${classes.length} classes`);
    for (const c of classes) {
      const lists = [errors.NON_RETRYABLE.includes(c.name), errors.RETRYABLE.includes(c.name)].filter(Boolean).length;
      assert.equal(lists, 1, `${c.name} is in ${lists} of NON_RETRYABLE and RETRYABLE`);
      assert.equal(new c().name, c.name, `${c.name}'s instances are named ${new c().name}`);
    }
  });

  test('nonRetryableExcept leaves out only the classes it names', () => {
    const list = errors.nonRetryableExcept(errors.ChecksumMismatchError);
    assert.equal(list.includes('ChecksumMismatchError'), false);
    assert.deepEqual(list, errors.NON_RETRYABLE.filter((n) => n !== 'ChecksumMismatchError'));
  });

  test("a workflow's own failure takes its retryability from the one list", () => {
    assert.equal(failWith(errors.RestoreFailedError, 'x').nonRetryable, true);
    assert.equal(failWith('StalledError', 'x').nonRetryable, true);
    assert.equal(failWith(errors.CommandFailedError, 'x').nonRetryable, false);
    assert.equal(failWith(errors.RestoreFailedError, 'x').type, 'RestoreFailedError');
  });

  test('every activity group with a retry policy builds its non-retryable types from the one list', async () => {
    const source = await readFile(join(repoRoot, 'workflows', 'activity-options.ts'), 'utf8');
    const lists = [...source.matchAll(/nonRetryableErrorTypes:\s*(needsOperator|nonRetryableExcept\([^)]*\)|[^,\n}]+)/g)].map((m) => m[1]!.trim());
    assert.ok(lists.length >= 10, `found ${lists.length} lists`);
    for (const list of lists) assert.match(list, /^(needsOperator|nonRetryableExcept\([A-Za-z, ]*\))$/);
    assert.match(source, /const needsOperator = \[\.\.\.NON_RETRYABLE\];/);
  });

  test('a dump that stalled or lost its container, and a NAS fetch that stalled, are tried again (as before the one list)', async () => {
    const source = await readFile(join(repoRoot, 'workflows', 'activity-options.ts'), 'utf8');
    const group = (name: string) => source.slice(source.indexOf(`export const ${name} =`), source.indexOf('});', source.indexOf(`export const ${name} =`)));
    assert.match(group('dumping'), /nonRetryableExcept\(DumpIncompleteError, StalledError, ContainerNotFoundError\)/);
    assert.match(group('restorePrep'), /nonRetryableExcept\(StalledError\)/);
  });
});
