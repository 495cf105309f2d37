import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { UnauthorizedError } from '../../core/errors.js';
import { hmac, sameHex } from '../dump-store/key.js';
import { sha256Text } from '../../core/sha256-text.js';

// Who may restore: whoever can read the worker's key. Starting a destructive run (RestoreDatabase,
// RestoreLibrary, a mirror that deletes) needs a start token, and approving a restore an approval
// token; the CLI derives both from the key for the operator. Tokens land in workflow history,
// which anyone with Temporal access reads, so each is bound to its workflow, short-lived and
// single-use:
// - a start token names the workflow type, ID and input and expires after START_TOKEN_TTL_MS; the worker
//   records its nonce when it accepts it, so a copy from history is refused (even for the same ID);
// - an approval token is an HMAC of the workflow and run IDs. The run's first activity hands the
//   workflow only its sha256 (a commitment), so the approval's validator can check a token without
//   the key, and a decision is final, so a token seen in history approves nothing.

export const START_TOKEN_TTL_MS = 10 * 60_000;
const START = 'immich-backup start v1';
const APPROVE = 'immich-backup approve v1';

export interface StartTokenFor {
  workflowType: string;
  workflowId: string;
  /** The run's input (without `authorization` and `trigger`): the token is for exactly this. */
  input: unknown;
}

/** A value as one string whatever the order of its keys; `authorization` and `trigger` left out. */
export function canonicalInput(input: unknown): string {
  const sorted = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(sorted) : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])])) : v;
  const { authorization: _a, trigger: _t, ...rest } = (input && typeof input === 'object' ? input : {}) as Record<string, unknown>;
  return JSON.stringify(sorted(rest));
}

/** `v1.<expires ms>.<nonce>.<hmac>`: what the CLI puts in a destructive run's input. */
export function startToken(key: Buffer, { workflowType, workflowId, input }: StartTokenFor, nowMs = Date.now()): string {
  const expires = String(nowMs + START_TOKEN_TTL_MS);
  const nonce = randomBytes(16).toString('hex');
  return ['v1', expires, nonce, hmac(key, START, workflowType, workflowId, canonicalInput(input), expires, nonce)].join('.');
}

export function approvalToken(key: Buffer, workflowId: string, runId: string): string {
  return hmac(key, APPROVE, workflowId, runId);
}

/** What the workflow keeps: the sha256 of the approval token (history may show it; it approves nothing). */
export const approvalCommitment = (token: string) => sha256Text(token);

const usedDir = (keyFile: string) => join(dirname(keyFile), 'used-tokens');

/**
 * Checks a start token for this workflow and records its nonce (one file each, created
 * exclusively): a second run with the same token is refused; the same run (an activity retry) is
 * not. Throws UnauthorizedError with one line saying what to do.
 */
export async function acceptStartToken(key: Buffer, keyFile: string, token: unknown, run: StartTokenFor & { runId: string }, nowMs = Date.now()): Promise<void> {
  const how = `start it with the immich-backup CLI as the user that can read the worker's key (root)`;
  if (typeof token !== 'string' || !token) throw new UnauthorizedError(`${run.workflowType} ${run.workflowId} was started without an authorization token: nothing was changed; ${how}`);
  const [version, expires, nonce, mac, ...rest] = token.split('.');
  if (version !== 'v1' || !expires || !/^\d{1,15}$/.test(expires) || !nonce || !/^[0-9a-f]{32}$/.test(nonce) || !mac || rest.length) {
    throw new UnauthorizedError(`${run.workflowType} ${run.workflowId}: the authorization token is malformed: nothing was changed; ${how}`);
  }
  if (!sameHex(mac, hmac(key, START, run.workflowType, run.workflowId, canonicalInput(run.input), expires, nonce))) {
    throw new UnauthorizedError(`${run.workflowType} ${run.workflowId}: the authorization token does not verify (made for another workflow or other input, or with another key): nothing was changed; ${how}`);
  }
  if (Number(expires) < nowMs) throw new UnauthorizedError(`${run.workflowType} ${run.workflowId}: the authorization token expired ${Math.round((nowMs - Number(expires)) / 1000)} s ago: nothing was changed; ${how}`);
  const dir = usedDir(keyFile);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, nonce);
  try {
    const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(`${expires} ${run.runId}\n`);
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const [, usedBy] = (await readFile(path, 'utf8')).trim().split(' ');
    if (usedBy !== run.runId) throw new UnauthorizedError(`${run.workflowType} ${run.workflowId}: this authorization token was already used (by run ${usedBy}): nothing was changed; ${how}`);
  }
  await forgetExpired(dir, nowMs);
}

/** Used nonces are kept until their tokens expire (a day's slack): after that the token is refused anyway. */
async function forgetExpired(dir: string, nowMs: number): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (st && nowMs - st.mtimeMs > START_TOKEN_TTL_MS + 86_400_000) await rm(join(dir, name), { force: true });
  }
}

/** The OS user a CLI command runs as, with the sudo user behind it: what an approval records. */
export function osUser(env: NodeJS.ProcessEnv = process.env, name?: string): string {
  const user = name ?? (() => {
    try {
      return userInfo().username;
    } catch {
      return `uid ${process.getuid?.() ?? '?'}`;
    }
  })();
  const sudo = env.SUDO_USER && /^[A-Za-z0-9_.-]{1,64}$/.test(env.SUDO_USER) ? ` (sudo from ${env.SUDO_USER})` : '';
  return `${user}${sudo}`;
}
