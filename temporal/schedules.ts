import { ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, type Client, type ScheduleDescription, type ScheduleOptions } from '@temporalio/client';
import type { Config } from '../config/config.js';
import { UsageError } from '../core/errors.js';
import { WORKFLOW_KINDS, type WorkflowType } from '../core/ids.js';

// Temporal Schedules in place of the runbook's crontab: one per job, in the configured time zone,
// overlapping runs skipped, missed runs made up within the catch-up window.

export interface ScheduleDefinition {
  id: string;
  workflowType: WorkflowType;
  cron: (config: Config) => string;
}

export const SCHEDULES: readonly ScheduleDefinition[] = [
  { id: WORKFLOW_KINDS.NightlyDbBackup, workflowType: 'NightlyDbBackup', cron: (c) => c.schedules.nightlyDbBackup },
  { id: WORKFLOW_KINDS.OffsiteSync, workflowType: 'OffsiteSync', cron: (c) => c.schedules.offsiteSync },
  { id: WORKFLOW_KINDS.WeeklyLibraryMirror, workflowType: 'WeeklyLibraryMirror', cron: (c) => c.schedules.weeklyLibraryMirror },
  { id: WORKFLOW_KINDS.BackupHealth, workflowType: 'BackupHealth', cron: (c) => c.schedules.backupHealth },
  { id: WORKFLOW_KINDS.RestoreDrill, workflowType: 'RestoreDrill', cron: (c) => c.schedules.restoreDrill },
  { id: WORKFLOW_KINDS.LibraryAudit, workflowType: 'LibraryAudit', cron: (c) => c.schedules.libraryAudit },
];

export function scheduleDefinition(id: string): ScheduleDefinition {
  const found = SCHEDULES.find((s) => s.id === id);
  if (!found) throw new UsageError(`unknown schedule ${JSON.stringify(id)}: expected one of ${SCHEDULES.map((s) => s.id).join(', ')}`);
  return found;
}

function desired(config: Config, def: ScheduleDefinition): Omit<ScheduleOptions, 'scheduleId'> {
  return {
    spec: { cronExpressions: [def.cron(config)], timezone: config.schedules.timeZone },
    action: {
      type: 'startWorkflow',
      workflowType: def.workflowType,
      taskQueue: config.temporal.taskQueue,
      // Temporal appends the scheduled time: nightly-db-backup-2026-11-27T03:00:00Z
      workflowId: def.id,
      args: [{ trigger: 'schedule' }],
    },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: `${config.schedules.catchupWindowMinutes}m` },
  };
}

export interface AppliedSchedule {
  id: string;
  action: 'created' | 'updated';
  paused: boolean;
  cron: string;
  timeZone: string;
}

/** Creates the schedules or updates them in place: the spec is replaced whole, a paused schedule stays paused. */
export async function applySchedules(client: Client, config: Config): Promise<AppliedSchedule[]> {
  const applied: AppliedSchedule[] = [];
  for (const def of SCHEDULES) {
    const want = desired(config, def);
    const row = { id: def.id, cron: def.cron(config), timeZone: config.schedules.timeZone };
    try {
      await client.schedule.create({ scheduleId: def.id, ...want, state: { note: 'created by immich-backup schedules apply' } });
      applied.push({ ...row, action: 'created', paused: false });
    } catch (err) {
      if (!(err instanceof ScheduleAlreadyRunning)) throw err;
      let paused = false;
      await client.schedule.getHandle(def.id).update((previous) => {
        paused = previous.state.paused;
        return { ...previous, spec: want.spec, action: want.action, policies: { ...previous.policies, ...want.policies }, state: { paused: previous.state.paused, note: previous.state.note } };
      });
      applied.push({ ...row, action: 'updated', paused });
    }
  }
  return applied;
}

export interface ScheduleRow {
  id: string;
  registered: boolean;
  cron?: string;
  timeZone?: string;
  paused?: boolean;
  note?: string;
  nextRuns?: string[];
  lastRun?: { workflowId: string; scheduledAt: string; status: string };
}

const MONTHS = ['JANUARY', 'FEBRUARY', 'MARCH', 'APRIL', 'MAY', 'JUNE', 'JULY', 'AUGUST', 'SEPTEMBER', 'OCTOBER', 'NOVEMBER', 'DECEMBER'];
const DAYS = ['SUNDAY', 'MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY'];

/** The server stores cron as calendar ranges; this turns one back into a 5-field cron line. */
export function calendarToCron(calendar: NonNullable<ScheduleDescription['spec']['calendars']>[number]): string {
  const field = (ranges: Array<{ start: number | string; end: number | string; step: number }>, all: [number, number], toNumber: (v: number | string) => number = Number) => {
    if (ranges.length === 1 && toNumber(ranges[0]!.start) === all[0] && toNumber(ranges[0]!.end) === all[1] && ranges[0]!.step === 1) return '*';
    return ranges
      .map((r) => {
        const [a, b] = [toNumber(r.start), toNumber(r.end)];
        return `${a === b ? a : `${a}-${b}`}${r.step > 1 ? `/${r.step}` : ''}`;
      })
      .join(',');
  };
  return [
    field(calendar.minute, [0, 59]),
    field(calendar.hour, [0, 23]),
    field(calendar.dayOfMonth, [1, 31]),
    field(calendar.month, [1, 12], (m) => MONTHS.indexOf(String(m)) + 1),
    field(calendar.dayOfWeek, [0, 6], (d) => DAYS.indexOf(String(d))),
  ].join(' ');
}

/** Each schedule's spec, paused state, next runs and the result of its last run. */
export async function listSchedules(client: Client): Promise<ScheduleRow[]> {
  const rows: ScheduleRow[] = [];
  for (const def of SCHEDULES) {
    let description: ScheduleDescription;
    try {
      description = await client.schedule.getHandle(def.id).describe();
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) {
        rows.push({ id: def.id, registered: false });
        continue;
      }
      throw err;
    }
    const last = description.info.recentActions.at(-1);
    let lastRun: ScheduleRow['lastRun'];
    if (last) {
      const status = await client.workflow
        .getHandle(last.action.workflow.workflowId)
        .describe()
        .then((d) => d.status.name, () => 'UNKNOWN');
      lastRun = { workflowId: last.action.workflow.workflowId, scheduledAt: last.scheduledAt.toISOString(), status };
    }
    rows.push({
      id: def.id,
      registered: true,
      cron: (description.spec.calendars ?? []).map(calendarToCron).join(' | '),
      ...(description.spec.timezone ? { timeZone: description.spec.timezone } : {}),
      paused: description.state.paused,
      ...(description.state.note ? { note: description.state.note } : {}),
      // The server still computes the times a paused schedule would run: none of them will happen.
      nextRuns: description.state.paused ? [] : description.info.nextActionTimes.slice(0, 3).map((d) => d.toISOString()),
      ...(lastRun ? { lastRun } : {}),
    });
  }
  return rows;
}
