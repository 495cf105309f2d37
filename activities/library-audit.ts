import { Context } from '@temporalio/activity';
import { z } from 'zod';
import { SourceEmptyError } from '../core/errors.js';
import { formatBytes } from '../core/format.js';
import type { LibraryAuditReport } from '../core/library-audit-report.js';
import { redactDeep } from '../core/redact.js';
import type { ActivityDeps } from './deps.js';
import { readAuditState, stateSchema, writeAuditState, type AuditState } from '../adapters/mirror/audit-state.js';
import { assetSchema } from '../adapters/immich/immich-assets.js';
import { mirrorProblemOf } from '../adapters/mirror/audit-pass.js';
import { assetCount, beginRun, finishRun, type AuditRunInput } from '../adapters/mirror/audit-run.js';
import { auditThread } from '../adapters/mirror/audit-thread.js';
import { hasFiles } from '../adapters/mirror/drive.js';

// LibraryAudit's work: every asset Immich's database lists, in id order, its file checked on the
// library and on the mirror against Immich's own SHA-1, read at idle I/O priority. The position
// (the last asset id done, the pass's running counts and first names) is one small snapshot,
// heartbeated (a retry after a lost worker resumes from it) and saved in a state file beside the
// worker's key (the next scheduled run goes on from it). The pass (adapters/mirror/audit-pass.ts)
// runs in a worker thread (audit-thread.ts); a run's beginning and end are audit-run.ts's.

const SAVE_EVERY_MS = 30_000;
const HEARTBEAT_EVERY_MS = 1000;

export interface AuditLibraryInput extends AuditRunInput {
  trigger: string;
}

const heartbeatSchema = z.object({ state: stateSchema });

export function createLibraryAuditActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;

  return {
    /**
     * The audit of this run's share of the pass (see auditQuota), resumed from the heartbeat of a
     * lost attempt or from the state file. Heartbeats say how far it is, in words, every second.
     */
    async auditLibrary(input: AuditLibraryInput): Promise<LibraryAuditReport> {
      const ctx = Context.current();
      const started = Date.now();
      const thread = auditThread();
      try {
        if (!(await hasFiles(lib.source))) throw new SourceEmptyError(`the library ${lib.source} is missing or holds no files: is it mounted? Nothing was audited`);

        // Where to go on from: this run's own heartbeat, else the state file.
        let state: AuditState = { version: 1 };
        let resumedFrom: string | undefined;
        const beat = heartbeatSchema.safeParse(ctx.info.heartbeatDetails);
        if (beat.success && beat.data.state.run?.workflowId === input.workflowId) {
          state = beat.data.state;
          resumedFrom = `attempt ${ctx.info.attempt - 1}'s last heartbeat (after ${state.pass?.covered ?? 0} assets of the pass)`;
        }
        let invalidNote: string | undefined;
        if (!resumedFrom) {
          const saved = await readAuditState(config);
          if (saved.invalid) {
            invalidNote = `the saved audit position was not used (${saved.invalid}): a new pass started`;
            logger.warn({ reason: saved.invalid }, 'audit state not valid; starting a new pass');
          }
          state = saved.state ?? { version: 1 };
          if (state.run?.workflowId === input.workflowId) resumedFrom = `the state file (after ${state.pass?.covered ?? 0} assets of the pass)`;
        }

        const [schema, mirrorReason] = await Promise.all([assetSchema(config, input.target), mirrorProblemOf(lib)]);
        const total = await assetCount(config, input.target, schema.table);

        // A new run: a new pass when none is under way (or --full), then this run's share of it.
        if (state.run?.workflowId !== input.workflowId) await beginRun(config, state, input, schema.table, total, mirrorReason);
        // The mirror's reason, this attempt: it may have been plugged in or pulled since the last.
        let mirrorOff = mirrorReason;
        if (mirrorOff) state.run!.mirrorReason = mirrorOff;

        let current = '';
        const progress = () => {
          const pass = state.pass ?? state.lastPass;
          // The run's part is gone once the run is recorded as finished; a heartbeat may still fire then.
          const run = state.run ?? { covered: 0, bytes: 0, quota: 0 };
          const secs = Math.max(1, (Date.now() - started) / 1000);
          return {
            step: 'auditing the library',
            checked: `${pass?.covered ?? 0} of ${total} assets (pass ${pass?.number ?? '-'}; this run ${run.covered} of ${run.quota >= Number.MAX_SAFE_INTEGER ? 'the rest' : run.quota})`,
            bytes: formatBytes(run.bytes),
            rate: `${formatBytes(run.bytes / secs)}/s`,
            current,
            mirror: mirrorOff ? `not checked: ${mirrorOff}` : 'checked',
            state,
          };
        };
        const beatNow = () => ctx.heartbeat(redactDeep(progress()));
        beatNow();
        const timer = setInterval(beatNow, HEARTBEAT_EVERY_MS);
        let savedAt = Date.now();
        // One save at a time, the last one after every periodic one.
        let saving: Promise<void> = Promise.resolve();
        try {
          await writeAuditState(config, state);
          if (!state.run!.passCompleted && state.pass) {
            const result = await thread.run({ config, target: input.target, schema, state, mirrorOff }, (e) => {
              if (e.type === 'commit') state = e.state;
              current = e.current;
              if (Date.now() - savedAt > SAVE_EVERY_MS) {
                savedAt = Date.now();
                const snapshot = state;
                saving = saving.then(() => writeAuditState(config, snapshot)).catch((err: Error) => logger.warn({ err: err.message }, 'audit position not saved; the run goes on'));
              }
            });
            state = result.state;
            mirrorOff = result.mirrorOff;
          }
          // No heartbeat from here on: the state is rewritten below (state.run goes), and a beat
          // in between would read a run that is no longer there.
          clearInterval(timer);
          const run = state.run!;
          const report = finishRun(state, { workflowId: input.workflowId, trigger: input.trigger, total, startedMs: started, resumedFrom, invalidNote, mirrorOff });
          await saving;
          await writeAuditState(config, state);
          logger.info({ covered: run.covered, bytes: run.bytes, pass: report.pass.number, completed: run.passCompleted, library: report.pass.library.ok, mirror: report.pass.mirror.ok }, 'library audit done');
          return report;
        } finally {
          clearInterval(timer);
        }
      } finally {
        await thread.close();
      }
    },
  };
}
