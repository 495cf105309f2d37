// Production bundle of the workflow code: `npm run build` runs this after tsc, and the worker
// loads dist/workflow-bundle.js instead of running webpack at every start.
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode } from '@temporalio/worker';

const { code } = await bundleWorkflowCode({
  workflowsPath: fileURLToPath(new URL('../workflows/index.js', import.meta.url)),
  logger: { trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error, log() {} },
});
const out = fileURLToPath(new URL('../workflow-bundle.js', import.meta.url));
await writeFile(out, code);
console.log(`workflow bundle written: ${out} (${code.length} bytes)`);
