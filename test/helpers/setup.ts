import { chmodSync, mkdtempSync } from 'node:fs';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseConfig, type Config } from '../../config/config.js';
import { fixture } from './paths.js';
import type { TestPostgres } from './postgres.js';

export const IMMICH_CONTAINERS = 'immich_server,immich_machine_learning,immich_postgres,immich_redis';

export const tempDir = (prefix: string) => mkdtemp(join(tmpdir(), `immich-backup-${prefix}-`));

/**
 * Makes a directory of this test file's own its TMPDIR (os.tmpdir() and every child it starts
 * read it), so a test that counts what is left in the temporary directory counts only what this
 * file made, not another file's running at the same time. Sticky and open to all like /tmp: the
 * PostgreSQL user and the drill's unprivileged user work in it too.
 */
export function useOwnTmpdir(): string {
  // A short name: a PostgreSQL socket path below it (the fixture docker's throwaways nest three
  // folders deep) must stay within the 107 bytes a Unix socket's path may have.
  const dir = mkdtempSync(join(tmpdir(), 'ibt-'));
  chmodSync(dir, 0o1777);
  process.env.TMPDIR = dir;
  return dir;
}

/** Runs `work` with `dir` as TMPDIR (what it makes there, no other test file does), then puts TMPDIR back. */
export async function inTmpdir<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  try {
    return await work();
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
}

/** Raw config (what a YAML file holds) for a test: the fixture docker, a temporary staging dir. */
export function rawTestConfig(options: { backupDir: string; address?: string; taskQueue?: string; extra?: Record<string, Record<string, unknown>> }): Record<string, Record<string, unknown>> {
  const raw: Record<string, Record<string, unknown>> = {
    temporal: {
      ...(options.address ? { address: options.address } : {}),
      // On the run's shared dev server, the file's own namespace (startTestTemporal sets it).
      ...(process.env.IMMICH_BACKUP_TEMPORAL_NAMESPACE ? { namespace: process.env.IMMICH_BACKUP_TEMPORAL_NAMESPACE } : {}),
      taskQueue: options.taskQueue ?? `test-${process.pid}-${Date.now()}`,
    },
    postgres: { runtime: 'docker' },
    docker: { command: fixture('docker') },
    backup: { dir: options.backupDir },
    // The worker's key: beside the staging dir, never in it.
    security: { keyFile: `${options.backupDir.replace(/\/+$/, '')}.key` },
    // The drill touches the NAS only in a test that put a copy there (test/workflows/drill-offsite.test.ts).
    drill: { offsiteCopy: false },
    log: { level: 'warn' },
  };
  for (const [section, values] of Object.entries(options.extra ?? {})) raw[section] = { ...raw[section], ...values };
  return raw;
}

export function testConfig(options: Parameters<typeof rawTestConfig>[0]): Config {
  return parseConfig(rawTestConfig(options));
}

export async function writeConfigFile(dir: string, raw: unknown): Promise<string> {
  const path = join(dir, 'immich-backup.yml');
  await writeFile(path, stringify(raw));
  return path;
}

/** The environment the fixture docker and the host tools need to reach the test PostgreSQL. */
export function fixtureEnv(pg: TestPostgres, extra: Record<string, string> = {}): Record<string, string> {
  return { ...pg.env, FIXTURE_DOCKER_CONTAINERS: IMMICH_CONTAINERS, ...extra };
}

export async function listDir(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}
