import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Worker } from '@temporalio/worker';
import { createLogger } from '../../config/logger.js';
import * as workflows from '../../workflows/index.js';
import * as patches from '../../workflows/patches.js';
import { installRuntime } from '../../workers/runtime.js';
import { repoRoot } from '../helpers/paths.js';
import { HISTORIES_DIR, historyFromJson } from './history-json.js';

// Every recorded history (scripts/record-histories.sh) replayed on the workflow code the worker
// runs: a change that alters a run's commands without patched() fails here with a nondeterminism
// error, before a deploy replays open runs (an approval waits an hour, a mirror up to a day).
// docs/workflow-versioning.md says when to record and which histories to keep.

const BUNDLE = join(repoRoot, 'dist', 'workflow-bundle.js');
const files = readdirSync(HISTORIES_DIR).filter((f) => f.endsWith('.json')).sort();
const load = (file: string) => historyFromJson(JSON.parse(readFileSync(join(HISTORIES_DIR, file), 'utf8')));
/** replay-<kind>[.before-<patch>].json: the run's workflow ID, then which patch it predates. */
const workflowIdOf = (file: string) => file.split('.')[0]!;
const typeOf = (file: string) => load(file).events![0]!.workflowExecutionStartedEventAttributes?.workflowType?.name;
/** The patch a .before-<patch>.json history predates. */
const predates = (file: string) => /\.before-([a-z0-9-]+)\.json$/.exec(file)?.[1];
/** The patch IDs a run recorded (its patched() calls that took the new branch). */
const patchesOf = (file: string) =>
  (load(file).events ?? []).flatMap((e) => {
    const marker = e.markerRecordedEventAttributes;
    if (marker?.markerName !== 'core_patch') return [];
    const data = marker.details?.['patch-data']?.payloads?.[0]?.data;
    return data ? [(JSON.parse(Buffer.from(data).toString('utf8')) as { id: string }).id] : [];
  });

installRuntime(createLogger({ level: 'warn', fd: 2 }));

describe('replay of recorded histories', () => {
  test('the workflow bundle is at least as new as the compiled workflow code (scripts/build.sh writes both)', () => {
    const dir = join(repoRoot, 'dist', 'workflows');
    const newest = Math.max(...readdirSync(dir).filter((f) => f.endsWith('.js')).map((f) => statSync(join(dir, f)).mtimeMs));
    assert.ok(statSync(BUNDLE).mtimeMs >= newest, `${BUNDLE} is older than dist/workflows: run bash scripts/build.sh`);
  });

  test('every workflow the worker registers has at least one recorded history', () => {
    const registered = Object.entries(workflows).filter(([, v]) => typeof v === 'function').map(([name]) => name).sort();
    const recorded = new Set(files.map(typeOf));
    assert.deepEqual(registered.filter((name) => !recorded.has(name)), [], `recorded: ${[...recorded].join(', ')}`);
  });

  test('every patch has both branches replayed: a history that recorded it, and a .before-<patch> history that did not', () => {
    const ids: string[] = Object.values(patches);
    for (const file of files.filter(predates)) {
      assert.ok(ids.includes(predates(file)!), `${file}: no patch ${predates(file)} in workflows/patches.ts`);
      assert.ok(!patchesOf(file).includes(predates(file)!), `${file} recorded ${predates(file)}: it does not replay the branch without it`);
    }
    for (const id of ids) {
      assert.ok(files.some((f) => patchesOf(f).includes(id)), `no history recorded ${id}`);
      assert.ok(files.some((f) => predates(f) === id), `no .before-${id}.json history`);
    }
  });

  for (const file of files) {
    test(`${file} replays on the current workflow bundle without a nondeterminism error`, async () => {
      await Worker.runReplayHistory({ workflowBundle: { codePath: BUNDLE } }, load(file), workflowIdOf(file));
    });
  }
});
