import { createReadStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checksumFileName, DUMP_NAME_HINT, isDumpName, isImmichBackupName, partialFileName } from '../src/dump-names.js';
import { decompressor } from './compression.js';
import { ChecksumMismatchError, ConfigError, DumpIncompleteError, DumpNotFoundError, NotOurDumpError } from '../src/errors.js';
import { formatBytes } from '../src/format.js';
import { postgresCommand } from './container.js';
import { checksummedDumps, decodeAndHash, READ_CHUNK, readChecksumFile, sha256OfFile } from './checksums.js';
import type { ActivityDeps } from './deps.js';
import { remoteDumpNames } from './offsite.js';
import { awaitCommand, runCommand, startCommand, stopCommand, withHeartbeats } from './run-command.js';
import { runRsync } from './rsync.js';
import { restoreFilter, safetyScanner } from './sql-stream.js';
import { sshCommandString, sshError, sshTarget } from './ssh.js';
import type { HealthResult, PostgresTarget, ResolveDumpInput, ResolvedDump, RestoreSettings, VerifiedDump } from './types.js';
import { COMPLETION_MARKER } from './validate.js';

/** pg_dump's last comment (Immich's own backups); pg_dumpall's is COMPLETION_MARKER. */
const PG_DUMP_MARKER = 'PostgreSQL database dump complete';

/** A stream that counts what passes through it, for heartbeats. */
function counter(onBytes: (n: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _e, callback) {
      onBytes(chunk.length);
      callback(null, chunk);
    },
  });
}

/**
 * Streams a dump through gunzip (or zstd -d) and the restore filter into a running psql, with
 * heartbeats of how far it got; psql's own error wins over the broken pipe it causes. Returns
 * psql's stderr (its errors, when ON_ERROR_STOP is off).
 */
export async function loadDump(
  dump: { file: string; path: string },
  user: string,
  psql: { file: string; args: string[]; env: Record<string, string> },
  step: string,
): Promise<{ stderr: string }> {
  const child = startCommand(psql.file, psql.args, { label: 'psql', env: psql.env, stdin: 'pipe', stdout: 'ignore' });
  const { size } = await stat(dump.path);
  let read = 0;
  const feed = pipeline(createReadStream(dump.path, { highWaterMark: READ_CHUNK }), counter((n) => (read += n)), decompressor(dump.file), restoreFilter(user), child.stdin!);
  const [fed, loaded] = await withHeartbeats(Promise.allSettled([feed, awaitCommand(child, 'psql')]), () => ({
    step,
    file: dump.file,
    read: `${formatBytes(read)} of ${formatBytes(size)}`,
    percent: Math.floor((read / size) * 100),
  }));
  if (loaded.status === 'rejected') throw loaded.reason;
  if (fed.status === 'rejected') {
    stopCommand(child);
    throw fed.reason;
  }
  return { stderr: String(loaded.value.stderr ?? '') };
}

export function createRestoreActivities({ config, logger }: ActivityDeps) {
  const dir = config.backup.dir;


  async function newestImmichBackup(): Promise<string | undefined> {
    if (!config.immich.backupsDir) return undefined;
    return (await readdir(config.immich.backupsDir).catch(() => [] as string[])).filter(isImmichBackupName).sort().at(-1);
  }

  /** Copies a dump and its .sha256 from the NAS into the staging dir, verified before it gets its final name. */
  async function fetchFromNas(file: string): Promise<ResolvedDump> {
    const offsite = config.offsite;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const temp = join(dir, partialFileName(file));
    const sumTemp = join(dir, partialFileName(checksumFileName(file)));
    try {
      for (const [name, target] of [[file, temp], [checksumFileName(file), sumTemp]] as const) {
        await runRsync(['-t', '--chmod=F600', '-e', sshCommandString(offsite), `${sshTarget(offsite)}:${offsite.remoteDir}/${name}`, target], { step: `fetching ${name} from the NAS` });
      }
    } catch (err) {
      await Promise.all([rm(temp, { force: true }), rm(sumTemp, { force: true })]);
      throw sshError(err, offsite);
    }
    const recorded = await readChecksumFile(sumTemp);
    const actual = await sha256OfFile(temp);
    if (actual !== recorded) {
      await Promise.all([rm(temp, { force: true }), rm(sumTemp, { force: true })]);
      throw new ChecksumMismatchError(`the copy of ${file} fetched from the NAS has sha256 ${actual}, its .sha256 says ${recorded}: not restoring it`);
    }
    await rename(sumTemp, join(dir, checksumFileName(file)));
    await rename(temp, join(dir, file));
    logger.info({ file }, 'dump fetched from the NAS and verified');
    return { file, path: join(dir, file), format: 'cluster', origin: 'offsite', checksum: recorded };
  }

  return {
    async restoreSettings(): Promise<RestoreSettings> {
      return { approvalTimeoutMs: config.restore.approvalTimeoutMinutes * 60_000, immichDatabase: config.immich.database };
    },

    /**
     * Which dump to restore: a name must be one of ours (immich_YYYYMMDD_HHMMSS.sql.gz or .sql.zst) or one of
     * Immich's own (immich-db-backup-….sql.gz) and never a path. Ours come from the staging dir, or
     * from the NAS when missing locally or asked for; "latest" is the newest of ours, else the
     * newest of Immich's own.
     */
    async resolveDump({ dump, from }: ResolveDumpInput): Promise<ResolvedDump> {
      if (dump !== 'latest' && !isDumpName(dump) && !isImmichBackupName(dump)) {
        throw new NotOurDumpError(`${JSON.stringify(dump)} is not a dump this tool restores: give latest, ${DUMP_NAME_HINT} or immich-db-backup-….sql.gz (a name, not a path)`);
      }
      if (isImmichBackupName(dump)) {
        if (!config.immich.backupsDir) throw new DumpNotFoundError(`${dump} is one of Immich's own backups, but immich.backupsDir is not configured`);
        const path = join(config.immich.backupsDir, dump);
        await stat(path).catch(() => {
          throw new DumpNotFoundError(`no ${dump} in ${config.immich.backupsDir}`);
        });
        return { file: dump, path, format: 'immich', origin: 'immich' };
      }
      if (from === 'local') {
        const local = await checksummedDumps(dir);
        const found = dump === 'latest' ? local.at(-1) : local.find((d) => d.file === dump);
        if (found) return { file: found.file, path: join(dir, found.file), format: 'cluster', origin: 'local', checksum: found.sha256 };
      }
      // Asked for the NAS, or the local copy is missing.
      let remote: string[] = [];
      try {
        remote = (await remoteDumpNames(config.offsite)).sort();
      } catch (err) {
        if (from === 'offsite' || dump !== 'latest') throw err;
        logger.warn({ err: (err as Error).message }, 'NAS not reachable while looking for the latest dump');
      }
      const name = dump === 'latest' ? remote.at(-1) : remote.includes(dump) ? dump : undefined;
      if (name) return fetchFromNas(name);
      const immich = dump === 'latest' ? await newestImmichBackup() : undefined;
      if (immich) return { file: immich, path: join(config.immich.backupsDir!, immich), format: 'immich', origin: 'immich' };
      throw new DumpNotFoundError(dump === 'latest' ? `no dump found: none in ${dir}, on the NAS, or in immich.backupsDir` : `${dump} is neither in ${dir} nor on the NAS`);
    },

    /**
     * Before anything is touched: the checksum matches (our dumps), the compressed stream is complete,
     * the completion marker is there, and no line would run a program.
     */
    async verifyDumpForRestore(dump: ResolvedDump): Promise<VerifiedDump> {
      const scan = safetyScanner(dump.file);
      const { sha256, size } = await decodeAndHash(dump.path, dump.file, scan.sink, 'verifying', 'not restoring it');
      if (dump.checksum !== undefined && dump.checksum !== sha256) {
        throw new ChecksumMismatchError(`dump ${dump.file} has sha256 ${sha256}, its .sha256 says ${dump.checksum}: not restoring it`);
      }
      const marker = dump.format === 'cluster' ? COMPLETION_MARKER : PG_DUMP_MARKER;
      if (!scan.tail().includes(marker)) throw new DumpIncompleteError(`dump ${dump.file} does not end with "${marker}": it stopped early; not restoring it`);
      return { bytes: size, sqlBytes: scan.sqlBytes(), sha256 };
    },

    /** Stops Immich's app containers; PostgreSQL keeps running (the runbook's `compose down` would stop it too). */
    async stopImmich(): Promise<string[]> {
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
      let detail = 'no answer yet';
      return withHeartbeats(
        (async () => {
          for (;;) {
            try {
              const res = await fetch(config.immich.pingUrl, { signal: AbortSignal.timeout(5000) });
              const body = await res.text();
              if (res.ok) return { healthy: true, detail: `${config.immich.pingUrl} answered ${res.status} ${body.slice(0, 100)}`, waitedMs: Date.now() - started };
              detail = `${config.immich.pingUrl} answered ${res.status}`;
            } catch (err) {
              detail = `${config.immich.pingUrl}: ${(err as Error).message}`;
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
    async restoreDump({ dump, target }: { dump: Pick<ResolvedDump, 'file' | 'path' | 'format'>; target: PostgresTarget }): Promise<{ durationMs: number }> {
      const started = Date.now();
      const user = config.postgres.user;
      const database = dump.format === 'cluster' ? 'postgres' : config.immich.database;
      const others = dump.format === 'cluster' ? "datname IS NOT NULL AND datname <> 'postgres'" : `datname = '${database}'`;
      const terminate = postgresCommand(config, target, 'psql', ['-X', '-q', '-U', user, '-d', 'postgres', '-c', `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ${others}`]);
      await runCommand(terminate.file, terminate.args, { label: 'psql', env: terminate.env });

      await loadDump(dump, user, postgresCommand(config, target, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', database]), 'restoring');
      const durationMs = Date.now() - started;
      logger.info({ file: dump.file, database, durationMs }, 'dump restored');
      return { durationMs };
    },
  };
}
