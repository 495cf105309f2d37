import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { spawnCli, workerStarted } from './cli.js';
import { ownProcesses } from './processes.js';
import { writeConfigFile } from './setup.js';
import { tagWithTestKey } from './trust.js';

// What the transfer fault tests share: dumps to upload, and what they look at afterwards.

/** This file's ssh, scp and rsync processes still running against port (by their -p PORT argument), as "PID ARGS". */
export async function sshProcessesFor(port: number): Promise<string[]> {
  return (await ownProcesses())
    .map((p) => `${p.pid} ${p.cmdline}`)
    .filter((l) => /\b(ssh|scp|rsync)\b/.test(l) && new RegExp(`-[pP] ${port}\\b`).test(l));
}

export const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The dump `name` as the NAS holds it (`<name>.age`), decrypted with the identities of the keyring beside `keyFile`: what a restore reads. */
export async function decryptedOnNas(remoteDir: string, name: string, keyFile: string): Promise<Buffer> {
  const { stdout } = await execa('age', ['-d', '-i', `${keyFile}.age-identities`, join(remoteDir, `${name}.age`)], { encoding: 'buffer' });
  return Buffer.from(stdout);
}

/** A 2 MiB incompressible local dump with its .sha256 and tag. */
export async function bigDump(dir: string, stamp: string) {
  const name = `immich_${stamp}.sql.gz`;
  const body = randomBytes(2 * 1024 * 1024);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, name), body);
  await writeFile(join(dir, `${name}.sha256`), `${sha(body)}  ${name}\n`);
  await tagWithTestKey(dir, name, sha(body));
  return { name, body };
}

/** A worker process for `raw`, started and waited for. */
export async function worker(root: string, raw: Record<string, Record<string, unknown>>) {
  const w = spawnCli(['-c', await writeConfigFile(root, raw), 'worker']);
  await workerStarted(w);
  return w;
}

/** Files under dir whose names are rsync's or ours for an unfinished transfer. */
export async function unfinishedNames(dir: string): Promise<string[]> {
  const all = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return all.filter((p) => /(^|\/)\.[^/]+\.[A-Za-z0-9]{6}$/.test(p) || p.endsWith('.partial'));
}

/** Cleanup that cannot hold a test file past its time limit: gives up (saying so) after ms. */
export async function bounded(what: string, work: Promise<unknown>, ms = 20_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work.catch((err: Error) => process.stderr.write(`cleanup ${what} failed: ${err.message}\n`)),
    new Promise<void>((resolve) => (timer = setTimeout(() => (process.stderr.write(`cleanup ${what} still running after ${ms} ms: left to the test run's reaper\n`), resolve()), ms))),
  ]);
  clearTimeout(timer);
}
