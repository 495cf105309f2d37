import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { parseConfig, type Config } from '../../config/config.js';
import { tagPlanted } from './trust.js';
import type { NightlyDbBackupReport, RestoreDatabaseReport } from '../../workflows/index.js';
import { waitFor } from './net.js';
import type { TestPostgres } from './postgres.js';
import { runWorkflow } from './run-workflow.js';
import { rawTestConfig, tempDir, writeConfigFile } from './setup.js';
import { spawnCli, workerStarted } from './cli.js';
import { useStack, type Stack } from './stack.js';

// The one stack every RestoreDatabase test file runs on: a real PostgreSQL with Immich-like data,
// real pg_dumpall/psql, a real Temporal dev server, a real sshd as the NAS, and a real HTTP server
// answering Immich's ping. The fixture docker stands in for the Docker CLI and records every stop
// and start in a log the tests read.

export interface RestoreStack extends Stack {
  /** restoreWorld on this stack. */
  world(extra?: Record<string, Record<string, unknown>>): ReturnType<typeof restoreWorld>;
  /** dockerCalls on this stack. */
  dockerCalls(): Promise<string[]>;
  /** changeData on this stack's PostgreSQL. */
  changeData(): Promise<string>;
}

/** useStack with what a restore needs; the returned object is filled in by `before`. */
export function useRestoreStack(assets = 800): RestoreStack {
  const stack = useStack({ postgres: assets, dockerEnv: true, dockerLog: true, sshd: true, ping: true }) as RestoreStack;
  stack.world = (extra = {}) => restoreWorld(stack, extra);
  stack.dockerCalls = () => dockerCalls(stack);
  stack.changeData = () => changeData(stack.pg);
  return stack;
}

/** A staging dir, NAS dir and Immich backups dir of its own, with a config pointing at the stack. */
export async function restoreWorld(stack: RestoreStack, extra: Record<string, Record<string, unknown>> = {}) {
  const root = await tempDir('restore');
  const backupDir = join(root, 'dumps');
  const immichBackups = join(root, 'immich-backups');
  await mkdir(immichBackups, { recursive: true });
  const raw = rawTestConfig({
    backupDir,
    address: stack.temporal.address,
    extra: {
      offsite: { ...stack.sshd.offsite, remoteDir: join(root, 'nas') },
      immich: { composeDir: root, pingUrl: stack.ping.url, healthTimeoutSeconds: 5, backupsDir: immichBackups },
      restore: { approvalTimeoutMinutes: 1 },
    },
  });
  for (const [k, v] of Object.entries(extra)) raw[k] = { ...raw[k], ...v };
  const config = parseConfig(raw);
  const backup = async () => {
    const { report, error } = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup');
    assert.equal(error, undefined, String(error));
    return report!;
  };
  const restore = (input: Record<string, unknown>, during?: (id: string) => Promise<void>) =>
    runWorkflow<RestoreDatabaseReport>(stack.client, stack.temporal.address, config, 'RestoreDatabase', during, input);
  return { root, backupDir, immichBackups, raw, config, backup, restore };
}

/**
 * A world with its config file, and a worker process for it (`workerEnv`: extra variables for the
 * worker, e.g. a broken docker; none: no worker). `extra` merges into the config as restoreWorld's.
 */
export async function operatorWorld(stack: RestoreStack, workerEnv?: Record<string, string>, extra: Record<string, Record<string, unknown>> = {}) {
  const w = await restoreWorld(stack, { log: { level: 'info' }, ...extra });
  const configFile = await writeConfigFile(w.root, w.raw);
  const worker = workerEnv ? spawnCli(['-c', configFile, 'worker'], workerEnv) : undefined;
  if (worker) await workerStarted(worker);
  const stop = async () => {
    if (!worker) return;
    worker.process.kill('SIGTERM');
    await worker.process;
  };
  return { ...w, configFile, worker, stop };
}

/** The stops and starts the fixture docker recorded: "stop <pid> …", "compose-up <pid> <dir>". */
export async function dockerCalls(stack: RestoreStack): Promise<string[]> {
  return existsSync(stack.dockerLog) ? (await readFile(stack.dockerLog, 'utf8')).split('\n').filter((l) => /^(stop|compose-up) /.test(l)) : [];
}

/** Deletes a year of assets and adds a user: the live database now differs from any backup. */
export function changeData(pg: TestPostgres): Promise<string> {
  return pg.psql(`DELETE FROM assets WHERE "originalPath" LIKE '%/2021/%'; INSERT INTO users SELECT md5(r)::uuid, r || '@example.com', 'X', now() FROM (SELECT random()::text AS r) s;`, 'immich');
}

/**
 * Rewrites a dump's SQL and its .sha256 (self-consistent, as anyone who can write a folder can
 * make it). With `sign`, also its provenance tag, made with that config's key: a dump this tool
 * vouches for, so that only the content checks behind provenance can object.
 */
export async function tamper(dir: string, file: string, edit: (sql: string) => string, newName = file, sign?: Config): Promise<void> {
  const sql = gunzipSync(await readFile(join(dir, file))).toString('utf8');
  const body = gzipSync(edit(sql));
  const sha256 = createHash('sha256').update(body).digest('hex');
  await writeFile(join(dir, newName), body);
  await writeFile(join(dir, `${newName}.sha256`), `${sha256}  ${newName}\n`);
  if (sign) await tagPlanted(sign, dir, newName, sha256);
}

/** The failure type and message of a failed run. */
export function failureType(error: unknown): { type: string | undefined; message: string } {
  const cause = applicationFailure(error);
  return { type: cause.type ?? undefined, message: cause.message };
}

/** The ApplicationFailure behind a failed run, through the activity failure that carried it. */
export function applicationFailure(error: unknown): ApplicationFailure {
  assert.ok(error instanceof WorkflowFailedError, `expected a failed run, got ${String(error)}`);
  let cause: unknown = error.cause;
  while (!(cause instanceof ApplicationFailure) && cause instanceof Error && cause.cause) cause = cause.cause;
  assert.ok(cause instanceof ApplicationFailure);
  return cause;
}

/** Waits until the run's currentStep is `step` (or satisfies it). */
export function stepReached(handle: WorkflowHandle, step: string | ((s: string) => boolean), timeoutMs = 60_000): Promise<string> {
  const ok = typeof step === 'string' ? (s: string) => s === step : step;
  return waitFor(`step ${String(step)}`, async () => {
    const current = await handle.query<string>('currentStep').catch(() => '');
    return ok(current) ? current : undefined;
  }, timeoutMs, 100);
}

/** The message of an update or query that was refused (the validator's words are the cause's). */
export function refusal(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
