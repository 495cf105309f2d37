import { setCurrentDetails, setHandler } from '@temporalio/workflow';
import { currentStepQuery } from '../core/messages.js';

// What a run is doing now, for the CLI (the currentStep query) and the Web UI (the run's current
// details): every workflow says its step, and every wait says what it waits for and until when.

export interface Steps {
  /** The step shown from now on; `details` (default: the step) is what the Web UI shows. */
  set(step: string, details?: string): void;
  current(): string;
}

export function trackSteps(initial = 'starting'): Steps {
  let step = initial;
  setHandler(currentStepQuery, () => step);
  return {
    set(next, details) {
      step = next;
      setCurrentDetails(details ?? next);
    },
    current: () => step,
  };
}

/** A workflow-time instant as an operator reads it: 2026-11-27T03:12:00Z. */
export function at(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
