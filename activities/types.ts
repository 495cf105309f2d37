// Shapes passed between workflows and activities. Pure types: workflows import them.

/** Where the PostgreSQL tools run: inside Immich's database container, or on this host. */
export type PostgresTarget = { runtime: 'docker'; container: string } | { runtime: 'none' };

export interface DumpDatabaseInput {
  target: PostgresTarget;
  /** UTC YYYYMMDD_HHMMSS, fixed by the workflow so every retry writes the same name. */
  stamp: string;
}

export interface DumpResult {
  file: string;
  path: string;
  bytes: number;
  sha256: string;
  durationMs: number;
}

export interface ValidateDumpInput {
  file: string;
}

export interface ValidatedDump {
  file: string;
  bytes: number;
  sqlBytes: number;
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
