// The worker's workflowsPath: every workflow, one file each.
export { NightlyDbBackup } from './nightly-db-backup.js';
export type { NightlyDbBackupInput, NightlyDbBackupReport } from './nightly-db-backup.js';
export { OffsiteSync } from './offsite-sync.js';
export type { OffsiteSyncInput, OffsiteSyncReport } from './offsite-sync.js';
export { WeeklyLibraryMirror } from './weekly-library-mirror.js';
export type { WeeklyLibraryMirrorInput, WeeklyLibraryMirrorReport } from './weekly-library-mirror.js';
export { RestoreDatabase } from './restore-database.js';
export type { RestoreDatabaseInput, RestoreDatabaseReport } from './restore-database.js';
export { RestoreLibrary } from './restore-library.js';
export type { RestoreLibraryInput, RestoreLibraryReport } from './restore-library.js';
export { ResourceLock } from './resource-lock.js';
export type { ResourceLockInput } from './resource-lock.js';
export { RestoreDrill } from './restore-drill.js';
export type { RestoreDrillInput, RestoreDrillReport } from './restore-drill.js';
export { BackupHealth } from './backup-health.js';
export type { BackupHealthInput, BackupHealthReport } from './backup-health.js';
export { LibraryAudit } from './library-audit.js';
export type { LibraryAuditInput, LibraryAuditReport } from './library-audit.js';
