/** Human-readable byte counts for heartbeat details, reports and the CLI. Pure. */
/** host:port, with an IPv6 literal in brackets ([::1]:7233). */
export const hostPort = (host: string, port: number) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/** "under a minute", "12 min", "3 h", "2 days": an age read at a glance, in whole units (never rounded up). */
export function ageText(ms: number): string {
  if (ms < 0) return `${ageText(-ms)} in the future`;
  if (ms < MINUTE_MS) return 'under a minute';
  if (ms < HOUR_MS) return `${Math.floor(ms / MINUTE_MS)} min`;
  return ms < 48 * HOUR_MS ? `${Math.floor(ms / HOUR_MS)} h` : `${Math.floor(ms / DAY_MS)} days`;
}

/** "just now", "12 min ago", "3 h ago", "2 days ago"; "in 5 min" for a time ahead. */
export function agoText(ms: number): string {
  if (Math.abs(ms) < MINUTE_MS) return 'just now';
  return ms < 0 ? `in ${ageText(-ms)}` : `${ageText(ms)} ago`;
}

/** "Sat 2026-11-28 03:00 CET": a time as a clock in `timeZone` shows it, with the zone. */
export function zonedTime(at: Date | string, timeZone = 'UTC'): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-GB', { timeZone, weekday: 'short', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZoneName: 'short' })
      .formatToParts(typeof at === 'string' ? new Date(at) : at)
      .map((p) => [p.type, p.value]),
  );
  return `${parts.weekday} ${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute} ${parts.timeZoneName}`;
}
