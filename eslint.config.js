// @ts-check
// `npm run lint` (and the first step of `npm test`): the rules a reviewer would otherwise repeat.
// Each block is path-based, so a folder's rules read off its `files`.
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The layers, bottom first: a file imports only from its own layer and the ones before it.
// workflows/ stands beside activities/: it may take types from activities/, values from core/ only.
const LAYERS = ['core', 'config', 'adapters', 'temporal', 'status', 'activities', 'workflows', 'workers', 'cli'];
const PRODUCTION = LAYERS.map((layer) => `${layer}/**/*.ts`);
const WORKFLOWS = ['workflows/**/*.ts'];
const RUNNER = 'adapters/commands/run-command.ts';
/** An import pattern for each layer above `layer`: what a file of that layer may not import. */
const above = (layer) =>
  LAYERS.slice(LAYERS.indexOf(layer) + 1).map((up) => ({
    regex: `(^|/)${up}/`,
    message: `${layer}/ is below ${up}/: every import points down (core, config, adapters, temporal, status, activities, workflows, workers, cli)`,
  }));

// Selectors for no-restricted-syntax. The rule's options are replaced, not merged, by a later
// block for the same files: the workflow block repeats NAMED_ERRORS.
const NAMED_ERRORS = [
  {
    selector: "ThrowStatement > NewExpression[callee.name='Error']",
    message: 'throw a named error class from core/errors.ts (its name is the Temporal failure type; listed in NON_RETRYABLE or RETRYABLE there)',
  },
  {
    selector: "CallExpression[callee.object.name='Promise'][callee.property.name='reject'] > NewExpression[callee.name='Error']",
    message: 'reject with a named error class from core/errors.ts',
  },
];
const ONE_RETRY_DECLARATION = [
  {
    selector: "Property[key.name='nonRetryableErrorTypes'] > ArrayExpression",
    message: 'build nonRetryableErrorTypes from NON_RETRYABLE / nonRetryableExcept (core/errors.ts): one declaration of what is not retried',
  },
  {
    selector: "MemberExpression[object.name='ApplicationFailure'][property.name='nonRetryable']",
    message: "fail with failWith(ErrorClass, message) from workflows/failures.ts: whether it is retryable comes from core/errors.ts",
  },
  {
    selector: "Property[key.name='nonRetryable']",
    message: "fail with failWith(ErrorClass, message) from workflows/failures.ts: whether it is retryable comes from core/errors.ts",
  },
];

const WORKFLOW_SAFE = 'workflow code is replayed in a sandbox: it imports only @temporalio/workflow, core/, and `import type` from activities';
const NODE_AND_IO = ['execa', 'pino', 'zod', '@temporalio/activity', '@temporalio/client', '@temporalio/worker'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.venv/**'] },
  { files: ['**/*.ts'], ...js.configs.recommended },
  // Turns off the recommended rules that TypeScript itself checks (no-undef, no-redeclare, ...).
  tseslint.configs.eslintRecommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's test()/describe() return promises the runner itself awaits.
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // tsc --noUnusedLocals checks this, knowing types; the JS rule counts type-only uses as unused.
      'no-unused-vars': 'off',
    },
  },
  {
    files: PRODUCTION,
    ignores: [RUNNER],
    rules: {
      'no-restricted-imports': ['error', { paths: [{ name: 'execa', message: `every subprocess goes through the one runner, ${RUNNER} (extend it if a call needs more)` }] }],
    },
  },
  {
    files: PRODUCTION,
    rules: { 'no-restricted-syntax': ['error', ...NAMED_ERRORS] },
  },
  // Layering: every layer but the workflows (below) and the CLI (the top) may not import upward.
  ...LAYERS.filter((layer) => !['workflows', 'cli'].includes(layer)).map((layer) => ({
    files: [`${layer}/**/*.ts`],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns: above(layer) }] },
  })),
  // core/ is bundled into the workflows: the same import ban as workflow code.
  {
    files: ['core/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [...builtinModules, ...NODE_AND_IO].map((name) => ({ name, message: `core/ is imported by workflows: ${WORKFLOW_SAFE}` })),
          patterns: [{ group: ['node:*'], message: `core/ is imported by workflows: ${WORKFLOW_SAFE}` }, ...above('core')],
        },
      ],
      'no-restricted-globals': ['error', { name: 'process', message: `core/ is imported by workflows: ${WORKFLOW_SAFE}` }],
    },
  },
  {
    files: WORKFLOWS,
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [
            ...builtinModules.map((name) => ({ name, message: `a Node built-in: ${WORKFLOW_SAFE}` })),
            ...NODE_AND_IO.map((name) => ({ name, message: WORKFLOW_SAFE })),
          ],
          patterns: [
            { group: ['node:*'], message: `a Node built-in: ${WORKFLOW_SAFE}` },
            { regex: '(^|/)activities/', allowTypeImports: true, message: WORKFLOW_SAFE },
            ...['config', 'adapters', 'temporal', 'status', 'workers', 'cli'].map((up) => ({ regex: `(^|/)${up}/`, message: WORKFLOW_SAFE })),
          ],
        },
      ],
      'no-restricted-globals': ['error', { name: 'process', message: `no process.env or process.*: ${WORKFLOW_SAFE}; read settings through an activity` }],
      'no-restricted-syntax': ['error', ...NAMED_ERRORS, ...ONE_RETRY_DECLARATION],
    },
  },
);
