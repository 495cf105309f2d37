import { parentPort, workerData } from 'node:worker_threads';
import type { ThreadMessage } from './library-audit.js';
import { auditSlice, type SliceParams } from './library-audit-slice.js';

// The worker thread LibraryAudit's pass runs in (see auditInThread): it posts every commit, then
// the final state, or the error by name and message; a 'cancel' message stops its commands.

const controller = new AbortController();
parentPort!.on('message', (m: { type: string }) => {
  if (m.type === 'cancel') controller.abort(new Error('the audit was cancelled'));
});
const post = (m: ThreadMessage) => parentPort!.postMessage(m);
try {
  const result = await auditSlice(workerData as SliceParams, post, controller.signal);
  post({ type: 'done', ...result });
} catch (err) {
  post({ type: 'error', name: (err as Error).name ?? 'Error', message: (err as Error).message ?? String(err) });
}
parentPort!.close();
