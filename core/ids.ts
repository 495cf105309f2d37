// Workflow IDs say what and when. Pure: safe in workflows, the CLI and schedules alike.

/** Workflow type → the kebab-case kind that prefixes its run IDs and names its schedule. */
export const WORKFLOW_KINDS = {
  NightlyDbBackup: 'nightly-db-backup',
  OffsiteSync: 'offsite-sync',
  WeeklyLibraryMirror: 'weekly-library-mirror',
  RestoreDatabase: 'restore-database',
  RestoreLibrary: 'restore-library',
  RestoreDrill: 'restore-drill',
  BackupHealth: 'backup-health',
  LibraryAudit: 'library-audit',
} as const;

export type WorkflowType = keyof typeof WORKFLOW_KINDS;

/** e.g. nightly-db-backup-cli-20261126T030000Z */
export function runId(kind: string, trigger: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `${kind}-${trigger}-${stamp}`;
}

/** The Keyword search attributes every run carries (registered by `start`, `worker` and `schedules apply`). */
export const SEARCH_ATTRIBUTES = {
  /** The run's kind: nightly-db-backup, offsite-sync, ... */
  kind: 'BackupKind',
  /** running (a restore: awaiting-approval while it waits), then success or failure (BackupHealth: healthy or alarm). */
  outcome: 'BackupOutcome',
} as const;

export type Outcome = 'running' | 'awaiting-approval' | 'success' | 'failure' | 'healthy' | 'alarm';

/** What a run may hold alone: the database (backups, restores, the drill), the library and its mirror, or the library audit's position (one pass at a time). */
export type LockedResource = 'database' | 'library' | 'library-audit';

export const LOCK_WORKFLOW_PREFIX = 'immich-backup-lock-';

/** The ResourceLock workflow that guards one resource for one task queue (a worker fleet). */
export function lockWorkflowId(taskQueue: string, resource: LockedResource): string {
  return `${LOCK_WORKFLOW_PREFIX}${resource}-${taskQueue}`;
}
