import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { z } from 'zod';
import { configSchema, parseConfig } from '../../config/config.js';
import { repoRoot } from '../helpers/paths.js';

// The README is the operator's manual: its config table names every key the schema accepts, with
// the default the schema applies, and it points at nothing outside this repository.

const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');

/** Every leaf key of the schema (objects walked through their defaults, optionals and transforms). */
function leafKeys(schema: z.ZodType, path: string[] = []): string[] {
  let def = schema._zod.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; shape?: Record<string, z.ZodType> };
  while (def.innerType || (def.type === 'pipe' && def.in)) def = (def.innerType ?? def.in)!._zod.def as typeof def;
  if (def.type !== 'object' || !def.shape) return [path.join('.')];
  return Object.entries(def.shape).flatMap(([key, inner]) => leafKeys(inner, [...path, key]));
}

/** The config table's rows: each key its first cell names (`a.b` / `c` is a.b and a.c), with its default cell's part. */
function documentedKeys(): Map<string, string> {
  const section = readme.slice(readme.indexOf('\n## Configuration'), readme.indexOf('\n## ', readme.indexOf('\n## Configuration') + 1));
  const keys = new Map<string, string>();
  for (const row of section.split('\n').filter((l) => l.startsWith('| `'))) {
    const [keyCell = '', defaultCell = ''] = row.split(' | ').map((c) => c.replace(/^\| /, ''));
    const names = [...keyCell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    const defaults = defaultCell.split(' / ');
    let parent = '';
    names.forEach((name, i) => {
      const full = name.includes('.') ? name : `${parent}.${name}`;
      parent = full.slice(0, full.lastIndexOf('.'));
      keys.set(full, defaults.length === names.length ? defaults[i]! : defaultCell);
    });
  }
  return keys;
}

const covers = (documented: string, leaf: string) => leaf === documented || leaf.startsWith(`${documented}.`) || (documented.endsWith('.<workflow>') && leaf.startsWith(documented.replace('<workflow>', '')));

describe('the README', () => {
  test('its config table names every key of the config schema', () => {
    const documented = [...documentedKeys().keys()];
    const missing = leafKeys(configSchema).filter((leaf) => !documented.some((d) => covers(d, leaf)));
    assert.deepEqual(missing, [], 'keys the schema accepts that the README\'s table does not name');
  });

  test('its config table names no key the schema lacks', () => {
    const leaves = leafKeys(configSchema);
    assert.deepEqual([...documentedKeys().keys()].filter((d) => !leaves.some((leaf) => covers(d, leaf))), []);
  });

  test('each plain default in the table is the one the schema applies', () => {
    const defaults = parseConfig({}) as unknown as Record<string, Record<string, unknown>>;
    const wrong: string[] = [];
    for (const [key, cell] of documentedKeys()) {
      const value = key.split('.').reduce<unknown>((node, k) => (node as Record<string, unknown> | undefined)?.[k], defaults);
      // Numbers, booleans and plain words; paths (expanded with the home folder) and lists are read by people.
      if (typeof value === 'number' || typeof value === 'boolean' || (typeof value === 'string' && !value.startsWith('/') && key !== 'schedules.timeZone')) {
        if (!cell.includes(`\`${String(value)}\``)) wrong.push(`${key}: the schema's default is ${String(value)}, the table says ${cell}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  test('it links to nothing outside this repository, such as ../shared', () => {
    assert.deepEqual(readme.match(/\]\(\.\.\/[^)]*\)|\.\.\/shared\S*/g) ?? [], []);
  });

  test("it says that the worker's config is what runs", () => {
    assert.ok(/the worker's config is what runs/i.test(readme), 'the README says whose config runs');
  });

  test('its security model claims no more than holds: restrict mode is the boundary, the filter a second line that cannot see server-side code, which runs as the database server', () => {
    const model = readme.slice(readme.indexOf('## Security model'), readme.indexOf('\n## ', readme.indexOf('## Security model') + 1));
    assert.match(model, /restrict mode/);
    assert.match(model, /What no scan can see/);
    assert.match(model, /runs as the database server/);
    assert.match(model, /never reaches the host's root/);
    assert.doesNotMatch(model, /`DO`, `ALTER SYSTEM`, `pg_read_file` and the like are refused\.\n {2}Code hidden in a function body cannot be caught by scanning: provenance is the defence there/, 'the old claim that provenance covers it');
  });
});
