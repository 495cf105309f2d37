import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { Logger } from '../../config/logger.js';
import { DUMP_NAME_HINT, isDumpName, isImmichBackupName, isRestorePointName, RESTORE_POINT_NAME_HINT, RESTORE_POINTS_DIR, stampOfName } from '../../core/dump-names.js';
import { DumpNotFoundError, NotOurDumpError, UnauthenticatedDumpError } from '../../core/errors.js';
import type { ResolveDumpInput, ResolvedDump } from '../../core/types.js';
import { remoteDumpNames } from '../nas/remote-dumps.js';
import { nasLabel } from '../nas/ssh.js';
import { futureStamped } from './authentic.js';
import type { DumpStore } from './index.js';

// Where a dump named by an operator (or "latest") is, and what it is: ours in the staging dir or a
// restore point (proven by their tags), a copy on the NAS (imported and proven), or one of Immich's
// own (unauthenticated: only by name). A path is never taken from the input.

/** A dump's path and format from its name and origin, names checked: never a path from elsewhere. */
export function locate(config: Config, file: string, origin: ResolvedDump['origin']): Pick<ResolvedDump, 'file' | 'path' | 'format' | 'origin'> {
  const dir = config.backup.dir;
  const pointsDir = join(dir, RESTORE_POINTS_DIR);
  if (origin === 'immich' && isImmichBackupName(file) && config.immich.backupsDir) return { file, path: join(config.immich.backupsDir, file), format: 'immich', origin };
  if (origin === 'restore-point' && isRestorePointName(file)) return { file, path: join(pointsDir, file), format: 'cluster', origin };
  if ((origin === 'local' || origin === 'offsite') && isDumpName(file)) return { file, path: join(dir, file), format: 'cluster', origin };
  throw new NotOurDumpError(`refusing to load ${JSON.stringify(file)} (origin ${String(origin)}): not a dump name of that origin`);
}

/** Immich's newest own backup for "latest": never its restore-point-… (the state before an in-app restore), only by name. */
async function newestImmichBackup(config: Config): Promise<string | undefined> {
  if (!config.immich.backupsDir) return undefined;
  return (await readdir(config.immich.backupsDir).catch(() => [] as string[])).filter((n) => isImmichBackupName(n) && !n.startsWith('restore-point-')).sort((a, b) => (stampOfName(a)?.getTime() ?? 0) - (stampOfName(b)?.getTime() ?? 0)).at(-1);
}

/**
 * Which dump to restore: a name must be one of ours (immich_YYYYMMDD_HHMMSS.sql.gz or .sql.zst),
 * a restore point (restore-point_….sql.gz, from backup.dir/restore-points) or one of Immich's own
 * (immich-db-backup-….sql.gz, also uploaded-… and restore-point-…) and never a path. Ours come
 * from the staging dir, or from the NAS when missing locally or asked for; "latest" is the
 * newest authentic one of ours (never a restore point, never one of Immich's own: those only by name).
 */
export async function resolveDump(config: Config, logger: Logger, store: Pick<DumpStore, 'key' | 'authentic' | 'latest' | 'importFromNas'>, { dump, from }: ResolveDumpInput): Promise<ResolvedDump> {
  const dir = config.backup.dir;
  const pointsDir = join(dir, RESTORE_POINTS_DIR);
  if (dump !== 'latest' && !isDumpName(dump) && !isImmichBackupName(dump) && !isRestorePointName(dump)) {
    throw new NotOurDumpError(`${JSON.stringify(dump)} is not a dump this tool restores: give latest, ${DUMP_NAME_HINT}, ${RESTORE_POINT_NAME_HINT} or immich-db-backup-….sql.gz (a name, not a path)`);
  }
  if (isImmichBackupName(dump)) {
    if (!config.immich.backupsDir) throw new DumpNotFoundError(`${dump} is one of Immich's own backups, but immich.backupsDir is not configured`);
    const path = join(config.immich.backupsDir, dump);
    const st = await lstat(path).catch(() => {
      throw new DumpNotFoundError(`no ${dump} in ${config.immich.backupsDir}`);
    });
    // Immich's folder is someone else's: a symlink or FIFO named like a backup is never opened.
    if (!st.isFile()) throw new NotOurDumpError(`${path} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: never followed nor read; nothing was changed`);
    return { file: dump, path, format: 'immich', origin: 'immich' };
  }
  // Without the key nothing of ours can be proven: refused here, before anything is listed or fetched from the NAS.
  await store.key();
  if (isRestorePointName(dump)) {
    const { dumps, skipped } = await store.authentic('restore-point');
    const refused = skipped.find((d) => d.file === dump);
    if (refused) throw new UnauthenticatedDumpError(`${dump}: ${refused.reason}`);
    const found = dumps.find((d) => d.file === dump);
    if (!found) throw new DumpNotFoundError(`no validated restore point ${dump} in ${pointsDir}`);
    return { file: dump, path: join(pointsDir, dump), format: 'cluster', origin: 'restore-point', checksum: found.sha256 };
  }
  if (from === 'local') {
    let found: { file: string; sha256: string } | undefined;
    if (dump === 'latest') {
      const latest = await store.latest();
      for (const p of latest.passedOver) logger.warn({ file: p.file, reason: p.reason }, 'passed over for "latest"');
      found = latest.dump;
    } else {
      const { dumps, skipped } = await store.authentic();
      const refused = skipped.find((d) => d.file === dump);
      if (refused) throw new UnauthenticatedDumpError(`${dump}: ${refused.reason}`);
      found = dumps.find((d) => d.file === dump);
    }
    if (found) return { file: found.file, path: join(dir, found.file), format: 'cluster', origin: 'local', checksum: found.sha256 };
  }
  // Asked for the NAS, or the local copy is missing.
  let remote: string[] = [];
  let unreachable: string | undefined;
  try {
    remote = (await remoteDumpNames(config.offsite)).sort();
  } catch (err) {
    if (from === 'offsite') throw err;
    unreachable = (err as Error).message.split('\n')[0];
    logger.warn({ err: unreachable }, 'NAS not reachable while looking for a dump');
  }
  // "latest" on the NAS: never a dump stamped in the future (its tag is checked when it is fetched).
  const name = dump === 'latest' ? remote.filter((n) => !futureStamped(n, Date.now(), config.backup.maxFutureMinutes)).at(-1) : remote.includes(dump) ? dump : undefined;
  if (name) return store.importFromNas(name);
  // Said as it is: what was looked at, and a NAS that did not answer is never "not on the NAS".
  const nas = nasLabel(config.offsite);
  if (dump !== 'latest') {
    throw new DumpNotFoundError(
      unreachable
        ? `${dump} is missing locally (not in ${dir}); whether the NAS has it is unknown: the NAS was not checked (${unreachable}); nothing was changed`
        : `${dump} is missing locally (not in ${dir}) and the NAS ${nas} has no copy either; nothing was changed`,
    );
  }
  // Immich's own backups carry no tag: never taken as "latest" (a NAS made unreachable on purpose
  // must not turn a --yes restore into an unauthenticated one); only by name, after the approval says so.
  const immich = await newestImmichBackup(config);
  const where = unreachable ? `none in ${dir}; the NAS copies were not checked (${unreachable})` : `none in ${dir}, none on the NAS ${nas}`;
  throw new DumpNotFoundError(`no dump of ours found: ${where}${immich ? `; Immich's own newest backup is ${immich} (unauthenticated): restore it by name, --dump ${immich}, and read the approval` : ''}`);
}
