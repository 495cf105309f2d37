import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ESLint } from 'eslint';
import { repoRoot } from '../helpers/paths.js';

// The repository's own eslint.config.js, on files planted in the real source folders (typed linting
// needs them inside the project), all linted in one pass and removed afterwards.

const tag = `planted-${process.pid}`;
const planted = {
  workflowNodeFs: [`workflows/${tag}-node-fs.ts`, "import { readFileSync } from 'node:fs';\nexport const read = readFileSync;\n"],
  workflowBareModules: [
    `workflows/${tag}-bare.ts`,
    "import { join } from 'path';\nimport { execa } from 'execa';\nimport pino from 'pino';\nimport { createActivities } from '../activities/index.js';\nexport const all = [join, execa, pino, createActivities];\n",
  ],
  workflowTypeImport: [
    `workflows/${tag}-type-import.ts`,
    "import type { Activities } from '../activities/index.js';\nimport { proxyActivities } from '@temporalio/workflow';\nexport const acts = proxyActivities<Activities>({ startToCloseTimeout: '1 minute' });\n",
  ],
  workflowRetryList: [
    `workflows/${tag}-retry-list.ts`,
    "import { ApplicationFailure } from '@temporalio/workflow';\nexport const retry = { nonRetryableErrorTypes: ['ConfigError'] };\nexport const fail = () => ApplicationFailure.nonRetryable('x', 'ConfigError');\n",
  ],
  floatingPromise: [`cli/${tag}-floating.ts`, "async function save(): Promise<void> {}\nexport function run(): void {\n  save();\n}\n"],
  voidedPromise: [`cli/${tag}-voided.ts`, "async function save(): Promise<void> {}\nexport function run(): void {\n  void save(); // best effort: a failure is logged by save itself\n}\n"],
  execaOutsideRunner: [`activities/${tag}-execa.ts`, "import { execa } from 'execa';\nexport const run = () => execa('true');\n"],
  plainError: [`cli/${tag}-plain-error.ts`, "export function check(ok: boolean): void {\n  if (!ok) throw new Error('bad');\n}\n"],
  coreImportsUp: [`core/${tag}-up.ts`, "import type { Config } from '../config/config.js';\nimport { openDumpStore } from '../adapters/dump-store/index.js';\nexport const f = (c: Config) => openDumpStore(c).list();\n"],
  coreNodeFs: [`core/${tag}-node-fs.ts`, "import { readFileSync } from 'node:fs';\nexport const read = readFileSync;\n"],
  adapterImportsActivity: [`adapters/files/${tag}-up.ts`, "import { createActivities } from '../../activities/index.js';\nexport const a = createActivities;\n"],
  temporalImportsCli: [`temporal/${tag}-up.ts`, "import * as cli from '../cli/cli.js';\nexport const c = cli;\n"],
  activityImportsDown: [`activities/${tag}-down.ts`, "import { runCommand } from '../adapters/commands/run-command.js';\nimport { connectClient } from '../temporal/client.js';\nimport { ConfigError } from '../core/errors.js';\nexport const all = [runCommand, connectClient, ConfigError];\n"],
} as const;
type Name = keyof typeof planted;

const results = new Map<Name, ESLint.LintResult>();

/** The rule ids the linter reported for one planted file. */
const rules = (name: Name) => (results.get(name)?.messages ?? []).map((m) => m.ruleId ?? `fatal: ${m.message}`);

describe('the linter (eslint.config.js)', () => {
  before(async () => {
    await Promise.all(Object.values(planted).map(([path, text]) => writeFile(join(repoRoot, path), text)));
    try {
      const eslint = new ESLint({ cwd: repoRoot });
      const linted = await eslint.lintFiles(Object.values(planted).map(([path]) => path));
      for (const [name, [path]] of Object.entries(planted) as [Name, readonly [string, string]][]) {
        const result = linted.find((r) => r.filePath === join(repoRoot, path));
        if (result) results.set(name, result);
      }
    } finally {
      await Promise.all(Object.values(planted).map(([path]) => rm(join(repoRoot, path), { force: true })));
    }
  });
  after(() => results.clear());

  test('rejects a workflow file that imports node:fs', () => {
    assert.deepEqual(rules('workflowNodeFs'), ['@typescript-eslint/no-restricted-imports']);
  });

  test('rejects bare Node built-ins, execa, pino and a value import from activities in a workflow file', () => {
    // execa also breaks the rule for all production code: the one runner.
    assert.deepEqual(rules('workflowBareModules').sort(), [...Array(4).fill('@typescript-eslint/no-restricted-imports'), 'no-restricted-imports']);
  });

  test('lets a workflow file take types from activities', () => {
    assert.deepEqual(rules('workflowTypeImport'), []);
  });

  test('rejects a hand-written list of non-retryable types and ApplicationFailure.nonRetryable in workflow code', () => {
    assert.deepEqual(rules('workflowRetryList'), ['no-restricted-syntax', 'no-restricted-syntax']);
  });

  test('rejects a floating promise and accepts one marked with void', () => {
    assert.deepEqual(rules('floatingPromise'), ['@typescript-eslint/no-floating-promises']);
    assert.deepEqual(rules('voidedPromise'), []);
  });

  test('rejects execa imported anywhere but the one runner', () => {
    assert.deepEqual(rules('execaOutsideRunner'), ['no-restricted-imports']);
  });

  test('rejects an import that points up a layer: core to config or adapters, adapters to activities, temporal to the CLI', () => {
    assert.deepEqual(rules('coreImportsUp'), ['@typescript-eslint/no-restricted-imports', '@typescript-eslint/no-restricted-imports']);
    assert.deepEqual(rules('adapterImportsActivity'), ['@typescript-eslint/no-restricted-imports']);
    assert.deepEqual(rules('temporalImportsCli'), ['@typescript-eslint/no-restricted-imports']);
  });

  test('rejects a Node built-in in core/, which the workflows import', () => {
    assert.deepEqual(rules('coreNodeFs'), ['@typescript-eslint/no-restricted-imports']);
  });

  test('lets an activity import the adapters, the Temporal layer and core', () => {
    assert.deepEqual(rules('activityImportsDown'), []);
  });

  test('rejects a plain Error thrown in production code', () => {
    assert.deepEqual(rules('plainError'), ['no-restricted-syntax']);
  });
});
