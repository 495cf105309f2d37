import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Worker } from '@temporalio/worker';
import { createLogger } from '../../config/logger.js';
import * as workflows from '../../workflows/index.js';
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

  for (const file of files) {
    test(`${file} replays on the current workflow bundle without a nondeterminism error`, async () => {
      await Worker.runReplayHistory({ workflowBundle: { codePath: BUNDLE } }, load(file), workflowIdOf(file));
    });
  }
});
