// Where the library's copies live and how Immich's paths map onto them. Pure: safe in workflows,
// activities and the CLI alike.

/** A version set's folder name: the mirror run's start, UTC, e.g. 20261127T050000Z. */
const VERSION_SET = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

export function versionSetName(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

/** The time a version set was made (the run that moved its files there started then); undefined for any other name. */
export function versionSetTime(name: string): Date | undefined {
  const m = VERSION_SET.exec(name);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  const at = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return versionSetName(at) === name ? at : undefined;
}

const trimSlash = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);

/** library.versionsDir, or the destination's path with ".versions" appended. */
export function versionsDirOf(library: { destination: string; versionsDir?: string | undefined }): string {
  return library.versionsDir ?? `${trimSlash(library.destination)}.versions`;
}

/** Where the plaintext NAS copy (before the encrypted repository) kept its version sets: beside library.offsite.remoteDir. */
export function remoteVersionsDirOf(remoteDir: string): string {
  return `${trimSlash(remoteDir)}.versions`;
}

/**
 * An asset's originalPath (as Immich's container sees it) relative to library.source; undefined when
 * it lies under none of library.containerPaths (an external library) or would climb out of it.
 */
export function libraryRelativePath(originalPath: string, containerPaths: readonly string[]): string | undefined {
  for (const prefix of containerPaths) {
    const base = trimSlash(prefix);
    if (!originalPath.startsWith(`${base}/`)) continue;
    const rel = originalPath.slice(base.length + 1);
    const parts = rel.split('/');
    if (!rel || parts.some((p) => p === '' || p === '.' || p === '..') || rel.includes('\0')) return undefined;
    return rel;
  }
  return undefined;
}

/** Why a `restore library --path` value is refused (undefined: fine): relative to the library, plain components. */
export function selectionPathProblem(path: string): string | undefined {
  if (!path || path.startsWith('/') || path.includes('\0') || path.includes('\n')) return 'must be a path relative to the library (e.g. library/<user>/2024)';
  const parts = path.replace(/\/+$/, '').split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return 'must not contain empty, . or .. components';
  return undefined;
}

/** Why a `restore library --as-of` value is refused (undefined: fine): a date, not in the future. */
export function asOfProblem(asOf: string, now: number): string | undefined {
  if (!/^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(asOf)) return 'expected a date, e.g. 2026-11-01 or 2026-11-01T12:00:00Z';
  const at = new Date(asOf).getTime();
  if (Number.isNaN(at)) return 'not a valid date';
  if (at > now) return 'is in the future';
  return undefined;
}

/** A version set named this far past the clock is "in the future": the clock ran ahead when it was made, or runs behind now. */
export const FUTURE_SLACK_MS = 3_600_000;

/** Why a version set name handed to a mirror run is refused (undefined: fine): a run's start in UTC, not in the future. */
export function versionSetProblem(name: string, nowMs: number): string | undefined {
  const at = versionSetTime(name);
  if (!at) return 'is not a run\'s start time (expected e.g. 20261129T050000Z)';
  if (at.getTime() > nowMs + FUTURE_SLACK_MS) return `is named in the future (the clock here reads ${new Date(nowMs).toISOString()})`;
  return undefined;
}
