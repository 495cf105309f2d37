import { createHash } from 'node:crypto';
import { constants, lstatSync, readFileSync } from 'node:fs';
import { lstat, open, opendir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isDumpName } from '../../core/dump-names.js';
import { MirrorSafetyError, UsageError } from '../../core/errors.js';
import { FUTURE_SLACK_MS, versionSetTime } from '../../core/library-layout.js';
import { writeFileAtomic } from '../files/fs-safe.js';

// The versioned mirror's bookkeeping: what a run's rsync (--out-format='%i %n': one line per
// change, none on a no-change run) did, which files of a version set the run overwrote and
// whether their content changed (the write-once guard), the dated sets and their pruning, and the
// record of which dump a mirror pairs with.

/** What the run's rsync said it did, paths as rsync printed them (escaped): for the report's counts. */
export interface MirrorPlan {
  /** New files and directories, directories whose times changed. */
  created: string[];
  /** Existing mirror files it transferred again (size or mtime differed): the old ones are in the version set. */
  changed: string[];
  /** What --delete removed (into the version set): a deleted directory's entries come with it. */
  deleted: string[];
  /** Regular files among the deletions. */
  deletedFiles: number;
}

// %i: YXcstpoguax. Y: < > c h . (sent, received, created, hard link, attributes only); X: f d L D S.
const ITEM = /^([<>ch.])([fdLDS])([.+ cstpoguaxnbT?]{9}) (.+)$/;
const DELETING = /^\*deleting +(.+)$/;

export function emptyPlan(): MirrorPlan {
  return { created: [], changed: [], deleted: [], deletedFiles: 0 };
}

/** Adds rsync's itemized lines to `plan` (other lines, the progress and --stats, are ignored). */
export function parseItemized(lines: Iterable<string>, plan: MirrorPlan): MirrorPlan {
  for (const line of lines) {
    const del = DELETING.exec(line);
    if (del) {
      const path = del[1]!;
      if (!path.endsWith('/')) plan.deletedFiles++;
      plan.deleted.push(path);
      continue;
    }
    const m = ITEM.exec(line);
    if (!m) continue;
    const [, y, x, flags, path] = m as unknown as [string, string, string, string, string];
    if (x === 'f' && y === '>' && !flags.startsWith('+')) plan.changed.push(path);
    else plan.created.push(path);
  }
  return plan;
}

/**
 * The write-once guard's fingerprint of a set of rewritten files: their count and a digest of
 * their sorted names. An operator's approval names both, so it approves this rewrite and no other.
 */
export function rewriteDigest(paths: readonly string[]): string {
  return createHash('sha256').update([...paths].sort().join('\n')).digest('hex').slice(0, 32);
}

export function acceptanceText(a: { count: number; digest: string }): string {
  return `${a.count}:${a.digest}`;
}

/** `N:DIGEST` as `backup library --accept-rewrites` takes it; a one-line error for anything else. */
export function parseAcceptance(text: string): { count: number; digest: string } {
  const m = /^(\d{1,9}):([0-9a-f]{32})$/.exec(text.trim());
  if (!m) throw new UsageError(`--accept-rewrites ${JSON.stringify(text)}: expected COUNT:DIGEST as the refused run printed it (e.g. 12:${'0'.repeat(32)}); nothing was started`);
  return { count: Number(m[1]), digest: m[2]! };
}

/** Below this, two files are compared with synchronous reads: a thread-pool round trip per call costs more than the read. */
const SYNC_COMPARE_BYTES = 4 * 1024 * 1024;

/** True when two regular files hold the same bytes (never through a symlink); large ones read only as far as their first difference. */
export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [sa, sb] = [lstatSync(a), lstatSync(b)];
  if (!sa.isFile() || !sb.isFile() || sa.size !== sb.size) return false;
  // Both are regular files (lstat just above): a set and a mirror this run wrote.
  if (sa.size <= SYNC_COMPARE_BYTES) return readFileSync(a).equals(readFileSync(b));
  const [fa, fb] = await Promise.all([open(a, constants.O_RDONLY | constants.O_NOFOLLOW), open(b, constants.O_RDONLY | constants.O_NOFOLLOW)]);
  try {
    const size = 1024 * 1024;
    const ba = Buffer.allocUnsafe(size);
    const bb = Buffer.allocUnsafe(size);
    for (let position = 0; ; position += size) {
      const [{ bytesRead: ra }, { bytesRead: rb }] = await Promise.all([fa.read(ba, 0, size, position), fb.read(bb, 0, size, position)]);
      if (ra !== rb || !ba.subarray(0, ra).equals(bb.subarray(0, rb))) return false;
      if (ra < size) return true;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** Entries read between two turns of the event loop while a version set is walked: heartbeats keep going. */
const WALK_SLICE = 512;

/**
 * Regular files under a version set (relative paths), and which of them the mirror holds again:
 * those the run overwrote (the rest it deleted). Walked a slice at a time (a set planted on the
 * drive may be huge) and never past `maxEntries` entries: then it throws rather than read on.
 */
export async function versionSetContents(setDir: string, mirror: string, { maxEntries = Number.MAX_SAFE_INTEGER }: { maxEntries?: number } = {}): Promise<{ files: string[]; overwritten: string[] }> {
  const files: string[] = [];
  const overwritten: string[] = [];
  let seen = 0;
  const stack = [''];
  while (stack.length) {
    const rel = stack.pop()!;
    const handle = await opendir(join(setDir, rel)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' && rel === '') return undefined;
      throw err;
    });
    if (!handle) break;
    for await (const entry of handle) {
      if (++seen > maxEntries) {
        throw new MirrorSafetyError(`the version set ${setDir} holds more than ${maxEntries} entries, more than a mirror run can have moved there (planted on the drive?): the write-once check stopped; look at that folder, remove what does not belong, then run the mirror again`);
      }
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) stack.push(path);
      else if (entry.isFile()) {
        files.push(path);
        // Synchronous: one lstat costs microseconds, a thread-pool round trip more.
        if (lstatSync(join(mirror, path), { throwIfNoEntry: false })?.isFile() === true) overwritten.push(path);
      }
      if (seen % WALK_SLICE === 0) await new Promise((r) => setImmediate(r));
    }
  }
  return { files, overwritten };
}

/**
 * Which files of library.writeOnce.derived's patterns a path matches: Immich's own derived files
 * (thumbnails, transcodes, profile pictures, its database backups, XMP sidecars), which Immich
 * rewrites and deletes itself. `dir/` is a folder at the top of the library; any other pattern is
 * a file name, `*` standing for any run of characters, compared without regard to case.
 */
export function derivedMatcher(patterns: readonly string[]): (path: string) => boolean {
  const folders = patterns.filter((p) => p.endsWith('/')).map((p) => p.replace(/^\/+/, ''));
  const names = patterns
    .filter((p) => !p.endsWith('/'))
    .map((p) => new RegExp(`^${p.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'is'));
  return (path) => {
    if (folders.some((f) => path.startsWith(f))) return true;
    const base = path.slice(path.lastIndexOf('/') + 1);
    return names.some((re) => re.test(base));
  };
}

/** What one version set holds for the guard: the files the run overwrote, and those it deleted (no longer on the mirror). */
export interface SetFinding {
  set: string;
  path: string;
  onMirror: boolean;
}

/**
 * One entry per path, from the OLDEST set that holds it: a run stopped before its check leaves
 * the original in its set, a later run moves the next version into its own; only the oldest is
 * the original the mirror must get back, and two versions must never be put onto one path.
 */
export function oldestVersions(found: readonly SetFinding[]): SetFinding[] {
  const byPath = new Map<string, SetFinding>();
  for (const f of found) {
    const had = byPath.get(f.path);
    // Set names are fixed-width UTC times: their order is their age.
    if (!had || f.set < had.set) byPath.set(f.path, f);
  }
  return [...byPath.values()];
}

/**
 * The guard's fingerprint of what an approval covers: rewritten paths as they are, deleted ones
 * tagged with a NUL (no path holds one), so a deletion and a rewrite of one path never match.
 */
export function changeDigest(rewrites: readonly string[], deletions: readonly string[]): string {
  return rewriteDigest([...rewrites, ...deletions.map((p) => `\0deleted ${p}`)]);
}

/** fn over items, PARALLEL at a time: a few thousand small file operations each cost a thread-pool round trip, not a disk seek. */
const PARALLEL = 16;
export async function mapLimit<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
  return out;
}

/** A version set whose overwritten files were not yet checked by the write-once guard (a run stopped between its copy and its check). */
export const uncheckedMarker = (set: string) => `.unchecked-${set}`;
export const UNCHECKED = /^\.unchecked-(\d{8}T\d{6}Z)$/;

export interface PrunePlan {
  /** Version sets to remove, oldest first. */
  expired: string[];
  /** Sets named in the future: while one exists, nothing is pruned (the clock cannot be trusted to tell old from new). */
  future: string[];
}

/**
 * Which version sets go: older than keepWeeks before nowMs, oldest first, but never `keep`, never
 * a name that is not a version set's, never one of the newest keepWeeks directories (whatever the
 * clock says: a clock that jumped ahead must not empty the folder), and none at all while a set
 * is named in the future. `isDirectory`: only real directories count towards the kept newest.
 */
export function planVersionPrune(names: readonly string[], nowMs: number, keepWeeks: number, keep: string, isDirectory: (name: string) => boolean = () => true): PrunePlan {
  const sets = names
    .map((n) => ({ n, at: versionSetTime(n)?.getTime() }))
    .filter((e): e is { n: string; at: number } => e.at !== undefined)
    .sort((a, b) => a.at - b.at);
  const future = sets.filter((e) => e.at > nowMs + FUTURE_SLACK_MS).map((e) => e.n);
  if (future.length) return { expired: [], future };
  const newest = new Set(sets.filter((e) => isDirectory(e.n)).slice(-keepWeeks).map((e) => e.n));
  const cutoff = nowMs - keepWeeks * 7 * 86_400_000;
  return { expired: sets.filter((e) => e.at < cutoff && e.n !== keep && !newest.has(e.n)).map((e) => e.n), future };
}

export interface PruneVersionsResult {
  pruned: string[];
  kept: number;
  /** Names like a version set's that are not directories (a symlink planted on the drive): left alone. */
  ignored: string[];
  /** Sets named in the future (the clock ran ahead, or runs behind now): nothing was pruned. */
  future?: string[];
}

/** Removes the expired version sets under dir (real directories only, never through a symlink). */
export async function pruneVersionSets(dir: string, nowMs: number, keepWeeks: number, keep: string): Promise<PruneVersionsResult> {
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const sets = names.filter((n) => versionSetTime(n) !== undefined);
  const directories = new Set<string>();
  for (const name of sets) if ((await lstat(join(dir, name))).isDirectory()) directories.add(name);
  const plan = planVersionPrune(sets, nowMs, keepWeeks, keep, (n) => directories.has(n));
  const pruned: string[] = [];
  const ignored: string[] = [];
  for (const name of plan.expired) {
    if (!directories.has(name)) {
      ignored.push(name);
      continue;
    }
    // fs.rm removes symlinks inside the set as links: it never follows them.
    await rm(join(dir, name), { recursive: true, force: true });
    pruned.push(name);
  }
  return { pruned, kept: sets.length - pruned.length - ignored.length, ignored, ...(plan.future.length ? { future: plan.future } : {}) };
}

/** Which dump a mirror run pairs with: the newest valid dump when it started. */
export interface Pairing {
  /** The mirror run's version set name (its start, UTC). */
  versionSet: string;
  mirroredAt: string;
  /** Our dump file name; undefined when no valid dump existed. */
  dump?: string;
  sha256?: string;
}

export const PAIRINGS_FILE = 'mirror-pairings.json';
const PAIRINGS_KEPT = 60;

/**
 * The pairings on the drive, newest last. The drive is not trusted: a regular file only (never
 * through a symlink), at most 64 KiB, and only entries whose every field is well-formed.
 */
export async function readPairings(versionsDir: string): Promise<Pairing[]> {
  const path = join(versionsDir, PAIRINGS_FILE);
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isFile() || st.size > 64 * 1024) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  return parsed.flatMap((e: Record<string, unknown>) => {
    if (!e || typeof e.versionSet !== 'string' || !versionSetTime(e.versionSet)) return [];
    const dump = typeof e.dump === 'string' && isDumpName(e.dump) ? e.dump : undefined;
    const sha256 = typeof e.sha256 === 'string' && /^[0-9a-f]{64}$/.test(e.sha256) ? e.sha256 : undefined;
    return [{ versionSet: e.versionSet, mirroredAt: versionSetTime(e.versionSet)!.toISOString(), ...(dump ? { dump } : {}), ...(dump && sha256 ? { sha256 } : {}) }];
  });
}

/** Appends (or replaces, on a retry of the same run) this run's pairing: written beside, then renamed over. */
export async function recordPairing(versionsDir: string, pairing: Pairing): Promise<void> {
  const entries = [...(await readPairings(versionsDir)).filter((p) => p.versionSet !== pairing.versionSet), pairing].slice(-PAIRINGS_KEPT);
  await writeFileAtomic(join(versionsDir, PAIRINGS_FILE), JSON.stringify(entries, null, 1) + '\n', { temp: join(versionsDir, `.${PAIRINGS_FILE}.${process.pid}.tmp`), mode: 0o644 });
}

/** One line for status: "library mirror of <date> pairs with <dump>". */
export function pairingText(p: Pairing | undefined): string | undefined {
  if (!p) return undefined;
  const when = p.mirroredAt.replace(/:\d{2}\.\d{3}Z$/, 'Z').replace('T', ' ');
  return p.dump ? `library mirror of ${when} pairs with ${p.dump}` : `library mirror of ${when} has no valid dump to pair with`;
}
