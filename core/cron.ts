// The cron lines Temporal's schedules accept (the server's parseCronString, in the 5-field form
// our config allows), checked when the config is read: a bad line would otherwise pass start-up
// and fail only when `start` or `schedules apply` sends it, after connecting, without the key.
// Pure module: no Node built-ins.

/** Temporal's shorthands, replaced by the 5 fields they stand for before parsing. */
const MACROS: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

const MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'];
const WEEKDAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];

interface Field {
  name: string;
  min: number;
  max: number;
  /** Names the server reads as numbers, with the shortest prefix it accepts (jan, su). */
  names?: { list: string[]; first: number; minLength: number };
}

const FIELDS: readonly Field[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: { list: MONTHS, first: 1, minLength: 3 } },
  // 7 is Sunday too, as in Vixie cron.
  { name: 'day-of-week', min: 0, max: 7, names: { list: WEEKDAYS, first: 0, minLength: 2 } },
];

/** Why this cron line would be refused, or undefined when Temporal accepts it. */
export function cronProblem(line: string): string | undefined {
  const trimmed = line.trim();
  const fields = (MACROS[trimmed] ?? trimmed).split(/\s+/);
  if (trimmed.startsWith('@') && !MACROS[trimmed]) return `unknown shorthand "${trimmed}" (use @hourly, @daily, @weekly, @monthly or @yearly)`;
  if (fields.length !== 5) return `expected 5 fields (minute hour day-of-month month day-of-week), found ${fields.length}`;
  for (const [i, text] of fields.entries()) {
    const problem = fieldProblem(text, FIELDS[i]!);
    if (problem) return problem;
  }
  return undefined;
}

function fieldProblem(text: string, field: Field): string | undefined {
  const range = `${field.min}-${field.max}`;
  const value = (s: string): number | string => {
    if (/^\d+$/.test(s)) {
      const n = Number(s);
      return n < field.min || n > field.max ? `${field.name} field "${s}" out of range ${range}` : n;
    }
    const names = field.names;
    const lower = s.toLowerCase();
    const at = names && lower.length >= names.minLength ? names.list.findIndex((n) => n.startsWith(lower)) : -1;
    if (names && at >= 0) return at + names.first;
    return `${field.name} field "${s}" is not a number${names ? ' or a name' : ''} (${range})`;
  };
  for (const part of text.split(',')) {
    const [span = '', step, extra] = part.split('/');
    if (extra !== undefined) return `${field.name} field "${part}" has more than one /`;
    if (step !== undefined && !(/^\d+$/.test(step) && Number(step) >= 1)) return `${field.name} field "${part}": the step must be a whole number of 1 or more`;
    if (span === '*') continue;
    const ends = span.split('-');
    if (ends.length > 2) return `${field.name} field "${part}" has more than one -`;
    const [start, end] = ends.map(value);
    if (typeof start === 'string') return start;
    if (typeof end === 'string') return end;
    if (end !== undefined && end < start!) return `${field.name} field "${span}": the range ends before it starts`;
  }
  return undefined;
}
