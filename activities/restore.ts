import { stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { immichVersionOfBackupName, stampOfName } from '../core/dump-names.js';
import { ChecksumMismatchError, ConfigError, DumpNotFoundError } from '../core/errors.js';
import { openDumpStore, rowFacts } from '../adapters/dump-store/index.js';
import { requireAuthorizedRun } from '../adapters/run-auth/index.js';
import { redactSecrets, splitCredentials } from '../core/redact.js';
import type { DumpFacts } from '../core/restore-plan.js';
import { postgresCommand } from '../adapters/postgres/command.js';
import { sha256OfFile } from '../adapters/files/checksums.js';
import type { ActivityDeps } from './deps.js';
import { runCommand, withHeartbeats } from '../adapters/commands/run-command.js';
import type { HealthResult, PostgresTarget, ResolveDumpInput, ResolvedDump, RestoreSettings, VerifiedDump } from '../core/types.js';
import { checkRestorable, loadDump, requireRestrict, type WithoutRestrict } from '../adapters/postgres/load.js';

export function createRestoreActivities({ config, logger }: ActivityDeps) {
  const store = openDumpStore(config, logger);
  const HOST_PSQL_HINT = `Install a current postgresql-client on this host${config.postgres.binDir ? ` (postgres.binDir is ${config.postgres.binDir})` : ''}; nothing was changed.`;
  /** The host's psql (runtime none), as a load would run it: asked before anything stops whether it knows restrict mode. */
  const hostPsql = postgresCommand(config, { runtime: 'none' }, 'psql', ['-X', '-q', '-U', config.postgres.user, '-d', 'postgres']);

  return {
    async restoreSettings(): Promise<RestoreSettings> {
      return { approvalTimeoutMs: config.restore.approvalTimeoutMinutes * 60_000, immichDatabase: config.immich.database };
    },

    /** Which dump to restore, by name or "latest", from the staging dir, restore points, the NAS or Immich's own (adapters/dump-store/resolve.ts). */
    async resolveDump(input: ResolveDumpInput): Promise<ResolvedDump> {
      return store.resolve(input);
    },

    /** checkRestorable, and for ours (not Immich's own) the provenance tag over the bytes just hashed. */
    async verifyDumpForRestore(dump: ResolvedDump): Promise<VerifiedDump> {
      const verified = await checkRestorable(dump);
      if (dump.origin !== 'immich') await store.verify(dump.file, verified.sha256, 'not restoring it; nothing was changed', dirname(dump.path));
      // A host psql that would be refused at the load is refused now, before anything stops.
      if (config.postgres.runtime === 'none') await requireRestrict(hostPsql, HOST_PSQL_HINT);
      return verified;
    },

    /** Under the lock, just before anything stops: the file is still there, still the bytes that were verified and approved. */
    async recheckDump({ path, file, sha256, origin }: { path: string; file: string; sha256: string; origin?: ResolvedDump['origin'] }): Promise<void> {
      if (origin && origin !== 'immich') await store.verify(file, sha256, 'nothing was changed', dirname(path));
      // The folder the load copies into must be the worker's own (not a link planted there): found out now, before anything stops.
      await store.checkCopyDir();
      const now = await withHeartbeats(sha256OfFile(path), () => ({ step: `checking ${file} again` })).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') throw new DumpNotFoundError(`${file} is gone since it was verified (pruned meanwhile?): nothing was changed; choose a dump again (immich-backup dumps)`);
        throw err;
      });
      if (now !== sha256) throw new ChecksumMismatchError(`${file} changed since it was verified and approved (sha256 ${now}, approved ${sha256}): nothing was changed`);
    },

    /** What the approval prompt and the report say about the dump: name, origin, age, size, databases, recorded rows, Immich version. */
    async describeDump({ dump, verified }: { dump: ResolvedDump; verified: VerifiedDump }): Promise<DumpFacts> {
      const stamp = stampOfName(dump.file);
      const rows = dump.origin === 'immich' ? undefined : await store.rows(dump.file, dirname(dump.path));
      const recorded = rowFacts(rows);
      const databases = dump.format === 'immich' ? [config.immich.database] : verified.databases.length ? verified.databases : (recorded.databases ?? []);
      const version = dump.origin === 'immich' ? immichVersionOfBackupName(dump.file) : recorded.immichVersion;
      return {
        file: dump.file,
        origin: dump.origin,
        ...(stamp ? { stamp: stamp.toISOString() } : {}),
        bytes: verified.bytes,
        sha256: verified.sha256,
        databases,
        ...(recorded.tables !== undefined ? { tables: recorded.tables, rows: recorded.rows! } : {}),
        ...(version ? { immichVersion: version } : {}),
        authenticated: dump.origin !== 'immich',
      };
    },

    /** Stops Immich's app containers; PostgreSQL keeps running (the runbook's `compose down` would stop it too). */
    async stopImmich(): Promise<string[]> {
      await requireAuthorizedRun(config.security.keyFile, "stop Immich's containers");
      await runCommand(config.docker.command, ['stop', ...config.immich.appContainers], { label: `${config.docker.command} stop` });
      logger.info({ containers: config.immich.appContainers }, 'immich stopped');
      return config.immich.appContainers;
    },

    async startImmich(): Promise<void> {
      await stat(config.immich.composeDir).catch(() => {
        throw new ConfigError(`immich.composeDir ${config.immich.composeDir} does not exist: cannot run \`docker compose up -d\` there; fix the config, start Immich by hand`);
      });
      await runCommand(config.docker.command, ['compose', 'up', '-d'], { label: `${config.docker.command} compose up -d`, cwd: config.immich.composeDir });
      logger.info({ composeDir: config.immich.composeDir }, 'immich started');
    },

    /** Polls Immich's ping endpoint until it answers or immich.healthTimeoutSeconds pass. */
    async waitForImmich(): Promise<HealthResult> {
      const started = Date.now();
      const deadline = started + config.immich.healthTimeoutSeconds * 1000;
      // Shown in heartbeats, the result and errors: never the URL's credentials, which go in a header (fetch refuses them in the URL).
      const { url, headers } = splitCredentials(config.immich.pingUrl);
      const shown = redactSecrets(config.immich.pingUrl);
      let detail = 'no answer yet';
      return withHeartbeats(
        (async () => {
          for (;;) {
            try {
              const res = await fetch(url, { headers, signal: AbortSignal.timeout(5000) });
              const body = await res.text();
              if (res.ok) return { healthy: true, detail: redactSecrets(`${shown} answered ${res.status} ${body.slice(0, 100)}`), waitedMs: Date.now() - started };
              detail = `${shown} answered ${res.status}`;
            } catch (err) {
              detail = redactSecrets(`${shown}: ${(err as Error).message}`);
            }
            if (Date.now() >= deadline) return { healthy: false, detail: `no healthy answer within ${config.immich.healthTimeoutSeconds} s (${detail})`, waitedMs: Date.now() - started };
            await new Promise((r) => setTimeout(r, 1000));
          }
        })(),
        () => ({ step: 'waiting for Immich', detail, waitedSeconds: Math.round((Date.now() - started) / 1000) }),
      );
    },

    /**
     * Streams the dump through gunzip (or zstd -d) into psql with ON_ERROR_STOP: a pg_dumpall dump into the
     * `postgres` database (it recreates every database and role), one of Immich's own into its
     * database. Other sessions on the databases being replaced are ended first.
     */
    async restoreDump({ dump, target, sha256 }: { dump: Pick<ResolvedDump, 'file' | 'path' | 'format' | 'origin'>; target: PostgresTarget; sha256: string }): Promise<{ durationMs: number }> {
      const started = Date.now();
      await requireAuthorizedRun(config.security.keyFile, `load ${dump.file} into the database`);
      // The bytes loaded are the bytes verified: copied (and hashed as they are read) into an unlinked
      // file beside the key, outside backup.dir, checked against the approved sha256 (and, for ours,
      // the tag), and read through its descriptor. Where the dump is follows from its name and
      // origin alone: a path in the input is never trusted.
      const located = store.locate(dump.file, dump.origin);
      if (located.origin !== 'immich') await store.verify(located.file, sha256, 'not loading it', dirname(located.path));
      const copy = await store.privateCopy(located.path, located.file, sha256, `copying ${located.file} aside to load exactly the verified bytes`);
      try {
        return await load({ file: located.file, format: located.format, source: copy }, target, started);
      } finally {
        await copy.close();
      }
    },
  };

  async function load(dump: Pick<ResolvedDump, 'file' | 'format'> & { source: FileHandle }, target: PostgresTarget, started: number): Promise<{ durationMs: number }> {
      const user = config.postgres.user;
      const database = dump.format === 'cluster' ? 'postgres' : config.immich.database;
      const others = dump.format === 'cluster' ? "datname IS NOT NULL AND datname <> 'postgres'" : `datname = '${database}'`;
      const terminate = postgresCommand(config, target, 'psql', ['-X', '-q', '-U', user, '-d', 'postgres', '-c', `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ${others}`]);
      await runCommand(terminate.file, terminate.args, { label: 'psql', env: terminate.env });

      // psql on this host must know restrict mode; inside the container it runs as the container's unprivileged user.
      const withoutRestrict: WithoutRestrict =
        target.runtime === 'docker' ? { allow: `it runs in container ${target.container} as ${config.postgres.containerUser}, no more than the database server itself can do` } : { refuse: HOST_PSQL_HINT };
      const { restricted } = await loadDump(dump, user, postgresCommand(config, target, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', database]), 'restoring', withoutRestrict);
      if (!restricted) logger.warn({ file: dump.file, why: 'allow' in withoutRestrict ? withoutRestrict.allow : '' }, "psql predates restrict mode: loaded as the container's unprivileged user");
      const durationMs = Date.now() - started;
      logger.info({ file: dump.file, database, durationMs, restricted }, 'dump restored');
      return { durationMs };
  }
}
