// Workflow IDs say what and when. Pure: safe in workflows, the CLI and schedules alike.

export const WORKFLOW_KINDS = {
  NightlyDbBackup: 'nightly-db-backup',
} as const;

/** e.g. nightly-db-backup-cli-20261126T030000Z */
export function runId(kind: string, trigger: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `${kind}-${trigger}-${stamp}`;
}
