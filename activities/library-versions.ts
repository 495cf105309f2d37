import { createHash } from 'node:crypto';
import { constants, lstatSync, readdirSync, readFileSync, type Dirent } from 'node:fs';
import { lstat, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { isDumpName } from '../src/dump-names.js';
import { versionSetTime } from '../src/library-layout.js';

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
  if (!m) throw new Error(`--accept-rewrites ${JSON.stringify(text)}: expected COUNT:DIGEST as the refused run printed it (e.g. 12:${'0'.repeat(32)}); nothing was started`);
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

/** Regular files under a version set (relative paths), and which of them the mirror holds again: those the run overwrote (the rest it deleted). */
export async function versionSetContents(setDir: string, mirror: string): Promise<{ files: string[]; overwritten: string[] }> {
  let entries: Dirent[];
  try {
    // Synchronous, like the lstats below: a set holds what changed in a week, a few thousand entries at most.
    entries = readdirSync(setDir, { recursive: true, withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { files: [], overwritten: [] };
    throw err;
  }
  const files = entries.filter((e) => e.isFile()).map((e) => relative(setDir, join(e.parentPath, e.name)));
  // Synchronous: one lstat costs microseconds, a thread-pool round trip more.
  const overwritten = files.filter((rel) => lstatSync(join(mirror, rel), { throwIfNoEntry: false })?.isFile() === true);
  return { files, overwritten };
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

/** Version sets in dir older than keepWeeks before nowMs, oldest first; never `keep`, never a name that is not a version set's. */
export function expiredVersionSets(names: readonly string[], nowMs: number, keepWeeks: number, keep: string): string[] {
  const cutoff = nowMs - keepWeeks * 7 * 86_400_000;
  return names
    .filter((n) => n !== keep)
    .map((n) => ({ n, at: versionSetTime(n) }))
    .filter((e): e is { n: string; at: Date } => e.at !== undefined && e.at.getTime() < cutoff)
    .sort((a, b) => a.at.getTime() - b.at.getTime())
    .map((e) => e.n);
}

export interface PruneVersionsResult {
  pruned: string[];
  kept: number;
  /** Names like a version set's that are not directories (a symlink planted on the drive): left alone. */
  ignored: string[];
}

/** Removes the expired version sets under dir (real directories only, never through a symlink). */
export async function pruneVersionSets(dir: string, nowMs: number, keepWeeks: number, keep: string): Promise<PruneVersionsResult> {
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const sets = names.filter((n) => versionSetTime(n) !== undefined);
  const pruned: string[] = [];
  const ignored: string[] = [];
  for (const name of expiredVersionSets(sets, nowMs, keepWeeks, keep)) {
    const st = await lstat(join(dir, name));
    if (!st.isDirectory()) {
      ignored.push(name);
      continue;
    }
    // fs.rm removes symlinks inside the set as links: it never follows them.
    await rm(join(dir, name), { recursive: true, force: true });
    pruned.push(name);
  }
  return { pruned, kept: sets.length - pruned.length - ignored.length, ignored };
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
  const temp = join(versionsDir, `.${PAIRINGS_FILE}.${process.pid}.tmp`);
  await rm(temp, { force: true });
  const fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    await fh.writeFile(JSON.stringify(entries, null, 1) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(temp, join(versionsDir, PAIRINGS_FILE));
}

/** One line for status: "library mirror of <date> pairs with <dump>". */
export function pairingText(p: Pairing | undefined): string | undefined {
  if (!p) return undefined;
  const when = p.mirroredAt.replace(/:\d{2}\.\d{3}Z$/, 'Z').replace('T', ' ');
  return p.dump ? `library mirror of ${when} pairs with ${p.dump}` : `library mirror of ${when} has no valid dump to pair with`;
}
