import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Context } from '@temporalio/activity';
import { UnauthorizedError } from '../../core/errors.js';

/** How long a run's grant lasts: a restore waits for approval and for its lock well within a day. */
export const GRANT_TTL_MS = 24 * 3_600_000;

const grantsDir = (keyFile: string) => join(dirname(keyFile), 'grants');

/**
 * What authorizeRun leaves for the run it authorized (beside the key, where no workflow can
 * write): the destructive activities look for it under their own run ID, so a run that was never
 * authorized (a reset that replays another run's authorization, a workflow task answered by
 * someone else's code) cannot stop Immich, load a dump or delete from the library.
 */
export async function grantRun(keyFile: string, run: { workflowType: string; workflowId: string; runId: string }, nowMs = Date.now()): Promise<void> {
  const dir = grantsDir(keyFile);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const fh = await open(join(dir, run.runId), constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(JSON.stringify({ ...run, expires: nowMs + GRANT_TTL_MS }) + '\n');
  } finally {
    await fh.close();
  }
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (st && nowMs - st.mtimeMs > GRANT_TTL_MS) await rm(join(dir, name), { force: true });
  }
}

/** Throws UnauthorizedError unless authorizeRun granted this very run (and the grant has not expired). */
export async function requireGrant(keyFile: string, run: { workflowId: string; runId: string } | undefined, what: string, nowMs = Date.now()): Promise<void> {
  const refuse = (why: string) => new UnauthorizedError(`refusing to ${what}: ${why}; nothing was changed`);
  if (!run || !/^[A-Za-z0-9-]{1,64}$/.test(run.runId)) throw refuse('not called by an authorized run');
  const text = await readFile(join(grantsDir(keyFile), run.runId), 'utf8').catch(() => undefined);
  if (!text) throw refuse(`run ${run.runId} of ${run.workflowId} was never authorized (a reset of another run, or a workflow not started by the immich-backup CLI)`);
  const grant = JSON.parse(text) as { workflowId?: string; expires?: number };
  if (grant.workflowId !== run.workflowId) throw refuse(`the grant of run ${run.runId} is for ${String(grant.workflowId)}`);
  if (typeof grant.expires !== 'number' || grant.expires < nowMs) throw refuse(`the grant of run ${run.runId} expired`);
}

/** For the destructive activities: the calling run must hold a grant (see requireGrant). */
export async function requireAuthorizedRun(keyFile: string, what: string): Promise<void> {
  await requireGrant(keyFile, Context.current().info.workflowExecution, what);
}
