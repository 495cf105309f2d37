// Names of the files NightlyDbBackup writes. Pure: the workflow derives the stamp, activities the
// paths. Stamps are UTC so a daylight-saving change never yields two dumps with one name or an
// out-of-order listing.

const DUMP_NAME = /^immich_(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})\.sql\.(gz|zst)$/;
const STAMP = /^\d{8}_\d{6}$/;

export const CHECKSUM_SUFFIX = '.sha256';

export function formatStamp(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `${date.getUTCFullYear()}${pad(date.getUTCMonth() + 1)}${pad(date.getUTCDate())}_` +
    `${pad(date.getUTCHours())}${pad(date.getUTCMinutes())}${pad(date.getUTCSeconds())}`
  );
}

export function isStamp(stamp: string): boolean {
  return STAMP.test(stamp);
}

/** How a dump's SQL is compressed: gzip (.sql.gz, from pigz, igzip or gzip) or zstd (.sql.zst). */
export type DumpFormat = 'gzip' | 'zstd';

export const DUMP_NAME_HINT = 'immich_YYYYMMDD_HHMMSS.sql.gz or .sql.zst';

export function dumpFileName(stamp: string, format: DumpFormat = 'gzip'): string {
  if (!isStamp(stamp)) throw new TypeError(`not a dump stamp (YYYYMMDD_HHMMSS): ${JSON.stringify(stamp)}`);
  return `immich_${stamp}.sql.${format === 'zstd' ? 'zst' : 'gz'}`;
}

/** The format a dump name (ours or Immich's own) says; anything not ending in .zst is gzip. */
export function dumpFormat(name: string): DumpFormat {
  return name.endsWith('.zst') ? 'zstd' : 'gzip';
}

/** The time encoded in one of our dump names, or undefined for any other name. */
export function parseDumpName(name: string): Date | undefined {
  const m = DUMP_NAME.exec(name);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.slice(0, 7).map(Number) as [number, number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return formatStamp(date) === name.slice(7, 22) ? date : undefined;
}

export function isDumpName(name: string): boolean {
  return parseDumpName(name) !== undefined;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The retention rule, for the staging dir and the NAS alike: of our dump names, those older than
 * retentionDays at nowMs, never the newest one and never `keep`. Other names are ignored.
 */
export function expiredDumps(names: readonly string[], nowMs: number, retentionDays: number, keep?: string, keepMin = 1): string[] {
  const dumps = names.flatMap((name) => {
    const time = parseDumpName(name);
    return time ? [{ name, time: time.getTime() }] : [];
  });
  // The newest keepMin are kept whatever the clock says: a clock that jumped ahead prunes nothing of them.
  const newest = new Set([...dumps].sort((a, b) => b.time - a.time).slice(0, Math.max(1, keepMin)).map((d) => d.name));
  const cutoff = nowMs - retentionDays * DAY_MS;
  return dumps.filter((d) => d.name !== keep && !newest.has(d.name) && d.time < cutoff).sort((a, b) => b.time - a.time).map((d) => d.name);
}

export function checksumFileName(dumpName: string): string {
  return dumpName + CHECKSUM_SUFFIX;
}

/** Hidden, and never matching a dump name: what a reader of the directory must not mistake for a backup. */
export function partialFileName(finalName: string): string {
  return `.${finalName}.partial`;
}

/**
 * Immich 2.x's own database backups: a pg_dump --clean --if-exists of its one database. Immich
 * names the ones an admin uploaded `uploaded-…` and the ones it takes before its own restore
 * `restore-point-…`; both restore like the plain ones.
 */
const IMMICH_BACKUP_NAME = /^(?:uploaded-|restore-point-)?immich-db-backup-[A-Za-z0-9._-]+\.sql\.gz$/;

export function isImmichBackupName(name: string): boolean {
  return IMMICH_BACKUP_NAME.test(name) && !name.includes('..');
}

/** The Immich version in one of Immich's own backup names (`…-v2.0.0-pg15.18.sql.gz`), if it carries one. */
export function immichVersionOfBackupName(name: string): string | undefined {
  return /-v(\d+\.\d+\.\d+)-/.exec(name)?.[1];
}

// Restore points: the dump RestoreDatabase takes of the live database before it replaces it. Their
// own name and folder, so no reader of the staging dir (latest, status, the drill, OffsiteSync,
// pruning) ever mistakes one for a backup: they hold the state an operator rolled back from.
const RESTORE_POINT_NAME = /^restore-point_(\d{8}_\d{6})\.sql\.(gz|zst)$/;
export const RESTORE_POINTS_DIR = 'restore-points';
/** Where a dump that is no backup (failed validation, changed since) is kept for a look, beside the dumps. */
export const REJECTED_DIR = 'rejected';
export const RESTORE_POINT_NAME_HINT = 'restore-point_YYYYMMDD_HHMMSS.sql.gz';

export function restorePointFileName(stamp: string, format: DumpFormat = 'gzip'): string {
  return dumpFileName(stamp, format).replace(/^immich_/, 'restore-point_');
}

export function isRestorePointName(name: string): boolean {
  const m = RESTORE_POINT_NAME.exec(name);
  return m !== null && isDumpName(`immich_${m[1]}.sql.${m[2]}`);
}

// A partial salvage: what could still be read of a damaged database before a restore without a
// restore point replaced it. Never a backup: its own folder, and a name no reader takes for one.
export const SALVAGE_DIR = 'salvage';

export function salvageFileName(database: string, stamp: string): string {
  return `salvage_${database}_${stamp}.partial.sql.gz`;
}

/** The UTC time a dump, restore point or Immich backup name encodes, when it encodes one. */
export function stampOfName(name: string): Date | undefined {
  const ours = parseDumpName(name.replace(/^restore-point_/, 'immich_'));
  if (ours) return ours;
  const m = /immich-db-backup-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})/.exec(name);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  return new Date(Date.UTC(y, mo - 1, d, h, mi, s));
}

/** Per-table row counts NightlyDbBackup records beside each dump, for RestoreDrill to compare. */
export function rowCountsFileName(dumpName: string): string {
  return `${dumpName}.rows.json`;
}

/** The provenance tag beside a dump (adapters/dump-store/tags.ts writes and reads it). */
export const TAG_SUFFIX = '.hmac';
export const tagFileName = (dumpName: string) => `${dumpName}${TAG_SUFFIX}`;

/** A dump as it goes to the NAS: encrypted with age to the keyring's current recipient. */
export function encryptedFileName(dumpName: string): string {
  return `${dumpName}.age`;
}

/** The sha256 of a dump's ciphertext on the NAS, written last after verification: the "present" marker. */
export function encryptedChecksumFileName(dumpName: string): string {
  return checksumFileName(encryptedFileName(dumpName));
}

/** A dump's row counts and digests as they go to the NAS, encrypted like the dump. */
export function encryptedRowsFileName(dumpName: string): string {
  return `${rowCountsFileName(dumpName)}.age`;
}

/** The folder of offsite.remoteDir the wrapped keyring (recovery.ts) is uploaded to. */
export const NAS_KEYRING_DIR = 'keyring';
/** The names keyring envelopes have there: `keyring-<first key id>-<code's salt>.json` (`keyring-<id>.json` before they named the code). */
export const ENVELOPE_NAME = /^keyring-[0-9a-f]{16}(-[0-9a-f]{8})?\.json$/;
/** More envelopes than any host writes (one per key lineage and code): the rest is never read (a NAS that planted them). */
export const MAX_ENVELOPES = 32;
