import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { cronProblem } from '../core/cron.js';
import { ConfigError } from '../core/errors.js';
import { redactSecrets } from '../core/redact.js';

// Sections use prefault({}) so their defaults pass through the schema (paths get expanded).
// Every default is the runbook's (README, "The runbook it automates") unless noted.

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

const isLoopback = (ip: string) => ip === 'localhost' || ip === '::1' || (isIP(ip) === 4 && ip.startsWith('127.'));

/** `inner` is `outer` or below it (both already resolved: no trailing slash, no ..). */
const isInside = (inner: string, outer: string) => inner === outer || inner.startsWith(outer === '/' ? '/' : `${outer}/`);

const hostPort = z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:7233');
const port = z.number().int().min(1).max(65535);

const temporalSchema = z.strictObject({
  /** Unset: `start` runs an embedded dev server and everything talks to it. */
  address: hostPort.optional(),
  namespace: z.string().min(1).default('default'),
  taskQueue: z.string().min(1).default('immich-backup'),
  /** Path of the `temporal` CLI; unset: looked up on PATH. */
  binary: z.string().min(1).optional(),
  /** TLS to a remote Temporal (e.g. Temporal Cloud or a server behind mTLS); unset: plain TCP (the local dev server). */
  tls: z
    .strictObject({
      /** PEM client certificate and its key (mTLS). */
      clientCert: z.string().min(1).transform(expandHome).optional(),
      clientKey: z.string().min(1).transform(expandHome).optional(),
      /** PEM CA that signed the server's certificate; unset: the system's roots. */
      ca: z.string().min(1).transform(expandHome).optional(),
      /** The name the server's certificate is for, when it differs from the address's host. */
      serverName: z.string().min(1).optional(),
    })
    .refine((t) => !t.clientCert === !t.clientKey, { path: ['clientKey'], message: 'clientCert and clientKey come as a pair: set both or neither' })
    .optional(),
  /** Secret: prefer IMMICH_BACKUP_TEMPORAL_API_KEY. An API key (Temporal Cloud); implies TLS. */
  apiKey: z.string().min(1).optional(),
  devServer: z
    .strictObject({
      dataDir: pathField('~/.local/share/immich-backup/temporal'),
      // The dev server has no authentication: whoever reaches it can start restores. Loopback only.
      ip: z.string().min(1).default('127.0.0.1').refine(isLoopback, { message: 'must be a loopback address (127.0.0.1, ::1 or localhost): the dev server has no authentication; for a shared server set temporal.address' }),
      port: port.default(7233),
      uiPort: port.default(8233),
    })
    .prefault({}),
}).superRefine((t, ctx) => {
  // Without an address everything talks to the embedded dev server, which speaks plain TCP only.
  if (!t.address && t.tls) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'TLS is for a remote Temporal: set temporal.address too' });
  if (!t.address && t.apiKey) ctx.addIssue({ code: 'custom', path: ['apiKey'], message: 'an API key is for a remote Temporal: set temporal.address too' });
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
  /** The container's unprivileged user that runs psql, pg_dump and pg_dumpall (docker exec -u): never root in the container. */
  containerUser: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'a user name').default('postgres'),
  /** runtime none, the worker running as root: the host user that runs psql and pg_dumpall (runuser -u): never root. */
  runAs: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'a user name').default('nobody'),
});

/** The levels each compressor accepts (igzip has only 0-3; zstd goes to 19). */
export const COMPRESSION_LEVELS = { pigz: 9, gzip: 9, igzip: 3, zstd: 19 } as const;

const backupSchema = z.strictObject({
  dir: pathField('~/backups/immich/postgres'),
  retentionDays: z.number().int().min(1).default(7),
  /** The runbook's "must be >1KB". */
  minBytes: z.number().int().min(1).default(1024),
  /**
   * igzip, pigz and gzip write .sql.gz, zstd writes .sql.zst; restore reads both. igzip -1 (ISA-L)
   * by measurement: on 2 cores the whole backup takes about as long as pg_dumpall alone, pigz -1
   * half as long again, with a smaller file than pigz -1 (bench/results/, `npm run bench`).
   */
  compressor: z.enum(['igzip', 'pigz', 'gzip', 'zstd']).default('igzip'),
  compressionLevel: z.number().int().min(1).max(19).default(1),
  /** Pruning always keeps this many of the newest valid dumps, locally and on the NAS, whatever the clock says. */
  keepMin: z.number().int().min(1).default(3),
  /** A dump stamped more than this far in the future (a clock that ran ahead) is never "latest" and raises an alarm. */
  maxFutureMinutes: z.number().int().min(0).default(5),
  /** A dump whose assets table lost more than this share of rows against the previous dump is kept but flagged. */
  assetDropAlarm: z.number().gt(0).max(1).default(0.2),
}).refine((b) => b.compressionLevel <= COMPRESSION_LEVELS[b.compressor], {
  path: ['compressionLevel'],
  message: 'above what the compressor accepts (pigz and gzip 1-9, igzip 1-3, zstd 1-19)',
});

// Paths that end up inside an ssh remote command or rsync's -e string: a safe character set
// only, so no value from config can change what the remote shell runs.
const SAFE_PATH = /^[A-Za-z0-9._/~+-]+$/;
const safePath = (what: string) => z.string().min(1).regex(SAFE_PATH, `${what}: letters, digits and . _ / ~ + - only`);
const remoteDir = safePath('an absolute path')
  .refine((p) => p.startsWith('/') && !p.split('/').includes('..'), { message: 'must be absolute, without ..' });

const offsiteSchema = z.strictObject({
  /** ssh host or ~/.ssh/config alias: the runbook's `nas`. */
  host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$/, 'a host name, alias or IPv4 address').default('nas'),
  user: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'a user name').optional(),
  port: port.default(22),
  identityFile: safePath('identityFile').transform(expandHome).optional(),
  /** Host keys are always checked (StrictHostKeyChecking yes); unset: ssh's own known_hosts. */
  knownHostsFile: safePath('knownHostsFile').transform(expandHome).optional(),
  remoteDir: remoteDir.default('/volume1/backups/immich/postgres'),
  /** scp for NAS units without rsync. */
  method: z.enum(['rsync', 'scp']).default('rsync'),
  /** Remote dumps older than this are deleted (never the newest); unset: the runbook keeps offsite copies forever. */
  retentionDays: z.number().int().min(1).optional(),
  /** An unreachable NAS is retried with backoff for this long before the run fails. */
  retryWindowMinutes: z.number().positive().default(60),
  connectTimeoutSeconds: z.number().int().min(1).default(20),
  /** rsync --bwlimit in KiB/s for uploads, to spare a slow uplink; 0: unlimited (scp ignores it). */
  bwLimitKiB: z.number().int().min(0).default(0),
  /** An upload whose byte count has not moved for this long fails as stalled (a hung NAS). */
  stallSeconds: z.number().int().min(1).default(300),
});

const librarySchema = z.strictObject({
  source: pathField('/mnt/immich/library/'),
  destination: pathField('/mnt/wd-backup/immich/'),
  /** Must be a mounted filesystem (the WD Portable), not a bare directory on the root disk. */
  mountPoint: pathField('/mnt/wd-backup'),
  /** The runbook's `ionice -c3 nice -n19`; 0 turns either off. */
  ioniceClass: z.number().int().min(0).max(3).default(3),
  nice: z.number().int().min(0).max(19).default(19),
  excludes: z.array(z.string().min(1)).default([]),
  /** Delete files on the mirror that left the library. Off: the mirror only ever gains files. */
  delete: z.boolean().default(false),
  /** With delete on, refuse to run when the library holds fewer files than this fraction of the mirror's. */
  minSourceFraction: z.number().gt(0).max(1).default(0.9),
  /** A drive that is not mounted is checked again every pollSeconds for this long (someone may plug it in). */
  mountWaitMinutes: z.number().min(0).default(30),
  mountPollSeconds: z.number().int().min(1).default(60),
  /** rsync --bwlimit in KiB/s; 0: unlimited. */
  bwLimitKiB: z.number().int().min(0).default(0),
  /** A mirror or library restore whose byte count has not moved for this long fails as stalled (a frozen or dying drive). */
  stallSeconds: z.number().int().min(1).default(600),
  /**
   * Where each mirror run keeps the files it would overwrite or delete on the mirror, one dated
   * version set per run (rsync --backup-dir): on the drive, beside the mirror. Unset: the
   * destination's path with ".versions" appended (/mnt/wd-backup/immich.versions).
   */
  versionsDir: z.string().min(1).transform(expandHome).optional(),
  /** Version sets older than this are removed, oldest first, after a successful run. */
  keepVersionsWeeks: z.number().int().min(1).default(8),
  /**
   * Immich never rewrites an original: an existing file whose content changed is an anomaly, and
   * (with delete on) so is a mass deletion. A run that finds more than maxFiles originals rewritten
   * or deleted, or more than maxShare of the library, overwrites and deletes none of them and fails
   * until the operator approves that one run.
   */
  writeOnce: z
    .strictObject({
      maxFiles: z.number().int().min(0).default(100),
      maxShare: z.number().min(0).max(1).default(0.01),
      /**
       * Immich's derived files, which Immich itself rewrites and deletes: mirrored and versioned,
       * never counted by the guard. `dir/`: a folder at the top of library.source; anything else: a
       * file name (`*` for any characters, case ignored). Immich's defaults: thumbnails, transcoded
       * videos, profile pictures, its database backups, XMP sidecars, its folder check files.
       */
      derived: z.array(z.string().min(1).regex(/^[^\0\n]+$/, 'a folder (ending in /) or a file name pattern')).default(['thumbs/', 'encoded-video/', 'profile/', 'backups/', '*.xmp', '.immich']),
    })
    .prefault({}),
  /**
   * Where the library is inside Immich's container (UPLOAD_LOCATION's mount): asset."originalPath"
   * starts with one of these; the rest of the path is relative to library.source. Immich's current
   * default (/data) and its older one (/usr/src/app/upload).
   */
  containerPaths: z.array(z.string().regex(/^\/[^\0]*$/, 'an absolute path')).min(1).default(['/data', '/usr/src/app/upload']),
  /** LibraryAudit: every asset's file checked against Immich's SHA-1, on the library and on the mirror. */
  audit: z
    .strictObject({
      /** A whole pass over the library completes within this many days; each run covers its share of it. */
      passDays: z.number().int().min(1).default(30),
      /** Names kept in the report for each kind of problem (missing, mismatched), per side. */
      reportNames: z.number().int().min(1).max(100).default(10),
    })
    .prefault({}),
  /** An optional offsite copy of the library on the NAS (offsite.host, user, port, identity): an encrypted restic repository at remoteDir. */
  offsite: z
    .strictObject({
      enabled: z.boolean().default(false),
      remoteDir: remoteDir.default('/volume1/backups/immich/library'),
    })
    .prefault({}),
}).superRefine((l, ctx) => {
  // The mount check is what keeps the mirror off the root disk: / is always "mounted".
  if (l.mountPoint === '/') ctx.addIssue({ code: 'custom', path: ['mountPoint'], message: 'must not be / (the mount check would always pass and the mirror would fill the root filesystem); use the drive\'s own mount point' });
  else if (l.destination === l.mountPoint || !isInside(l.destination, l.mountPoint)) ctx.addIssue({ code: 'custom', path: ['destination'], message: `must be a directory inside library.mountPoint (${l.mountPoint}), else the mount check guards nothing` });
  // rsync from a tree into itself (or with --delete, over the library) destroys the library.
  if (isInside(l.source, l.destination) || isInside(l.destination, l.source)) ctx.addIssue({ code: 'custom', path: ['destination'], message: `must not be library.source (${l.source}), nor inside it or contain it` });
  if (l.versionsDir !== undefined) {
    // rsync --backup-dir renames on the same filesystem: on the drive, apart from the mirror and the library.
    if (l.versionsDir === l.mountPoint || !isInside(l.versionsDir, l.mountPoint)) ctx.addIssue({ code: 'custom', path: ['versionsDir'], message: `must be a directory inside library.mountPoint (${l.mountPoint}): versions are kept on the drive` });
    if (isInside(l.versionsDir, l.destination) || isInside(l.destination, l.versionsDir)) ctx.addIssue({ code: 'custom', path: ['versionsDir'], message: `must not be library.destination (${l.destination}), nor inside it or contain it` });
    if (isInside(l.versionsDir, l.source) || isInside(l.source, l.versionsDir)) ctx.addIssue({ code: 'custom', path: ['versionsDir'], message: `must not be library.source (${l.source}), nor inside it or contain it` });
  }
});

// Checked here, not when `start` sends it to Temporal (after connecting, without the key's name).
const cron = z.string().superRefine((line, ctx) => {
  const problem = cronProblem(line);
  if (problem) ctx.addIssue({ code: 'custom', message: `${problem}; e.g. "0 3 * * *"` });
});
const timeZone = z.string().refine(
  (tz) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  },
  { message: 'not an IANA time zone (e.g. Europe/Berlin)' },
);

const schedulesSchema = z.strictObject({
  /** The runbook's cron lines, in this time zone (default: this machine's). */
  timeZone: timeZone.default(() => Intl.DateTimeFormat().resolvedOptions().timeZone),
  nightlyDbBackup: cron.default('0 3 * * *'),
  offsiteSync: cron.default('30 4 * * *'),
  weeklyLibraryMirror: cron.default('0 5 * * 0'),
  /** BackupHealth: the staleness alarm (dead-man's switch), hourly. */
  backupHealth: cron.default('15 * * * *'),
  /** RestoreDrill: the newest dump restored into a throwaway PostgreSQL, weekly. */
  restoreDrill: cron.default('0 6 * * 1'),
  /** LibraryAudit: the library and its mirror checked against Immich's checksums, monthly. */
  libraryAudit: cron.default('0 2 1 * *'),
  /** Runs missed while the server was down are made up within this window, else skipped. */
  catchupWindowMinutes: z.number().int().min(1).default(120),
  /** `start` creates or updates the schedules. */
  applyOnStart: z.boolean().default(true),
});

const immichSchema = z.strictObject({
  /** Where Immich's docker-compose.yml lives: `docker compose up -d` runs here after a restore. */
  composeDir: pathField('~/immich'),
  /** Stopped during a restore; the database container keeps running. */
  appContainers: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a container name')).min(1).default(['immich_server', 'immich_machine_learning']),
  /** Immich's health endpoint, polled after it starts again. */
  pingUrl: z.url({ protocol: /^https?$/, error: 'an http(s) URL' }).default('http://127.0.0.1:2283/api/server/ping'),
  healthTimeoutSeconds: z.number().int().min(1).default(300),
  /** Immich 2.x's own database backups (UPLOAD_LOCATION/backups, immich-db-backup-*.sql.gz); unset: not used. */
  backupsDir: z.string().min(1).transform(expandHome).optional(),
  /** The database those backups are a `pg_dump` of (DB_DATABASE_NAME). */
  database: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a database name').default('immich'),
});

const restoreSchema = z.strictObject({
  /** A restore started without --yes waits this long for `immich-backup restore approve`, then changes nothing. */
  approvalTimeoutMinutes: z.number().positive().default(60),
  /** Restore points (the live database as it was before a restore) kept in backup.dir/restore-points; older ones are deleted. */
  keepRestorePoints: z.number().int().min(1).default(3),
  /** How long a run waits for another run to let go of the database or the library before it gives up (changing nothing). */
  lockWaitMinutes: z.number().positive().default(120),
});

/** What `status` and BackupHealth call stale: the runbook's daily dump and weekly mirror, with slack. */
const statusSchema = z.strictObject({
  dbStaleHours: z.number().positive().default(26),
  offsiteStaleHours: z.number().positive().default(26),
  mirrorStaleDays: z.number().positive().default(8),
  drillStaleDays: z.number().positive().default(8),
  /** LibraryAudit: a library whose last completed audit pass is older than this is stale (a pass takes library.audit.passDays). */
  auditStaleDays: z.number().positive().default(35),
  /** Each row of `status` (the NAS, the drive, Temporal) answers within this bound, or reads "unreachable". */
  rowTimeoutSeconds: z.number().int().min(1).default(20),
});

/** What the tool trusts: its own key (dumps it wrote; who may start and approve destructive runs). */
const securitySchema = z.strictObject({
  /**
   * HMAC key, made on the worker's first start (owner-only). Dumps are authenticated with it, and
   * restores and deleting mirrors need a token derived from it. Keep it outside backup.dir and off the NAS.
   */
  keyFile: pathField('~/.config/immich-backup/key'),
});

// Notification URLs often carry a token (ntfy topics, healthchecks.io UUIDs): they are never logged
// whole, nor passed through workflow history (activities look them up by index).
const httpUrl = z.url({ protocol: /^https?$/, error: 'an http(s) URL' });

const notificationsSchema = z.strictObject({
  /** Generic JSON webhooks: each event POSTed as JSON. */
  webhooks: z.array(httpUrl).default([]),
  /** ntfy topic URLs (https://ntfy.sh/my-topic): each event POSTed as a text message with a title. */
  ntfy: z.array(httpUrl).default([]),
  /** healthchecks.io-style ping URLs per workflow: URL/start, URL (success), URL/fail. */
  pings: z
    .strictObject({
      nightlyDbBackup: httpUrl.optional(),
      offsiteSync: httpUrl.optional(),
      weeklyLibraryMirror: httpUrl.optional(),
      restoreDrill: httpUrl.optional(),
      backupHealth: httpUrl.optional(),
    })
    .prefault({}),
  timeoutSeconds: z.number().int().min(1).max(120).default(10),
});

const drillSchema = z.strictObject({
  /**
   * host: initdb from the host's PostgreSQL binaries on a free loopback port. container: a
   * throwaway container of the live database's image (Immich's, with its vector extensions, which
   * host binaries lack). auto: host where the binaries exist, else container.
   */
  engine: z.enum(['auto', 'host', 'container']).default('auto'),
  /** The container engine's image; unset: the live database container's own. */
  image: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/, 'an image reference').optional(),
  /** Directory with initdb, postgres and psql; unset: postgres.binDir, the newest /usr/lib/postgresql/N/bin, then PATH. */
  binDir: z.string().min(1).transform(expandHome).optional(),
  /** Where the host engine's throwaway cluster lives while the drill runs: room for the restored database, readable by runAs. */
  workDir: z.string().min(1).transform(expandHome).optional(),
  /**
   * As root the throwaway server and its psql run as this unprivileged user (never root, and not the
   * owner of a live PostgreSQL: what a dump makes the server run, runs as this user).
   */
  runAs: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'a user name').default('nobody'),
  /**
   * After the local dump, the drill fetches the newest NAS copy, decrypts and verifies it, and
   * restores it too: a broken offsite copy or a lost key is found by the drill, not on the day it
   * is needed. false: the drill never touches the NAS (a setup without one).
   */
  offsiteCopy: z.boolean().default(true),
});

export const configSchema = z.strictObject({
  temporal: temporalSchema.prefault({}),
  postgres: postgresSchema.prefault({}),
  docker: z.strictObject({ command: z.string().min(1).default('docker') }).prefault({}),
  backup: backupSchema.prefault({}),
  offsite: offsiteSchema.prefault({}),
  library: librarySchema.prefault({}),
  schedules: schedulesSchema.prefault({}),
  immich: immichSchema.prefault({}),
  restore: restoreSchema.prefault({}),
  status: statusSchema.prefault({}),
  notifications: notificationsSchema.prefault({}),
  drill: drillSchema.prefault({}),
  security: securitySchema.prefault({}),
  log: z
    .strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info') })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;

/** Environment variables that override a config key: connection settings and secrets. */
export const ENV_OVERRIDES: ReadonlyArray<{ env: string; path: readonly string[] }> = [
  { env: 'IMMICH_BACKUP_TEMPORAL_ADDRESS', path: ['temporal', 'address'] },
  { env: 'IMMICH_BACKUP_TEMPORAL_NAMESPACE', path: ['temporal', 'namespace'] },
  { env: 'IMMICH_BACKUP_TASK_QUEUE', path: ['temporal', 'taskQueue'] },
  { env: 'IMMICH_BACKUP_TEMPORAL_BINARY', path: ['temporal', 'binary'] },
  { env: 'IMMICH_BACKUP_TEMPORAL_API_KEY', path: ['temporal', 'apiKey'] },
  { env: 'IMMICH_BACKUP_KEY_FILE', path: ['security', 'keyFile'] },
  { env: 'IMMICH_BACKUP_PG_PASSWORD', path: ['postgres', 'password'] },
  { env: 'IMMICH_BACKUP_DOCKER_COMMAND', path: ['docker', 'command'] },
  { env: 'IMMICH_BACKUP_DIR', path: ['backup', 'dir'] },
  { env: 'IMMICH_BACKUP_NAS_HOST', path: ['offsite', 'host'] },
  { env: 'IMMICH_BACKUP_NAS_USER', path: ['offsite', 'user'] },
  { env: 'IMMICH_BACKUP_NAS_IDENTITY_FILE', path: ['offsite', 'identityFile'] },
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

/** A URL as it may be logged: its origin only (paths and queries of notification URLs carry tokens). */
export function redactUrl(url: string): string {
  const { origin, pathname, search } = new URL(url);
  return pathname.length > 1 || search ? `${origin}/[redacted]` : origin;
}

/** The config as it may be printed or logged: secrets replaced. */
export function redactConfig(config: Config): Config {
  const n = config.notifications;
  return {
    ...config,
    temporal: { ...config.temporal, ...(config.temporal.apiKey ? { apiKey: '[redacted]' } : {}) },
    postgres: { ...config.postgres, ...(config.postgres.password ? { password: '[redacted]' } : {}) },
    immich: { ...config.immich, pingUrl: redactSecrets(config.immich.pingUrl) },
    notifications: {
      ...n,
      webhooks: n.webhooks.map(redactUrl),
      ntfy: n.ntfy.map(redactUrl),
      pings: Object.fromEntries(Object.entries(n.pings).map(([k, v]) => [k, v && redactUrl(v)])),
    },
  };
}

/** JSON with every object's keys sorted, so equal configs give equal text whatever the order in the file. */
const canonical = (v: unknown): unknown =>
  Array.isArray(v) ? v.map(canonical) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])])) : v;

/**
 * What the worker publishes about the config it runs with, for the CLI to compare with its own: a
 * sha256 (16 hex digits) of the parsed, effective config with secrets redacted (so a digest never
 * lets anyone test guesses of a password), leaving out `temporal` (how each process reaches
 * Temporal may rightly differ between a remote worker and the CLI).
 */
export function configDigest(config: Config): string {
  // A secret counts neither by value nor by presence (the service's environment file may hold the
  // password a root shell lacks); log and status settings are each process's own.
  const published: Partial<Config> = { ...redactConfig(config), postgres: { ...config.postgres, password: undefined } };
  delete published.temporal;
  delete published.log;
  delete published.status;
  return createHash('sha256').update(JSON.stringify(canonical(published))).digest('hex').slice(0, 16);
}
