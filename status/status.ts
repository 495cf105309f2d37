import { readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { failureReason } from '../temporal/client.js';
import type { Config } from '../config/config.js';
import { checksumFileName, encryptedFileName, isDumpName, parseDumpName } from '../core/dump-names.js';
import { ageText, agoText, formatBytes, zonedTime } from '../core/format.js';
import { WORKFLOW_KINDS, type WorkflowType } from '../core/ids.js';
import { listSchedules } from '../temporal/schedules.js';
import { openDumpStore, readChecksumFile } from '../adapters/dump-store/index.js';
import { PROBLEM_STATES, type DrillResult, type OffsiteDrill, type RowState, type StatusReport, type StatusRow } from '../core/reports.js';
import { isMountPoint } from '../adapters/mirror/drive.js';
import { pairingText, readPairings } from '../adapters/mirror/library-versions.js';
import { versionsDirOf } from '../core/library-layout.js';
import { auditStatus } from '../adapters/mirror/audit-state.js';
import { recoveryStatus } from '../adapters/dump-store/recovery.js';
import { describeAudit, problemsOf } from '../core/library-audit-report.js';
import { remoteDumps } from '../adapters/nas/remote-dumps.js';
import { nasLabel, runRemote } from '../adapters/nas/ssh.js';

// What `status` prints and BackupHealth alarms on: one row per thing an operator cares about,
// each with a state and a one-line summary. Every row is checked on its own, so an unreachable
// NAS or drive (or Temporal) is that row's state and the others are still reported; and every
// row within status.rowTimeoutSeconds, so a NAS or drive that hangs is "unreachable" too, and
// whatever its check started (ssh) is stopped.

const HOUR_MS = 3_600_000;
export const FAILED_STATUSES: ReadonlySet<string> = new Set(['FAILED', 'TIMED_OUT', 'TERMINATED', 'CANCELED']);
/** Workflows whose failed last run is a problem; a failed restore is history an operator already saw. */
const WATCHED: readonly WorkflowType[] = ['NightlyDbBackup', 'OffsiteSync', 'WeeklyLibraryMirror', 'RestoreDrill', 'LibraryAudit'];
const SHOWN: readonly WorkflowType[] = [...WATCHED, 'BackupHealth', 'RestoreDatabase', 'RestoreLibrary'];

function row(id: string, state: RowState, summary: string, details?: Record<string, unknown>, problem = PROBLEM_STATES.has(state)): StatusRow {
  return { id, state, problem, summary, ...(details ? { details } : {}) };
}

interface LastRun {
  workflowId: string;
  runId: string;
  status: string;
  closedAt: Date;
  /** Read for this row's summary; never put into a row: BackupHealth's own result would then nest every earlier one. */
  result?: unknown;
  failure?: string;
}

/** What a row says of a run: IDs, status, close time, its failure in one line. */
const runDetails = (last: LastRun) => ({ workflowId: last.workflowId, runId: last.runId, status: last.status, closedAt: last.closedAt.toISOString(), ...(last.failure ? { failure: last.failure } : {}) });

/** The newest closed run of a workflow type (visibility lists newest first; the first page is searched). */
export async function newestClosedRun(client: Client, type: WorkflowType, onlyCompleted = false): Promise<{ workflowId: string; runId: string; status: string; closedAt: Date } | undefined> {
  let newest: Awaited<ReturnType<typeof newestClosedRun>>;
  let seen = 0;
  const query = `WorkflowType = "${type}" AND ExecutionStatus ${onlyCompleted ? '= "Completed"' : '!= "Running"'}`;
  for await (const run of client.workflow.list({ query, pageSize: 20 })) {
    if (run.closeTime && (!newest || run.closeTime > newest.closedAt)) newest = { workflowId: run.workflowId, runId: run.runId, status: run.status.name, closedAt: run.closeTime };
    if (++seen >= 20) break;
  }
  return newest;
}

/** The newest closed run of a workflow type, with its result, or its failure in one line. */
export async function lastRun(client: Client, type: WorkflowType, onlyCompleted = false): Promise<LastRun | undefined> {
  const newest = await newestClosedRun(client, type, onlyCompleted);
  if (!newest) return undefined;
  const handle = client.workflow.getHandle(newest.workflowId, newest.runId);
  if (newest.status === 'COMPLETED') return { ...newest, result: await handle.result() };
  const failure = await handle.result().then(() => undefined, (err: unknown) => failureReason(err).replace(/^workflow failed: /, ''));
  return { ...newest, ...(failure ? { failure } : {}) };
}

async function isRunning(client: Client, type: WorkflowType): Promise<boolean> {
  for await (const _ of client.workflow.list({ query: `WorkflowType = "${type}" AND ExecutionStatus = "Running"`, pageSize: 1 })) return true;
  return false;
}

async function localDumpRow(config: Config, now: number): Promise<StatusRow> {
  const dir = config.backup.dir;
  const all = (await readdir(dir).catch(() => [] as string[])).filter(isDumpName).sort();
  const store = openDumpStore(config);
  try {
    await store.key();
  } catch (err) {
    return row('local-dump', 'failed', `dumps not checked: ${(err as Error).message}`);
  }
  // "latest" as restore and the drill see it: authentic, not from the future, not flagged. What was
  // passed over (a forged or future-stamped dump, a flagged one, a symlink named like a dump) is an alarm.
  const { dump: newest, passedOver } = await store.latest({ nowMs: now });
  const alarms = passedOver.map((p) => `${p.file}: ${p.reason}`);
  if (!newest) return row('local-dump', alarms.length ? 'failed' : 'missing', alarms.length ? `no usable dump in ${dir}; ${alarms.join('; ')}` : all.length ? `${all.length} dump(s) in ${dir}, none validated` : `no dump in ${dir}`);
  const age = now - parseDumpName(newest.file)!.getTime();
  const { size } = await stat(join(dir, newest.file));
  const stale = age > config.status.dbStaleHours * HOUR_MS;
  const rows = !!newest.rows;
  const summary = `${newest.file}: ${ageText(age)} old${stale ? ` (stale after ${config.status.dbStaleHours} h)` : ''}, ${formatBytes(size)}, validated and tagged${rows ? ', row counts recorded' : ''}`;
  const details = { file: newest.file, ageHours: +(age / HOUR_MS).toFixed(2), bytes: size, validated: true, sha256: newest.sha256, rowCounts: rows, dumps: all.length, ...(alarms.length ? { passedOver: alarms } : {}) };
  if (alarms.length) return row('local-dump', 'failed', `${alarms.join('; ')}; the latest usable is ${summary}`, details);
  return row('local-dump', stale ? 'stale' : 'ok', summary, details);
}

/** Whether the operator holds the recovery code: without it, the NAS copies die with this host. */
async function recoveryRow(config: Config): Promise<StatusRow> {
  const status = await recoveryStatus(config.security.keyFile);
  if (!status) return row('recovery-code', 'missing', 'no recovery code yet: the worker makes one on its first start (npm start); then: immich-backup recovery-code');
  if (!status.confirmed) return row('recovery-code', 'missing', 'recovery code not confirmed: a new host could not read the NAS copies; run immich-backup recovery-code, write the code down, type it back', { confirmed: false, created: status.created });
  return row('recovery-code', 'ok', `recovery code confirmed (made ${status.created.slice(0, 10)}); the keys on the NAS open with it`, { confirmed: true, created: status.created });
}

async function nasRow(config: Config, now: number, signal: AbortSignal): Promise<StatusRow> {
  const offsite = config.offsite;
  const where = nasLabel(offsite);
  try {
    const latest = (await remoteDumps(offsite, signal)).at(-1);
    if (!latest) return row('nas-copy', 'missing', `no dump on the NAS ${where}`);
    const newest = latest.file;
    // The encrypted copy's ciphertext against its .age.sha256; a plain one from before encryption against its .sha256 and the local one.
    const path = `${offsite.remoteDir}/${latest.encrypted ? encryptedFileName(newest) : newest}`;
    const [{ stdout: sum }, { stdout: recorded }] = [
      await runRemote(offsite, ['sha256sum', '--', path], { label: 'ssh sha256sum', signal }),
      await runRemote(offsite, ['cat', '--', `${path}.sha256`], { label: 'ssh cat', signal }),
    ];
    const actual = sum.trim().split(/\s+/)[0] ?? '';
    const expected = recorded.trim().split(/\s+/)[0] ?? '';
    const local = latest.encrypted ? '' : await readChecksumFile(join(config.backup.dir, checksumFileName(newest)));
    const matches = actual === expected && (local === '' || local === actual);
    const age = now - parseDumpName(newest)!.getTime();
    const stale = age > config.status.offsiteStaleHours * HOUR_MS;
    const details = { file: newest, ageHours: +(age / HOUR_MS).toFixed(2), encrypted: latest.encrypted, sha256: actual, checksumMatches: matches };
    if (!matches) return row('nas-copy', 'failed', `${newest} on the NAS: sha256 ${actual} does not match its recorded ${expected}${local && local !== expected ? ` nor the local ${local}` : ''}`, details);
    return row('nas-copy', stale ? 'stale' : 'ok', `${newest}${latest.encrypted ? '' : ' (a plain copy from before encryption)'}: ${ageText(age)} old${stale ? ` (stale after ${config.status.offsiteStaleHours} h)` : ''}, sha256 matches (${where})`, details);
  } catch (err) {
    return row('nas-copy', 'unreachable', `NAS not checked: ${(err as Error).message.split('\n')[0]}`, { destination: where });
  }
}

async function mirrorRow(config: Config, client: Client | undefined, now: number): Promise<StatusRow> {
  const lib = config.library;
  const last = client ? await lastRun(client, 'WeeklyLibraryMirror', true).catch(() => undefined) : undefined;
  const lastText = last ? `last mirrored ${agoText(now - last.closedAt.getTime())} (${last.workflowId})` : client ? 'never mirrored' : 'last run unknown (Temporal not reachable)';
  const details: Record<string, unknown> = { mountPoint: lib.mountPoint, ...(last ? { lastSuccess: last.closedAt.toISOString(), workflowId: last.workflowId, runId: last.runId } : {}) };
  if (!(await isMountPoint(lib.mountPoint))) return row('library-mirror', 'unreachable', `drive not mounted at ${lib.mountPoint}; ${lastText}`, details);
  const fs = await statfs(lib.mountPoint);
  const used = (fs.blocks - fs.bfree) * fs.bsize;
  details.driveUsedBytes = used;
  // Which dump the mirror on the drive pairs with (recorded there by the run that made it): restore the two together.
  const paired = (await readPairings(versionsDirOf(lib)).catch(() => [])).at(-1);
  if (paired) details.pairing = paired;
  const drive = `${formatBytes(used)} used on ${lib.mountPoint}${paired ? `; ${pairingText(paired)}` : ''}`;
  // Without Temporal the last run is unknown, not missing: the temporal row carries that problem.
  if (!client) return row('library-mirror', 'ok', `${drive}; ${lastText}`, details, false);
  if (!last) return row('library-mirror', 'missing', `${drive}; ${lastText}`, details);
  const stale = now - last.closedAt.getTime() > config.status.mirrorStaleDays * 24 * HOUR_MS;
  return row('library-mirror', stale ? 'stale' : 'ok', `${drive}; ${lastText}${stale ? ` (stale after ${config.status.mirrorStaleDays} days)` : ''}`, details);
}

/**
 * The last library audit, from its state file: when, what the last complete pass and the pass
 * under way found, stale after status.auditStaleDays without a complete pass. Never audited is
 * not yet a problem (its schedule runs monthly); a failed audit run is, in last-run:library-audit.
 */
async function auditRow(config: Config, now: number): Promise<StatusRow> {
  const { state, invalid, file } = await auditStatus(config).catch((err: Error) => ({ state: undefined, invalid: err.message, file: '' }));
  if (invalid) return row('library-audit', 'failed', `audit position not readable: ${invalid}; the next audit starts a new pass`);
  if (!state?.lastRun) return row('library-audit', 'never', state?.run ? `first audit under way (${state.run.workflowId})` : 'never audited: the library-audit schedule runs it, or: immich-backup audit library', { file });
  const last = state.lastRun;
  const ago = (iso: string) => agoText(now - Date.parse(iso));
  const parts = [`last audit ${ago(last.finishedAt)} (${last.workflowId}, ${last.covered} assets)`];
  if (state.lastPass) parts.push(`last complete pass ${ago(state.lastPass.completedAt)}: ${describeAudit({ pass: { ...state.lastPass, completed: true } })}`);
  if (state.pass) parts.push(`under way: ${describeAudit({ pass: { ...state.pass, completed: false } })}`);
  const details = { file, lastRun: last, ...(state.lastPass ? { lastPass: state.lastPass } : {}), ...(state.pass ? { pass: state.pass } : {}) };
  const damaged = [state.lastPass, state.pass].filter((p) => p && problemsOf(p) > 0);
  if (damaged.length) return row('library-audit', 'failed', `originals missing or damaged: ${parts.join('; ')}`, details);
  const since = state.lastPass?.completedAt ?? state.pass?.startedAt;
  const stale = since !== undefined && now - Date.parse(since) > config.status.auditStaleDays * 24 * HOUR_MS;
  return row('library-audit', stale ? 'stale' : 'ok', `${parts.join('; ')}${stale ? ` (stale: no complete pass for ${config.status.auditStaleDays} days)` : ''}`, details);
}

async function temporalRows(config: Config, client: Client, now: number): Promise<StatusRow[]> {
  const rows: StatusRow[] = [];
  for (const s of await listSchedules(client)) {
    if (!s.registered) rows.push(row(`schedule:${s.id}`, 'missing', 'not registered: run `immich-backup schedules apply` (or `start`)'));
    else rows.push(row(`schedule:${s.id}`, s.paused ? 'paused' : 'ok', `${s.cron} (${s.timeZone ?? 'UTC'})${s.paused ? `, PAUSED${s.note ? `: ${s.note}` : ''}; no next run` : `; next ${s.nextRuns?.[0] ? zonedTime(s.nextRuns[0], s.timeZone) : '-'}`}`, { cron: s.cron, paused: s.paused, nextRuns: s.nextRuns }));
  }
  for (const type of SHOWN) {
    const kind = WORKFLOW_KINDS[type];
    const [last, running] = await Promise.all([lastRun(client, type), isRunning(client, type)]);
    const now_ = running ? '; one running now' : '';
    if (!last) {
      // A drill that never ran is missing proof; the other kinds are covered by their own rows.
      const missing = type === 'RestoreDrill';
      rows.push(row(`last-run:${kind}`, missing ? 'missing' : running ? 'running' : 'never', `never ran${now_}`));
      continue;
    }
    const ago = agoText(now - last.closedAt.getTime());
    const details = runDetails(last);
    if (FAILED_STATUSES.has(last.status)) {
      rows.push(row(`last-run:${kind}`, 'failed', `${last.status} ${ago} (${last.workflowId}): ${last.failure ?? ''}${now_}`, details, WATCHED.includes(type)));
      continue;
    }
    let summary = `${last.status} ${ago} (${last.workflowId})`;
    // A dry run changed nothing: it must not read as the last restore.
    if ((last.result as { outcome?: string } | undefined)?.outcome === 'dry-run') summary += ': dry run, nothing was changed';
    let state: RowState = 'ok';
    if (type === 'RestoreDrill') {
      const drill = last.result as DrillResult & { offsite?: OffsiteDrill };
      summary += `: passed, ${drill.dump} restored into a throwaway PostgreSQL ${drill.postgresVersion}, ${drill.tables} tables and ${drill.rows} rows as recorded`;
      // A passed run's offsite part passed too (a failed one fails the run).
      if (drill.offsite) summary += `; offsite copy ${drill.offsite.file ?? ''} ${drill.offsite.proof === 'same-as-local' ? 'decrypted and verified: the same bytes' : 'decrypted, verified and restored as recorded'}`;
      if (now - last.closedAt.getTime() > config.status.drillStaleDays * 24 * HOUR_MS) {
        state = 'stale';
        summary += ` (stale after ${config.status.drillStaleDays} days)`;
      }
    }
    rows.push(row(`last-run:${kind}`, state, summary + now_, details));
  }
  return rows;
}

/**
 * One row's check within status.rowTimeoutSeconds. Past the bound, or when `parent` aborts (status
 * interrupted), the check's signal aborts, which stops every command it started (their whole
 * process groups), and the row is `late(why)`. A check stuck in the kernel (a hung drive's statfs)
 * cannot be stopped, only no longer waited for.
 */
async function bounded<T>(config: Config, parent: AbortSignal | undefined, late: (why: string) => T, check: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const seconds = config.status.rowTimeoutSeconds;
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const stopped = new Promise<T>((resolve) => {
    const stop = (why: string) => {
      resolve(late(why));
      controller.abort(new Error(why));
    };
    timer = setTimeout(() => stop(`no answer within ${seconds} s (status.rowTimeoutSeconds)`), seconds * 1000);
    if (parent?.aborted) stop('status was interrupted');
    parent?.addEventListener('abort', () => stop('status was interrupted'), { once: true });
  });
  try {
    return await Promise.race([check(controller.signal), stopped]);
  } finally {
    clearTimeout(timer);
    controller.abort(new Error('row checked')); // nothing a finished check started outlives it
  }
}

/** Every check, each row on its own; `client` undefined: Temporal could not be reached (`reason`); `signal`: stop every check (status interrupted). */
export async function collectStatus(config: Config, client: Client | undefined, now = Date.now(), temporalError?: string, signal?: AbortSignal): Promise<StatusReport> {
  const [local, nas, mirror, audit, recovery, temporal] = await Promise.all([
    bounded(config, signal, (why) => row('local-dump', 'unreachable', `${config.backup.dir} not checked: ${why}`), () => localDumpRow(config, now)),
    bounded(config, signal, (why) => row('nas-copy', 'unreachable', `NAS ${nasLabel(config.offsite)} not checked: ${why}`, { destination: nasLabel(config.offsite) }), (s) => nasRow(config, now, s)),
    bounded(config, signal, (why) => row('library-mirror', 'unreachable', `drive at ${config.library.mountPoint} not checked: ${why}`, { mountPoint: config.library.mountPoint }), () => mirrorRow(config, client, now)),
    bounded(config, signal, (why) => row('library-audit', 'unreachable', `audit state not checked: ${why}`), () => auditRow(config, now)),
    bounded(config, signal, (why) => row('recovery-code', 'unreachable', `recovery code not checked: ${why}`), () => recoveryRow(config).catch((err: Error) => row('recovery-code', 'failed', err.message.split('\n')[0]!))),
    client
      ? bounded(config, signal, (why) => [row('temporal', 'unreachable', `Temporal not checked: ${why}`)], () =>
          temporalRows(config, client, now).catch((err: Error) => [row('temporal', 'unreachable', `Temporal not checked: ${err.message.split('\n')[0]}`)]),
        )
      : Promise.resolve([row('temporal', 'unreachable', temporalError ?? 'Temporal not reachable')]),
  ]);
  const rows = [local, nas, mirror, audit, recovery, ...temporal];
  const problems = rows.filter((r) => r.problem).map((r) => `${r.id} ${r.state}: ${r.summary}`);
  return { checkedAt: new Date(now).toISOString(), ok: problems.length === 0, problems, rows };
}
