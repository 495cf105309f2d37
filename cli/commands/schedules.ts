import { ScheduleOverlapPolicy } from '@temporalio/client';
import type { Command } from 'commander';
import { zonedTime } from '../../core/format.js';
import { applySchedules, listSchedules, scheduleDefinition } from '../../temporal/schedules.js';
import { registerSearchAttributes } from '../../temporal/search-attributes.js';
import { configOf, usageCheck, withClient } from '../context.js';

/** A schedule's ID: one of SCHEDULES, refused before connecting. */
const scheduleArgument = usageCheck((id: string) => scheduleDefinition(id).id);

/** `schedules apply|list|pause|resume|trigger`: the Temporal Schedules that replace cron. */
export function registerSchedules(program: Command): void {
  const schedules = program.command('schedules').description('The Temporal Schedules that replace cron: nightly-db-backup, offsite-sync, weekly-library-mirror, backup-health, restore-drill, library-audit');

  schedules
    .command('apply')
    .description('Create or update the schedules from the config (a paused schedule stays paused); registers the search attributes')
    .action(async (_opts, cmd: Command) => {
      const config = configOf(cmd);
      await withClient(config, async (client) => {
        await registerSearchAttributes(client.connection.operatorService, config.temporal.namespace);
        for (const s of await applySchedules(client, config)) {
          process.stdout.write(`${s.action} ${s.id}: ${s.cron} (${s.timeZone})${s.paused ? ', still paused' : ''}\n`);
        }
      });
    });

  schedules
    .command('list')
    .description('Each schedule: spec, paused state, next runs, last result')
    .option('--json', 'print as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withClient(configOf(cmd), async (client) => {
        const rows = await listSchedules(client);
        if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        for (const r of rows) {
          if (!r.registered) {
            process.stdout.write(`${r.id}: not registered (run \`immich-backup schedules apply\`)\n`);
            continue;
          }
          process.stdout.write(
            `${r.id}: ${r.cron} (${r.timeZone ?? 'UTC'})${r.paused ? ` PAUSED${r.note ? `: ${r.note}` : ''}` : ''}\n` +
              // As a clock in the schedule's own zone shows them; a paused schedule runs at none of them.
              `  next: ${r.paused ? 'none (paused)' : r.nextRuns?.map((t) => zonedTime(t, r.timeZone)).join(', ') || '-'}\n` +
              `  last: ${r.lastRun ? `${r.lastRun.status} ${r.lastRun.workflowId}` : 'never ran'}\n`,
          );
        }
      });
    });

  for (const verb of ['pause', 'resume'] as const) {
    schedules
      .command(verb)
      .argument('<id>', 'the schedule', scheduleArgument)
      .description(`${verb === 'pause' ? 'Pause' : 'Resume'} one schedule`)
      .option('--reason <text>', 'recorded as the schedule\'s note')
      .action(async (id: string, opts: { reason?: string }, cmd: Command) => {
        await withClient(configOf(cmd), async (client) => {
          const handle = client.schedule.getHandle(id);
          const note = opts.reason ?? `${verb}d with immich-backup`;
          await (verb === 'pause' ? handle.pause(note) : handle.unpause(note));
          process.stdout.write(`${id} ${verb}d\n`);
        });
      });
  }

  schedules
    .command('trigger')
    .argument('<id>', 'the schedule', scheduleArgument)
    .description('Start the schedule\'s workflow now (skipped if a run is still going)')
    .action(async (id: string, _opts, cmd: Command) => {
      await withClient(configOf(cmd), async (client) => {
        // The SDK's default is ALLOW_ALL: a run alongside the running one, which the schedule then does not list as its own (a deleting mirror is refused).
        await client.schedule.getHandle(id).trigger(ScheduleOverlapPolicy.SKIP);
        process.stdout.write(`${id} triggered\n`);
      });
    });
}
