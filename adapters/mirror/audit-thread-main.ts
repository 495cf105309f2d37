import { parentPort } from 'node:worker_threads';
import { auditSlice, type SliceParams } from './audit-pass.js';
import type { ThreadMessage } from './audit-thread.js';

// The worker thread LibraryAudit's pass runs in (see auditThread): started (its modules loaded)
// while the activity reads the database, it waits for a 'start' message with the pass's
// parameters, posts every commit, then the final state, or the error by name and message; a
// 'cancel' message stops its commands.

const controller = new AbortController();
const post = (m: ThreadMessage) => parentPort!.postMessage(m);
parentPort!.on('message', (m: { type: 'cancel' } | { type: 'start'; params: SliceParams }) => {
  if (m.type === 'cancel') controller.abort(new Error('the audit was cancelled'));
  else if (m.type === 'start') {
    auditSlice(m.params, post, controller.signal).then(
      (result) => post({ type: 'done', ...result }),
      (err: unknown) => post({ type: 'error', name: (err as Error).name ?? 'Error', message: (err as Error).message ?? String(err) }),
    ).finally(() => parentPort!.close());
  }
});
