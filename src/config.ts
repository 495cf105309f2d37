import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors.js';

// Sections use prefault({}) so their defaults pass through the schema (paths get expanded).
// Every default is the runbook's (shared/runbook/immich-backup-restore.md) unless noted.

const expandHome = (p: string) => (p === '~' ? homedir() : p.startsWith('~/') ? resolve(homedir(), p.slice(2)) : resolve(p));
const pathField = (fallback: string) => z.string().min(1).default(fallback).transform(expandHome);

const regexField = z.string().min(1).refine(
  (s) => {
    try {
      new RegExp(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'not a valid regular expression' },
);

const hostPort = z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:7233');
const port = z.number().int().min(1).max(65535);

const temporalSchema = z.strictObject({
  /** Unset: `start` runs an embedded dev server and everything talks to it. */
  address: hostPort.optional(),
  namespace: z.string().min(1).default('default'),
  taskQueue: z.string().min(1).default('immich-backup'),
  /** Path of the `temporal` CLI; unset: looked up on PATH. */
  binary: z.string().min(1).optional(),
  devServer: z
    .strictObject({
      dataDir: pathField('~/.local/share/immich-backup/temporal'),
      ip: z.string().min(1).default('127.0.0.1'),
      port: port.default(7233),
      uiPort: port.default(8233),
    })
    .prefault({}),
});

const postgresSchema = z.strictObject({
  /** docker: tools run in the discovered container; none: on this host, libpq variables pass through. */
  runtime: z.enum(['docker', 'none']).default('docker'),
  containerPattern: regexField.default('immich.*postgres'),
  user: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_$.-]*$/, 'expected a PostgreSQL role name (letters, digits, _ $ . -)')
    .default('postgres'),
  /** Secret: prefer IMMICH_BACKUP_PG_PASSWORD. Handed to the tools through the environment, never argv. */
  password: z.string().min(1).optional(),
  /** Directory of the host's PostgreSQL client tools (runtime none); unset: PATH. */
  binDir: z.string().min(1).transform(expandHome).optional(),
});

const backupSchema = z.strictObject({
  dir: pathField('~/backups/immich/postgres'),
  retentionDays: z.number().int().min(1).default(7),
  /** The runbook's "must be >1KB". */
  minBytes: z.number().int().min(1).default(1024),
  /**
   * gzip-compatible either way; pigz uses every core. Level 1: on 2 cores pigz -1 costs 1.18x
   * pg_dumpall alone, -3 costs 1.7x, for 5% smaller files (bench/nightly-db-backup.ts).
   */
  compressor: z.enum(['pigz', 'gzip']).default('pigz'),
  compressionLevel: z.number().int().min(1).max(9).default(1),
});

export const configSchema = z.strictObject({
  temporal: temporalSchema.prefault({}),
  postgres: postgresSchema.prefault({}),
  docker: z.strictObject({ command: z.string().min(1).default('docker') }).prefault({}),
  backup: backupSchema.prefault({}),
  log: z
    .strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info') })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;

/** Environment variables that override a config key: connection settings and secrets. */
export const ENV_OVERRIDES: ReadonlyArray<{ env: string; path: readonly string[]; type?: 'number' }> = [
  { env: 'IMMICH_BACKUP_TEMPORAL_ADDRESS', path: ['temporal', 'address'] },
  { env: 'IMMICH_BACKUP_TEMPORAL_NAMESPACE', path: ['temporal', 'namespace'] },
  { env: 'IMMICH_BACKUP_TASK_QUEUE', path: ['temporal', 'taskQueue'] },
  { env: 'IMMICH_BACKUP_TEMPORAL_BINARY', path: ['temporal', 'binary'] },
  { env: 'IMMICH_BACKUP_PG_PASSWORD', path: ['postgres', 'password'] },
  { env: 'IMMICH_BACKUP_DOCKER_COMMAND', path: ['docker', 'command'] },
  { env: 'IMMICH_BACKUP_DIR', path: ['backup', 'dir'] },
  { env: 'IMMICH_BACKUP_LOG_LEVEL', path: ['log', 'level'] },
];

export const CONFIG_ENV = 'IMMICH_BACKUP_CONFIG';

export interface LoadConfigOptions {
  /** --config; falls back to $IMMICH_BACKUP_CONFIG, then to the defaults alone. */
  path?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig({ path, env = process.env }: LoadConfigOptions = {}): Config {
  const file = path ?? env[CONFIG_ENV];
  let raw: unknown = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}` : '';
      throw new ConfigError(`config file ${file} is not valid YAML${where}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return parseConfig(raw, { env, source: file ?? 'defaults' });
}

export function parseConfig(raw: unknown, { env = {}, source = 'config' }: { env?: NodeJS.ProcessEnv; source?: string } = {}): Config {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`invalid config (${source}): the top level must be a mapping of sections`);
  }
  const merged = structuredClone(raw) as Record<string, unknown>;
  for (const { env: name, path } of ENV_OVERRIDES) {
    const value = env[name];
    if (value !== undefined && value !== '') setPath(merged, path, value);
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const keys = issue.code === 'unrecognized_keys' ? issue.keys.map((k) => [...issue.path, k].join('.')) : [issue.path.join('.')];
      const reason = issue.code === 'unrecognized_keys' ? 'unknown key' : issue.message;
      return keys.map((k) => `${k || '(top level)'}: ${reason}`).join('; ');
    });
    // One line, every bad field named by its path.
    throw new ConfigError(`invalid config (${source}): ${lines.join('; ')}`);
  }
  return result.data;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (next === undefined || next === null) node[key] = {};
    else if (typeof next !== 'object') return; // leave it for the schema to reject with the field's path
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

/** The config as it may be printed or logged: secrets replaced. */
export function redactConfig(config: Config): Config {
  return { ...config, postgres: { ...config.postgres, ...(config.postgres.password ? { password: '[redacted]' } : {}) } };
}
