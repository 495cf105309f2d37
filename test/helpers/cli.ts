import { execa, type ResultPromise } from 'execa';
import { join } from 'node:path';
import { waitFor } from './net.js';
import { cliPath, repoRoot } from './paths.js';

/** The environment a CLI process gets: ours, plus the project's .venv/bin (the temporal binary) on PATH. */
export function cliEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...(process.env as Record<string, string>), PATH: `${join(repoRoot, '.venv', 'bin')}:${process.env.PATH}`, ...extra };
}

/** Runs `immich-backup ARGS...` to completion (the built executable, as its shebang runs it); never rejects, the test reads the exit code. */
export function cli(args: string[], extra: Record<string, string> = {}) {
  return execa(cliPath, args, { env: cliEnv(extra), extendEnv: false, reject: false, stripFinalNewline: false, timeout: 120_000 });
}

/** Starts a long-running `immich-backup` command (start, worker), collecting its output. */
export function spawnCli(args: string[], extra: Record<string, string> = {}): { process: ResultPromise; stdout: () => string; stderr: () => string } {
  const child = execa(cliPath, args, { env: cliEnv(extra), extendEnv: false, reject: false, buffer: false, stdin: 'ignore' });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return { process: child, stdout: () => out, stderr: () => err };
}

/** Waits until a spawned `worker` or `start` process logs that its worker runs. */
export function workerStarted(spawned: { stdout: () => string }): Promise<true> {
  return waitFor('the worker to start', () => (spawned.stdout().includes('"msg":"worker started"') ? true : undefined), 60_000);
}
