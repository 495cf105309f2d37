import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';
import { redactDeep, redactSecrets } from '../core/redact.js';

// The one door between activities and workflow history: whatever an activity returns or throws
// (a library's error text quoting a URL, a report holding one) leaves without URL credentials.

function redactError(err: unknown, seen = new Set<unknown>()): void {
  if (!(err instanceof Error) || seen.has(err)) return;
  seen.add(err);
  err.message = redactSecrets(err.message);
  if (err.stack) err.stack = redactSecrets(err.stack);
  redactError(err.cause, seen);
}

const inbound: ActivityInboundCallsInterceptor = {
  async execute(input, next) {
    try {
      return redactDeep(await next(input));
    } catch (err) {
      redactError(err);
      throw err;
    }
  },
};

export const redactingActivityInterceptors: ActivityInterceptorsFactory = () => ({ inbound });
