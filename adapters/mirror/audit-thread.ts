import { Worker } from 'node:worker_threads';
import { Context } from '@temporalio/activity';
import type { AuditState } from './audit-state.js';
import type { SliceEvent, SliceParams } from './audit-pass.js';

// The pass runs in a worker thread with a small heap of its own: its garbage (a page of rows, a
// batch's file checks) is collected there, often, instead of growing the
// worker's main heap, whose collector lets it grow by tens of MiB between full collections.
const THREAD_LIMITS = { maxOldGenerationSizeMb: 24, maxYoungGenerationSizeMb: 2 };

export type ThreadMessage = SliceEvent | { type: 'done'; state: AuditState; mirrorOff: string | undefined } | { type: 'error'; name: string; message: string };

/**
 * A worker thread for auditSlice (audit-thread-main.ts), started now so that its modules load
 * while the activity reads the database; `run` hands it the pass, `onEvent` sees each commit, and
 * the activity's cancellation stops it (and kills its readers). `close` ends it, whether it ran or not.
 */
export function auditThread() {
  const thread = new Worker(new URL('./audit-thread-main.js', import.meta.url), { resourceLimits: THREAD_LIMITS, stdout: false, stderr: false });
  const signal = Context.current().cancellationSignal;
  const cancel = () => thread.postMessage({ type: 'cancel' });
  const exited = new Promise<number>((resolveExit) => thread.once('exit', resolveExit));
  const failed = new Promise<Error>((resolveError) => thread.once('error', resolveError));
  return {
    async run(params: SliceParams, onEvent: (e: SliceEvent) => void): Promise<{ state: AuditState; mirrorOff: string | undefined }> {
      signal.addEventListener('abort', cancel, { once: true });
      if (signal.aborted) cancel(); // cancelled while the database was read: the listener came too late
      try {
        return await new Promise((resolvePromise, reject) => {
          thread.on('message', (m: ThreadMessage) => {
            if (m.type === 'done') resolvePromise({ state: m.state, mirrorOff: m.mirrorOff });
            else if (m.type === 'error') reject(signal.aborted ? signal.reason : Object.assign(new Error(m.message), { name: m.name }));
            else onEvent(m);
          });
          void failed.then(reject);
          void exited.then((code) => reject(signal.aborted ? signal.reason : new Error(`the audit thread exited (code ${code}) before it finished`)));
          thread.postMessage({ type: 'start', params });
        });
      } finally {
        signal.removeEventListener('abort', cancel);
      }
    },
    close: () => thread.terminate(),
  };
}
