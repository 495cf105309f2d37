// What an operator is shown before approving a restore, and the messages that restores and the CLI
// share (update, query and signal names). Pure: workflows, activities and the CLI import it.

import { agoText, formatBytes } from './format.js';
import { sha256Text } from './sha256-text.js';

/** Where a dump to restore comes from. */
export type DumpOrigin = 'local' | 'offsite' | 'restore-point' | 'immich';

/** Everything known about one dump, for the approval prompt, the report and `dumps`. */
export interface DumpFacts {
  file: string;
  origin: DumpOrigin;
  /** ISO time the name encodes (UTC), when it encodes one. */
  stamp?: string;
  bytes: number;
  sha256: string;
  /** Databases the dump replaces. */
  databases: string[];
  /** Recorded at dump time (ours): tables and rows over every database. */
  tables?: number;
  rows?: number;
  /** The Immich version the dump was made with (recorded at dump time, or in Immich's own file name). */
  immichVersion?: string;
  /** true: its provenance tag verified with the worker's key; false: Immich's own (no tag, taken on the strict filter alone). */
  authenticated: boolean;
}

export interface RestorePlan {
  /** The workflow waiting for approval. */
  workflowId: string;
  what: 'database' | 'library';
  /** The database restore's dump; the approval must carry its sha256. */
  dump?: DumpFacts;
  runningImmichVersion?: string;
  /** The dump's Immich version differs from the running one: approving needs acceptVersionChange. */
  versionChange: boolean;
  /** false: restoring without a restore point (no way back). */
  restorePoint: boolean;
  /** What the restore will do once approved, in order. */
  steps: string[];
  /** When the approval wait ends (ISO): after it nothing changes. */
  deadline: string;
}

export interface ApproveRequest {
  /** The sha256 of the dump the operator was shown (database restores). */
  sha256?: string;
  /** The approval token the CLI derives from the worker's key and this run (adapters/run-auth/tokens.ts). */
  token?: string;
  /** Who approved: the OS user the CLI runs as (and the sudo user behind it). */
  by?: string;
  /** Needed when the dump was made by another Immich version than the one running. */
  acceptVersionChange?: boolean;
}

export interface RejectRequest {
  token?: string;
  by?: string;
  reason?: string;
}

export const AWAITING_APPROVAL = 'awaiting approval';

/** The facts of one dump, one line each. */
export function describeDump(d: DumpFacts, nowMs: number): string[] {
  const origin = { local: 'the staging dir', offsite: 'the NAS (fetched and verified)', 'restore-point': 'a restore point taken before an earlier restore', immich: "Immich's own backups folder" }[d.origin];
  return [
    `dump:     ${d.file}`,
    `from:     ${origin}`,
    `made:     ${d.stamp ? `${d.stamp} (${agoText(nowMs - Date.parse(d.stamp))})` : 'unknown'}`,
    `size:     ${formatBytes(d.bytes)}, sha256 ${d.sha256}`,
    `replaces: ${d.databases.length ? d.databases.map((db) => `database ${db}`).join(', ') : 'unknown databases'}${d.origin === 'immich' ? '' : ' and the roles'}`,
    `rows:     ${d.tables !== undefined ? `${d.rows} rows in ${d.tables} tables, as counted when the dump was made` : 'not recorded for this dump'}`,
    `Immich:   ${d.immichVersion ? `made with Immich ${d.immichVersion}` : 'version not recorded'}`,
    d.authenticated
      ? 'trust:    written by this tool: its provenance tag verifies with the worker\'s key'
      : "trust:    UNAUTHENTICATED: Immich's own backup carries no tag; it passed the strict filter (no psql commands, no recognisable server-side execution), but code hidden in function bodies cannot be ruled out",
  ];
}

/** The approval prompt: what will be loaded, what happens, how to approve or reject. */
export function describePlan(plan: RestorePlan, nowMs: number): string {
  const lines: string[] = [];
  if (plan.dump) lines.push(...describeDump(plan.dump, nowMs));
  if (plan.what === 'database') {
    lines.push(`running:  Immich ${plan.runningImmichVersion ?? 'version unknown'}`);
    if (plan.versionChange) lines.push(`VERSION CHANGE: the dump was made with Immich ${plan.dump?.immichVersion}, Immich ${plan.runningImmichVersion} runs now: approve with --accept-version-change only if you mean to run that version against it`);
    if (!plan.restorePoint) lines.push('NO RESTORE POINT: the live database is replaced with no way back (a partial salvage of what can still be read is saved first)');
  }
  lines.push('then:', ...plan.steps.map((s, i) => `  ${i + 1}. ${s}`));
  const approve = `immich-backup restore approve ${plan.workflowId}${plan.versionChange ? ' --accept-version-change' : ''}`;
  lines.push(`approve:  ${approve}`, `reject:   immich-backup restore reject ${plan.workflowId}`, `waits until ${plan.deadline}; without an answer nothing changes`);
  return lines.join('\n');
}

/** What an approval may record as its approver: an OS user name, with the sudo user behind it. */
export const APPROVER = /^[A-Za-z0-9_.@ -]{1,64}(?: \(sudo from [A-Za-z0-9_.-]{1,64}\))?$/;

/**
 * Why an approval does not fit the plan, or undefined when it does. Used by the Update's validator:
 * the token must hash to the run's commitment (made by its authorization step from the worker's key).
 */
export function approvalProblem(plan: RestorePlan, request: unknown, commitment: string | undefined): string | undefined {
  if (request === null || typeof request !== 'object') return 'an approval carries { sha256, token, by }: use `immich-backup restore approve`';
  const r = request as ApproveRequest;
  if (!commitment || typeof r.token !== 'string' || sha256Text(r.token) !== commitment) {
    return 'not approved: the approval carries no valid approval token for this run (approve with `immich-backup restore approve`, as the user that can read the worker\'s key)';
  }
  if (typeof r.by !== 'string' || !APPROVER.test(r.by)) return 'not approved: `by` must be the OS user approving (the CLI fills it in)';
  if (plan.dump) {
    if (typeof r.sha256 !== 'string' || r.sha256 !== plan.dump.sha256) {
      return `this run waits to load ${plan.dump.file} with sha256 ${plan.dump.sha256}; the approval names ${typeof r.sha256 === 'string' ? `sha256 ${r.sha256}` : 'no sha256'}: not approved`;
    }
  }
  if (plan.versionChange && r.acceptVersionChange !== true) {
    return `the dump was made with Immich ${plan.dump?.immichVersion} and Immich ${plan.runningImmichVersion} runs now: approve with --accept-version-change if that is what you want`;
  }
  return undefined;
}
