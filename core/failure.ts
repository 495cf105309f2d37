// Pure (workflows import it): Temporal wraps failures (workflow → activity → application failure);
// an operator needs the innermost one, in one line.

export function innermostCause(err: unknown): unknown {
  let cause = err;
  while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
  return cause;
}

/** The innermost cause's message, first line only. */
export function innermostMessage(err: unknown): string {
  const cause = innermostCause(err);
  return ((cause instanceof Error ? cause.message : '') || String(err)).split('\n')[0] ?? '';
}
