import type { DumpOrigin } from './restore-plan.js';

// Shapes passed between workflows and activities. Pure types: workflows import them.

/** Where the PostgreSQL tools run: inside Immich's database container, or on this host. */
export type PostgresTarget = { runtime: 'docker'; container: string } | { runtime: 'none' };

export interface DumpDatabaseInput {
  target: PostgresTarget;
  /** UTC YYYYMMDD_HHMMSS, fixed by the workflow so every retry writes the same name. */
  stamp: string;
  /** backup (default): immich_<stamp> in backup.dir; restore-point: restore-point_<stamp> in backup.dir/restore-points. */
  kind?: DumpKind;
}

export type DumpKind = 'backup' | 'restore-point';

export interface SalvageResult {
  file: string;
  path: string;
  bytes: number;
  database: string;
  /** Tables whose data pg_dump could not read, left out of the salvage (their definitions are in it). */
  skippedTables: string[];
}

export interface DumpResult {
  file: string;
  path: string;
  bytes: number;
  /** Of the bytes written, which the compressor's own -t also decoded to their end (pg_dumpall had exited 0). */
  sha256: string;
  durationMs: number;
}

export interface ValidateDumpInput {
  file: string;
  kind?: DumpKind;
  /** DumpResult.sha256: when the file still hashes to it, validation does not decode it again. */
  testedSha256?: string;
}

export interface ValidatedDump {
  file: string;
  bytes: number;
  /** Size of the SQL, when validation decoded the dump (not when it was tested as it was written). */
  sqlBytes?: number;
  sha256: string;
}

export interface PruneDumpsInput {
  /** The dump just validated: never pruned, whatever its age. */
  keep: string;
  /** Reference time for the retention window (the workflow's start). */
  nowMs: number;
}

export interface PruneResult {
  pruned: string[];
  kept: string[];
}

export interface OffsiteSettings {
  retryWindowMs: number;
  pruneRemote: boolean;
  method: 'rsync' | 'scp';
  destination: string;
}

export interface DumpToCopy {
  file: string;
  /** As recorded in the local .sha256, which validation checked. */
  sha256: string;
}

export interface OffsitePlan {
  toCopy: DumpToCopy[];
  alreadyOffsite: string[];
}

export interface CopiedDump {
  file: string;
  bytes: number;
  /** Set when the local dump no longer matched its .sha256: not uploaded, moved into rejected/; why. */
  rejected?: string;
}

export interface MirrorSettings {
  mountWaitMs: number;
  mountPollMs: number;
  mountPoint: string;
  /** library.delete: the mirror deletes what left the library (a destructive run: authorized). */
  delete: boolean;
  /** library.offsite.enabled: the library goes to the NAS too, after the drive. */
  offsite?: boolean;
}


export interface MirrorResult {
  filesTransferred: number;
  bytesTransferred: number;
  deleted: number;
  sourceFiles: number;
  durationMs: number;
  /** A library restore only: what the drive held that was not brought back (devices, FIFOs, sockets, symlinks leading out). */
  skipped?: { count: number; first: string[] };
}

/** What mirrorLibrary did: copied, or found the drive not there (and wrote nothing). */
export type MirrorOutcome = ({ ready: true; versioning?: MirrorVersioning } & MirrorResult) | { ready: false; reason: string };

/** cluster: our pg_dumpall (all databases and roles); immich: Immich's own pg_dump of its one database. */
export type DumpFormat = 'cluster' | 'immich';

export interface ResolveDumpInput {
  /** "latest", one of our dump names, or an immich-db-backup-….sql.gz name. */
  dump: string;
  from: 'local' | 'offsite';
}

export interface ResolvedDump {
  file: string;
  path: string;
  format: DumpFormat;
  /** Where it came from: the staging dir, fetched from the NAS, a restore point, or Immich's own backups dir. */
  origin: DumpOrigin;
  /** Our dumps carry a .sha256; Immich's own do not. */
  checksum?: string;
}

export interface VerifiedDump {
  bytes: number;
  sqlBytes: number;
  sha256: string;
  /** The databases its \\connect lines name (pg_dumpall), in order of name. */
  databases: string[];
}

export interface RestoreSettings {
  approvalTimeoutMs: number;
  immichDatabase: string;
}

export interface HealthResult {
  healthy: boolean;
  detail: string;
  waitedMs: number;
}

/** The write-once guard's approval for one run: the count and digest a refused run printed. */
export interface RewriteAcceptance {
  count: number;
  digest: string;
}

export interface MirrorLibraryInput {
  /** This run's version set (versionSetName of the workflow's start): what it overwrites or deletes goes there. */
  versionSet: string;
  acceptRewrites?: RewriteAcceptance;
}

/** What a versioned mirror run kept, found and paired with. */
export interface MirrorVersioning {
  versionSet: string;
  /** Mirror files moved into the version set (overwritten or deleted). */
  versioned: number;
  /** Lines rsync itemized (new, changed and deleted entries, folders with new times): 0 on a no-change run. */
  differences: number;
  /** Originals the run overwrote whose bytes differ from the version kept in the set: an anomaly (Immich never rewrites one). */
  rewrites: { count: number; first: string[]; digest: string };
  /** Existing files with a new mtime and the same bytes: copied (and versioned), not an anomaly. */
  touched: number;
  /** Originals (not Immich's derived files) the run deleted from the mirror (library.delete): moved into the version set. */
  deletions?: { count: number; first: string[] };
  /** Set when the rewrites were above library.writeOnce and the operator's approval matched them. */
  accepted?: boolean;
  /** The newest valid dump when the run started: restore the two together. */
  pairedDump?: string;
}

/**
 * The library's copy on the NAS. Runs before the restic repository (recorded in older histories)
 * carried only the first six fields, with rsync's meaning; a restic run fills them with the
 * nearest meaning and adds the optional ones.
 */
export interface LibraryOffsiteResult {
  destination: string;
  /** Files new or changed since the snapshot before (rsync: files copied). */
  filesTransferred: number;
  /** Bytes this run added to the repository, compressed and encrypted (rsync: the size of the files copied). */
  bytesTransferred: number;
  /** Files in the snapshot before that are not in this one (rsync: files deleted on the NAS). */
  deleted: number;
  /** Snapshots forgotten and pruned by the retention (rsync: version sets removed). */
  prunedVersionSets: string[];
  /** Snapshots (or, before, version sets) named in the future: the clock ran ahead, or runs behind now. */
  futureVersionSets?: string[];
  /** The snapshot this run made. */
  snapshot?: string;
  /** Regular files in that snapshot. */
  snapshotFiles?: number;
  /** What `restic check` read after the backup: "structure" and which share of the data. */
  checked?: string;
  /** A plaintext copy from before the encrypted repository, still on the NAS: left for the operator to remove. */
  plaintextCopy?: string[];
}
