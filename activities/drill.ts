import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ChecksumMismatchError, CommandNotFoundError, DigestsMissingError, DumpNotFoundError } from '../core/errors.js';
import { rowCountsFileName } from '../core/dump-names.js';
import { corruptDump } from '../adapters/files/checksums.js';
import { isCorruptStreamError } from '../adapters/commands/compression.js';
import { nasLabel } from '../adapters/nas/ssh.js';
import { postgresCommand } from '../adapters/postgres/command.js';
import { discoverPostgresContainer } from '../adapters/postgres/container.js';
import type { ActivityDeps } from './deps.js';
import { digestsFileName, openDumpStore, type NasCopy, type RecordedRows } from '../adapters/dump-store/index.js';
import { loadDump } from '../adapters/postgres/load.js';
import { RESTRICT_REFUSED } from '../adapters/postgres/restricted-psql.js';
import { runCommand, throwIfCancelled, withHeartbeats } from '../adapters/commands/run-command.js';
import type { DumpKind, PostgresTarget } from '../core/types.js';
import { compareRowCounts, CONTENT_DIGESTS_MISSING, CONTENT_NOT_COMPARED, describeDrillFailure, MAX_CONTENT_DIFFERENCES, type DrillResult, type OffsiteDrill } from '../core/reports.js';
import { compareDigests } from '../adapters/postgres/table-digests.js';
import { countRows, countRowsFromDump, hostPostgresBinDir, hostThrowaway, containerThrowaway, immichVersion, psqlQueryArgs, redumpDigests, type Psql, type Throwaway } from '../adapters/postgres/throwaway.js';

// The restore drill: proof that the newest dump restores. NightlyDbBackup records each table's
// row count beside the dump, and a digest of each table's data taken from the dump's own stream;
// RestoreDrill loads the dump into a throwaway cluster (initdb from the host's PostgreSQL
// binaries, on a Unix socket only, never the live server), counts again, re-dumps it through the
// same digester, compares table by table, and removes the cluster. Then the same for the newest
// copy on the NAS, fetched and decrypted with the keyring: proof that the offsite copy restores.

/** Load errors kept in the report (it lives in workflow history); all are counted. */
/** How the drill names a line psql refused in restrict mode. */
const RESTRICT_REFUSED_NOTE = 'holds a line psql would have run as a meta-command on this host (refused in restrict mode)';
const MAX_LOAD_ERRORS = 20;

export function createDrillActivities({ config, logger }: ActivityDeps) {
  const store = openDumpStore(config, logger);
  const dir = config.backup.dir;
  const user = config.postgres.user;

  /** drill.engine auto: the host's binaries where they exist, else a container of the live database's image. */
  async function throwaway(stamp: string): Promise<Throwaway> {
    const engine = config.drill.engine;
    const bin = engine === 'container' ? undefined : hostPostgresBinDir(config);
    if (bin) return hostThrowaway(config, bin);
    if (engine === 'host') throw new CommandNotFoundError('no PostgreSQL server binaries (initdb, postgres, psql) on this host: install the postgresql package, set drill.binDir, or use drill.engine container');
    if (config.postgres.runtime !== 'docker' && !config.drill.image) {
      throw new CommandNotFoundError('no PostgreSQL server binaries on this host and no container to take an image from: install the postgresql package or set drill.image');
    }
    // Only the container engine needs the live container (for its image): the drill never touches it otherwise.
    return containerThrowaway(config, () => discoverPostgresContainer(config, logger), `immich-backup-drill-${stamp}`);
  }

  /** Queries the live database (in its container, or on this host). */
  const livePsql = (target: PostgresTarget, label: string): Psql => async (database, sql) => {
    const cmd = postgresCommand(config, target, 'psql', psqlQueryArgs(user, database, sql));
    return (await runCommand(cmd.file, cmd.args, { label, env: cmd.env })).stdout;
  };

  /**
   * Loads a dump (`opening`: its verified bytes, opened while the throwaway starts) into a fresh
   * throwaway PostgreSQL, counts and re-dumps it, and compares both with `recorded`; the dump's
   * handle is closed and the throwaway removed whatever happened.
   */
  async function loadAndCompare(file: string, recorded: RecordedRows, opening: Promise<FileHandle>, stamp: string, step: string, started: number): Promise<DrillResult> {
    const starting = throwaway(stamp);
    const [copyDone, serverDone] = await withHeartbeats(Promise.allSettled([opening, starting]), () => ({ step }));
    if (copyDone.status === 'rejected' || serverDone.status === 'rejected') {
      if (copyDone.status === 'fulfilled') await copyDone.value.close();
      if (serverDone.status === 'fulfilled') await serverDone.value.remove();
      throw copyDone.status === 'rejected' ? copyDone.reason : (serverDone as PromiseRejectedResult).reason;
    }
    const copy = copyDone.value;
    const server = serverDone.value;
    try {
      return await compareRestored(file, recorded, copy, server, started);
    } finally {
      await server.remove();
      await copy.close();
    }
  }

  /** The load into the started throwaway, its count and re-dump, held against what was recorded at dump time. */
  async function compareRestored(file: string, rows: RecordedRows, copy: FileHandle, server: Throwaway, started: number): Promise<DrillResult> {
    const recorded = rows.tables;
    const postgresVersion = (await server.query('postgres', 'SHOW server_version')).trim();
    const loadStarted = Date.now();
    // With ON_ERROR_STOP (psql must never read COPY data as SQL): the first statement that fails (a
    // constraint the data breaks, an extension the server lacks) ends the load, and is reported
    // with the tables it leaves short, not instead of them.
    // psql without restrict mode only where it runs inside the throwaway container, as its unprivileged user.
    const withoutRestrict = server.engine === 'container' ? { allow: `it runs in the throwaway container as ${config.postgres.containerUser}` } : { refuse: `Install a current PostgreSQL (drill.binDir: ${server.where}).` };
    const { stderr } = await loadDump({ file, source: copy }, user, server.loader, `drill: restoring ${file} into ${server.where}`, withoutRestrict, { reportStop: true }).catch((err: unknown) => {
      throw isCorruptStreamError(err) ? corruptDump(file, err, 'the drill could not load it') : err;
    });
    // A table that could not be created turns its COPY data into one error per row: keep a few.
    const allErrors = stderr.split('\n').flatMap((line) => {
      if (RESTRICT_REFUSED.test(line)) return [`${file} ${RESTRICT_REFUSED_NOTE}: ${line.trim()}`];
      const m = /ERROR:\s+(.*)$/.exec(line);
      return m ? [m[1]!.trim()] : [];
    });
    // A line psql refused to run on this host is the finding that matters most: named first.
    allErrors.sort((a, b) => Number(b.includes(RESTRICT_REFUSED_NOTE)) - Number(a.includes(RESTRICT_REFUSED_NOTE)));
    const loadErrors = allErrors.slice(0, MAX_LOAD_ERRORS);
    const loadMs = Date.now() - loadStarted;
    const missingExtension = server.engine === 'host' && loadErrors.some((e) => /extension ".*" is not available|could not open extension control file/.test(e));
    const recordedDigests = rows.digests;
    // Taken at dump time but not in the record: a loss to report, not a dump from before digests.
    const digestsMissing = !recordedDigests && rows.digestsExpected === true;
    // With digests, one re-dump gives both each table's digest and its row count; without, count(*) every table.
    const redumpStarted = Date.now();
    const redump = recordedDigests ? await redumpDigests(server) : undefined;
    const redumpMs = Date.now() - redumpStarted;
    const changed = redump ? compareDigests(recordedDigests!, redump.digests) : [];
    const restored = await withHeartbeats(redump ? countRowsFromDump(server.query, redump.rows) : countRows(server.query), () => ({ step: 'drill: counting rows' }));
    const differences = compareRowCounts(recorded, restored);
    const result: DrillResult = {
      dump: file,
      engine: server.engine,
      server: server.where,
      postgresVersion,
      tables: Object.keys(restored).length,
      rows: Object.values(restored).reduce((a, b) => a + b, 0),
      differences,
      loadErrors,
      loadErrorCount: allErrors.length,
      contentCompared: recordedDigests ? Object.keys(recordedDigests).length : 0,
      contentDifferences: changed.slice(0, MAX_CONTENT_DIFFERENCES),
      contentDifferenceCount: changed.length,
      ...(recordedDigests ? {} : { contentNote: digestsMissing ? CONTENT_DIGESTS_MISSING : CONTENT_NOT_COMPARED }),
      passed: differences.length === 0 && allErrors.length === 0 && changed.length === 0 && !digestsMissing,
      ...(missingExtension ? { hint: "the host's PostgreSQL lacks an extension the dump uses (Immich's vector extensions): set drill.engine: container" } : {}),
      loadMs,
      ...(recordedDigests ? { redumpMs } : {}),
      durationMs: Date.now() - started,
    };
    if (digestsMissing) logger.error({ dump: file }, `drill: ${CONTENT_DIGESTS_MISSING}: the dump's row counts say digests were taken`);
    else if (!recordedDigests) logger.warn({ dump: file }, `drill: ${CONTENT_NOT_COMPARED}; row counts only`);
    if (changed.length) logger.error({ dump: file, tables: changed.slice(0, MAX_CONTENT_DIFFERENCES), count: changed.length }, 'drill: tables restore with other data than the dump recorded');
    logger.info({ dump: file, engine: server.engine, passed: result.passed, differences: differences.length, contentDifferences: changed.length, contentCompared: result.contentCompared, loadErrors: allErrors.length, tables: result.tables }, 'restore drill done');
    return result;
  }

  return {
    /** NightlyDbBackup's extra step: each table's row count, written beside the dump (atomically, 0600). */
    async recordRowCounts({ target, file, kind = 'backup' }: { target: PostgresTarget; file: string; kind?: DumpKind }): Promise<{ tables: number; rows: number; immichVersion?: string; shrink?: string }> {
      const psql = livePsql(target, 'psql (row counts)');
      const tables = await countRows(psql);
      const version = await immichVersion(psql, config.immich.database);
      const where = store.dir(kind);
      // Compared with the dump before it (a database that lost its data still dumps "fine"), with the digests the dump writer took.
      const { shrink, digests } = await store.recordRows(file, { tables, ...(version ? { immichVersion: version } : {}) }, { compare: kind === 'backup', dir: where });
      if (shrink) logger.error({ file, shrink }, 'dump flagged: its row counts dropped sharply against the previous dump; kept, not used as the latest');
      // Every dump this version writes gets digests (dumpDatabase writes them before the dump
      // appears): none now means they were removed or altered since. The counts stay recorded
      // (with digestsExpected, so the drill fails on this dump instead of calling it old), and the run alarms.
      if (!digests) {
        logger.error({ file, digestsFile: digestsFileName(file) }, 'table digests of the dump missing or altered: its data cannot be compared');
        throw new DigestsMissingError(
          `the table digests taken while ${file} was written are missing or do not verify (${join(where, digestsFileName(file))} was removed or altered before its row counts were recorded): its row counts are recorded, but no drill can compare its data and the drill will fail on it. Find what else writes in ${where}, then run immich-backup backup db`,
        );
      }
      const rows = Object.values(tables).reduce((a, b) => a + b, 0);
      logger.info({ file, tables: Object.keys(tables).length, rows, immichVersion: version, tablesDigested: digests ? Object.keys(digests).length : 0 }, 'row counts recorded');
      return { tables: Object.keys(tables).length, rows, ...(version ? { immichVersion: version } : {}), ...(shrink ? { shrink } : {}) };
    },

    /** The Immich version the live database says it runs (undefined: no version_history there). */
    async runningImmichVersion({ target }: { target: PostgresTarget }): Promise<string | undefined> {
      return immichVersion(livePsql(target, 'psql (Immich version)'), config.immich.database);
    },

    /**
     * Restores the newest dump that has recorded row counts into a throwaway PostgreSQL, counts
     * every table, re-dumps it and digests each table's data (when the dump recorded digests),
     * compares both with what was recorded at dump time, and removes the throwaway whatever happened.
     */
    async restoreDrill({ stamp }: { stamp: string }): Promise<DrillResult> {
      const started = Date.now();
      // Only a dump whose tag verifies, with authentic row counts, not from the future, not flagged.
      const latest = await store.latest({ needRows: true });
      for (const p of latest.passedOver) logger.warn({ file: p.file, reason: p.reason }, 'drill: passed over');
      const dump = latest.dump;
      if (!dump?.rows) throw new DumpNotFoundError(`no authenticated dump with recorded row counts in ${dir}: run a backup first (\`immich-backup backup db\`)`);
      // Loaded from a private copy whose bytes hashed to the recorded sha256 as they were copied
      // (made while the throwaway starts), through the strict filter into psql in restrict mode:
      // no line can run anything on this host, and the throwaway is removed whatever it ran.
      const copying = store.privateCopy(join(dir, dump.file), dump.file, dump.sha256, `drill: copying ${dump.file} aside`);
      const result = await loadAndCompare(dump.file, dump.rows, copying, stamp, `drill: copying ${dump.file} aside while a throwaway PostgreSQL starts`, started);
      return { ...result, sha256: dump.sha256 };
    },

    /**
     * drill.offsiteCopy: the newest NAS copy, fetched, decrypted and verified with the keyring into
     * a private folder, then restored into a throwaway and compared with its own recorded rows, as
     * restoreDrill does; when it is the dump `local` just drilled, only its plaintext's sha256 is
     * compared with the local dump's (the same bytes load the same). The private copy is removed
     * whatever happened. A copy that cannot be listed, fetched, decrypted or verified is the drill's
     * finding, returned as a failed verdict. undefined: drill.offsiteCopy is off (the NAS untouched).
     */
    async drillNasCopy({ stamp, local }: { stamp: string; local?: { file: string; sha256?: string } }): Promise<OffsiteDrill | undefined> {
      if (!config.drill.offsiteCopy) return undefined;
      const started = Date.now();
      const where = nasLabel(config.offsite);
      const failed = (why: string, err: unknown, file?: string): OffsiteDrill => {
        throwIfCancelled();
        const error = err instanceof Error ? err.name : undefined;
        const reason = `${why}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
        logger.error({ file, where, error, reason }, 'drill: the offsite copy failed');
        return { ...(file ? { file } : {}), where, verdict: 'failed', reason, ...(error && error !== 'Error' ? { error } : {}), durationMs: Date.now() - started };
      };
      let file: string | undefined;
      try {
        file = await store.newestNasCopy();
      } catch (err) {
        return failed(`the NAS ${where} could not be listed`, err);
      }
      if (!file) {
        return failed('nothing to drill', new DumpNotFoundError(`no dump copy on the NAS ${where}: run immich-backup offsite sync, or set drill.offsiteCopy: false where there is no NAS`));
      }
      const copyName = file;
      let fetched: NasCopy;
      try {
        // Its steps heartbeat what they do: fetching, checking the ciphertext, decrypting, verifying.
        fetched = await store.fetchNasCopy(copyName);
      } catch (err) {
        return failed(`it could not be fetched, decrypted and verified with this host's keyring`, err, copyName);
      }
      try {
        if (local && local.file === copyName && local.sha256) {
          if (fetched.sha256 !== local.sha256) {
            return failed('it is not the dump drilled here', new ChecksumMismatchError(`it decrypts to sha256 ${fetched.sha256}, but the local ${copyName} drilled just before is ${local.sha256}`), copyName);
          }
          logger.info({ file: copyName, where }, 'drill: the offsite copy decrypts and verifies to the local dump drilled');
          return { file: copyName, where, verdict: 'passed', proof: 'same-as-local', durationMs: Date.now() - started };
        }
        if (!fetched.rows) {
          return failed('nothing to compare it with', new DigestsMissingError(`its row counts (${rowCountsFileName(copyName)}) are missing from the NAS or do not verify`), copyName);
        }
        const opening = open(fetched.path, constants.O_RDONLY | constants.O_NOFOLLOW);
        const result = await loadAndCompare(copyName, fetched.rows, opening, stamp, `drill: starting a throwaway PostgreSQL for the offsite copy ${copyName}`, started);
        const base = { file: copyName, where, proof: 'loaded' as const, tables: result.tables, rows: result.rows, contentCompared: result.contentCompared ?? 0, durationMs: Date.now() - started };
        if (!result.passed) {
          const reason = `restored into a throwaway PostgreSQL, it does not match its own recorded rows: ${describeDrillFailure(result)}`;
          logger.error({ file: copyName, where, reason }, 'drill: the offsite copy failed');
          return { ...base, verdict: 'failed', reason };
        }
        return { ...base, verdict: 'passed' };
      } catch (err) {
        return failed('it could not be restored into a throwaway PostgreSQL', err, copyName);
      } finally {
        await fetched.dispose();
      }
    },
  };
}
