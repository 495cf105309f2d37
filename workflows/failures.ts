import { ApplicationFailure } from '@temporalio/workflow';
import { isRetryable } from '../core/errors.js';

/**
 * A workflow's own failure of type `type` (an error class of core/errors.ts, or its name): whether
 * it is retryable comes from NON_RETRYABLE there, never from the throw site.
 */
export function failWith(type: { name: string } | string, message: string, details?: unknown[]): ApplicationFailure {
  const name = typeof type === 'string' ? type : type.name;
  // eslint-disable-next-line no-restricted-syntax -- the one place a failure's retryability is set, from core/errors.ts
  return ApplicationFailure.create({ type: name, message, nonRetryable: !isRetryable(name), ...(details ? { details } : {}) });
}
