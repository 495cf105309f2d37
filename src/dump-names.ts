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
export function expiredDumps(names: readonly string[], nowMs: number, retentionDays: number, keep?: string): string[] {
  const dumps = names.flatMap((name) => {
    const time = parseDumpName(name);
    return time ? [{ name, time: time.getTime() }] : [];
  });
  const newest = dumps.reduce<(typeof dumps)[number] | undefined>((a, b) => (!a || b.time > a.time ? b : a), undefined)?.name;
  const cutoff = nowMs - retentionDays * DAY_MS;
  return dumps.filter((d) => d.name !== keep && d.name !== newest && d.time < cutoff).sort((a, b) => b.time - a.time).map((d) => d.name);
}

export function checksumFileName(dumpName: string): string {
  return dumpName + CHECKSUM_SUFFIX;
}

/** Hidden, and never matching a dump name: what a reader of the directory must not mistake for a backup. */
export function partialFileName(finalName: string): string {
  return `.${finalName}.partial`;
}

/** Immich 2.x's own database backups: a pg_dump --clean --if-exists of its one database. */
const IMMICH_BACKUP_NAME = /^immich-db-backup-[A-Za-z0-9._-]+\.sql\.gz$/;

export function isImmichBackupName(name: string): boolean {
  return IMMICH_BACKUP_NAME.test(name) && !name.includes('..');
}

/** Per-table row counts NightlyDbBackup records beside each dump, for RestoreDrill to compare. */
export function rowCountsFileName(dumpName: string): string {
  return `${dumpName}.rows.json`;
}
