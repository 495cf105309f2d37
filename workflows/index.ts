// The worker's workflowsPath: every workflow, one file each.
export { NightlyDbBackup } from './nightly-db-backup.js';
export type { NightlyDbBackupInput, NightlyDbBackupReport } from './nightly-db-backup.js';
