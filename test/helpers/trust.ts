import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { approvalToken, startToken } from '../../adapters/run-auth/index.js';
import type { Config } from '../../config/config.js';
import { ensureKey } from '../../adapters/dump-store/key.js';
import { tagDump, tagRows } from '../../adapters/dump-store/tags.js';

// What the CLI does for an operator, for tests that talk to Temporal directly: tags a planted dump
// with the worker's key (as if this tool had written it), makes start tokens and approval tokens.

/** Tags a dump already in `dir` (and its row counts, when given) with the config's key. */
export async function tagPlanted(config: Config, dir: string, file: string, sha256: string, rowsText?: string): Promise<void> {
  const key = await ensureKey(config.security.keyFile);
  await tagDump(key, dir, file, sha256);
  if (rowsText !== undefined) await tagRows(key, dir, file, rowsText);
}

/** Writes a dump, its .sha256 and its tag into `dir`: what a validated backup of this tool leaves. */
export async function plantDump(config: Config, dir: string, file: string, body: Buffer | string, mode = 0o600): Promise<string> {
  const sha256 = createHash('sha256').update(body).digest('hex');
  await writeFile(join(dir, file), body, { mode });
  await writeFile(join(dir, `${file}.sha256`), `${sha256}  ${file}\n`, { mode });
  await tagPlanted(config, dir, file, sha256);
  return sha256;
}

export async function startTokenFor(config: Config, workflowType: string, workflowId: string, input: Record<string, unknown>): Promise<string> {
  return startToken(await ensureKey(config.security.keyFile), { workflowType, workflowId, input });
}

/** The approval (or rejection) fields the CLI adds: the run's token and the OS user. */
export async function decisionFields(config: Config, handle: WorkflowHandle): Promise<{ token: string; by: string }> {
  const { runId } = await handle.describe();
  return { token: approvalToken(await ensureKey(config.security.keyFile), handle.workflowId, runId), by: 'root' };
}

/** Starts a destructive workflow as the CLI would: with a start token bound to its ID. */
export async function startAuthorized(client: Client, config: Config, workflowType: string, workflowId: string, input: Record<string, unknown>): Promise<WorkflowHandle> {
  return client.workflow.start(workflowType, { taskQueue: config.temporal.taskQueue, workflowId, args: [{ ...input, authorization: await startTokenFor(config, workflowType, workflowId, input) }] });
}

/** Tags a dump with the key a test config made by rawTestConfig({ backupDir: dir }) uses (beside the dir). */
export async function tagWithTestKey(dir: string, file: string, sha256: string): Promise<void> {
  await tagDump(await ensureKey(`${dir.replace(/\/+$/, '')}.key`), dir, file, sha256);
}
