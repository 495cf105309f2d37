import { condition, defineQuery, defineSignal, log, setHandler } from '@temporalio/workflow';

// What the two restore workflows share: the step an operator can query, the approval signal the
// CLI sends, and per-step durations for the report.

export const approveSignal = defineSignal<[{ by?: string }]>('approve');
export const currentStepQuery = defineQuery<string>('currentStep');

export interface RestoreSteps {
  durations: Record<string, number>;
  /** Runs one named step: it becomes the current step, and its duration is recorded. */
  timed<T>(name: string, work: () => Promise<T>): Promise<T>;
  /** True at once when pre-approved (--yes); else waits for the signal up to timeoutMs. */
  approval(timeoutMs: number): Promise<boolean>;
  done(): void;
}

export function restoreSteps(preApproved: boolean): RestoreSteps {
  let step = 'starting';
  let approved = preApproved;
  const durations: Record<string, number> = {};
  setHandler(currentStepQuery, () => step);
  setHandler(approveSignal, ({ by }) => {
    log.info('restore approved', { by: by ?? 'unknown' });
    approved = true;
  });
  return {
    durations,
    async timed(name, work) {
      step = name;
      const started = Date.now();
      try {
        return await work();
      } finally {
        durations[name] = Date.now() - started;
      }
    },
    async approval(timeoutMs) {
      if (approved) return true;
      step = 'awaiting approval';
      return condition(() => approved, timeoutMs);
    },
    done() {
      step = 'done';
    },
  };
}
