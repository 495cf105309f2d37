import type { Progress } from '../temporal/client.js';
import { formatBytes } from '../core/format.js';

// What the CLI prints while it follows a run, as lines. Pure: the CLI writes them.

const clock = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/** An activity's heartbeat details as key=value, readable fields only. */
function detailText(details: Record<string, unknown>): string {
  const strings = new Set(Object.values(details).filter((v) => typeof v === 'string'));
  return (
    Object.entries(details)
      // Nested objects (an audit's resume position) are for the retry, not for a person; the step is its own line.
      .filter(([k, v]) => k !== 'step' && (v === null || typeof v !== 'object'))
      // A byte count also given formatted (bytesWritten beside written=2.0 MiB) is shown once, formatted.
      .filter(([, v]) => !(typeof v === 'number' && strings.has(formatBytes(v))))
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ')
  );
}

/**
 * A follower's memory of what it printed: each step once when it changes (the run's own, and an
 * activity's when it differs from the run's), each retry once with its reason and next attempt,
 * and an activity's progress whenever it moves. Returns the lines to print for one poll, and the
 * run's step when it just changed (the CLI shows a restore's plan when that is the approval wait).
 */
export function progressText(now: () => number = Date.now): (progress: Progress[]) => { lines: string[]; step?: string } {
  let step = '';
  const shown = new Map<string, string>();
  return (progress) => {
    const lines: string[] = [];
    let changed: string | undefined;
    for (const p of progress) {
      if (p.activity === 'step') {
        const text = String(p.details);
        if (text === step) continue;
        step = changed = text;
        lines.push(`… ${text}`);
        continue;
      }
      if (p.attempt > 1 && p.lastFailure) {
        const key = `${p.activity}#${p.attempt}`;
        if (!shown.has(key)) {
          shown.set(key, '');
          const of = p.maximumAttempts ? ` of ${p.maximumAttempts}` : '';
          const next = p.nextAttemptAt ? `next attempt at ${clock(p.nextAttemptAt)} (in ${Math.max(0, Math.round((p.nextAttemptAt.getTime() - now()) / 1000))} s)` : `attempt ${p.attempt} running`;
          lines.push(`… ${p.activity}: attempt ${p.attempt - 1}${of} failed: ${p.lastFailure.split('\n')[0]}; ${next}`);
        }
      }
      const details = p.details && typeof p.details === 'object' ? (p.details as Record<string, unknown>) : undefined;
      const sub = typeof details?.step === 'string' ? details.step : undefined;
      if (sub && sub !== step && shown.get(`${p.activity}#step`) !== sub) {
        shown.set(`${p.activity}#step`, sub);
        lines.push(`… ${sub}`);
      }
      const text = details ? detailText(details) : '';
      if (text && shown.get(p.activity) !== text) {
        shown.set(p.activity, text);
        lines.push(`… ${p.activity} ${text}`);
      }
    }
    return { lines, ...(changed !== undefined ? { step: changed } : {}) };
  };
}
