import { lstat, mkdtemp, opendir, readdir, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Config } from '../../config/config.js';
import { ConfigError, DumpNotFoundError, MirrorSafetyError } from '../../core/errors.js';
import { versionsDirOf, versionSetTime } from '../../core/library-layout.js';
import type { PostgresTarget } from '../../core/types.js';
import { withHeartbeats } from '../commands/run-command.js';
import { FROM_UNTRUSTED_TREE, ioPriority, runRsync, type RsyncSkipped, type RsyncStall } from '../commands/rsync.js';
import { assetSchema, readAssetPage } from '../immich/immich-assets.js';
import { assertOnDrive } from './drive.js';
import { sha1OfPlainFile } from './file-sha1.js';

// A library restore of less than the whole tree: the originals Immich's database references and the
// library lacks (--missing), one subtree (--path), or the files as they were at a date, from the
// version sets the mirror runs keep (--as-of). Everything comes from the drive, which is not
// trusted: only regular files, never through a symlink, and with the same rsync guards as a full
// restore (no devices, specials, setuid bits, or links leading out).

export interface LibrarySelection {
  /** Only originals Immich's database references that the library lacks. */
  missing?: boolean;
  /** A subtree of the library, relative to library.source (one user, one year). */
  path?: string;
  /** ISO date: each file as the mirror held it then (from the oldest version set made after it). */
  asOf?: string;
}

/** What a selective restore brings back (or, dry, would): counts and the first few names only. */
export interface SelectionResult {
  /** Files copied (or to copy) in all. */
  files: number;
  bytes: number;
  /** Of those, from the mirror itself, and from version sets. */
  fromMirror: number;
  fromVersions: number;
  /** Version sets used, oldest first (at most a few named). */
  versionSets: string[];
  /** --missing: originals found intact nowhere (neither the mirror nor any version set holds a copy whose SHA-1 matches Immich's). */
  notFound: number;
  notFoundFirst: string[];
  /** --missing: assets the audit cannot check (external libraries, paths outside the container paths). */
  notChecked: number;
  /** The first files to come back, library-relative. */
  first: string[];
  /** After the copy (--missing): files whose SHA-1 was checked against Immich's on the library side. */
  verified?: number;
  skipped?: RsyncSkipped;
  durationMs: number;
}

type Library = Config['library'];

const SHOWN = 20;
const WEEK_MS = 7 * 24 * 3600_000;
const PAGE = 5000;

const under = (rel: string, prefix: string | undefined) => !prefix || rel === prefix || rel.startsWith(`${prefix}/`);

/**
 * A --path on the drive must be plain directories all the way down: rsync and opendir follow a
 * symlink in the middle of a path, and a link there (library -> /etc) would bring host files
 * into the library.
 */
async function assertPlainPrefix(root: string, prefix: string | undefined, what: string): Promise<void> {
  if (!prefix) return;
  const real = await realpath(join(root, prefix)).catch(() => undefined);
  if (real !== undefined && real !== join(await realpath(root), prefix)) {
    throw new MirrorSafetyError(`${prefix} in ${what} leads to ${real} (a symlink on the drive): nothing was restored; remove the link`);
  }
}

/** Regular files under root/prefix (library-relative names), never following symlinks. */
async function* walkFiles(root: string, prefix: string | undefined): AsyncGenerator<string> {
  const stack = [prefix ?? ''];
  while (stack.length) {
    const rel = stack.pop()!;
    const handle = await opendir(join(root, rel)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
      throw err;
    });
    if (!handle) continue;
    for await (const entry of handle) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) stack.push(child);
      else if (entry.isFile() && !entry.name.includes('\n')) yield child;
    }
  }
}

type Beat = (details: Record<string, unknown>) => void;

/** Groups of files to copy: from a root on the drive, these library-relative paths (or, `tree`, whole subtrees). */
interface Group {
  root: string;
  set?: string;
  paths: string[];
  tree?: boolean;
}

/** The version sets on the drive (their names parse as dates), oldest first; the folder must lie on the drive. */
async function versionSets(lib: Library): Promise<{ name: string; at: Date }[]> {
  const versionsDir = versionsDirOf(lib);
  const entries = await readdir(versionsDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (entries.length) await assertOnDrive(lib, versionsDir, 'library.versionsDir', 'nothing was restored; remove the link');
  return entries
    .filter((e) => e.isDirectory())
    .map((e) => ({ name: e.name, at: versionSetTime(e.name) }))
    .filter((s): s is { name: string; at: Date } => s.at !== undefined)
    .sort((a, b) => a.at.getTime() - b.at.getTime());
}

/** rsync of each group onto the library, with the drive's guards; --dry-run counts only. */
async function copyGroups(lib: Library, groups: Group[], dryRun: boolean, step: string): Promise<{ files: number; fromSets: number; bytes: number; skipped: RsyncSkipped }> {
  const dir = await mkdtemp(join(tmpdir(), 'immich-backup-select-'));
  let files = 0;
  let fromSets = 0;
  let bytes = 0;
  const skipped: RsyncSkipped = { count: 0, first: [] };
  try {
    for (const [i, group] of groups.entries()) {
      if (!group.paths.length) continue;
      const list = join(dir, `list-${i}`);
      await writeFile(list, group.paths.map((p) => `${p}\0`).join(''), { mode: 0o600 });
      const args = [
        '-a',
        ...(group.tree ? ['-r'] : []),
        ...FROM_UNTRUSTED_TREE,
        // A version's content may differ from the library's in content alone: compare, never trust size and time.
        ...(group.set ? ['--ignore-times'] : []),
        `--timeout=${lib.stallSeconds}`,
        '--from0', `--files-from=${list}`,
        ...(dryRun ? ['--dry-run'] : []),
        ...(lib.bwLimitKiB ? [`--bwlimit=${lib.bwLimitKiB}`] : []),
        '--',
        `${resolve(group.root)}/`,
        `${resolve(lib.source)}/`,
      ];
      const stall: RsyncStall = {
        what: `the library restore from ${lib.mountPoint}`,
        setting: 'library.stallSeconds',
        seconds: lib.stallSeconds,
        advice: 'check the drive (dmesg), then run it again',
        timedOut: { what: 'the library restore', ending: '; check the drive (dmesg), then run it again' },
      };
      const stats = await runRsync(args, { step: group.set ? `${step} (version set ${group.set})` : `${step} (mirror)`, prefix: ioPriority(lib), stall, reportSkipped: true });
      files += stats.filesTransferred;
      if (group.set) fromSets += stats.filesTransferred;
      bytes += stats.bytesTransferred;
      skipped.count += stats.skipped?.count ?? 0;
      for (const s of stats.skipped?.first ?? []) if (skipped.first.length < 10) skipped.first.push(s);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return { files, fromSets, bytes, skipped };
}

/**
 * --missing: every asset Immich's database references (a content SHA-1, inside the container
 * paths, under --path) whose file the library lacks; each from the mirror when its copy there
 * has Immich's SHA-1, else from the newest version set whose copy has it.
 */
async function planMissing(config: Config, target: PostgresTarget, prefix: string | undefined, beat: Beat): Promise<{ groups: Group[]; notFound: string[]; notChecked: number; checks: Map<string, string> }> {
  const schema = await assetSchema(config, target);
  const lib = config.library;
  const versionsDir = versionsDirOf(lib);
  const sets = (await versionSets(lib)).reverse(); // newest first
  const fromMirror: string[] = [];
  const bySet = new Map<string, string[]>();
  const notFound: string[] = [];
  const checks = new Map<string, string>();
  let notChecked = 0;
  let seen = 0;
  let after: string | undefined;
  for (;;) {
    const missingHere: { rel: string; sha1: string }[] = [];
    const page = await readAssetPage(config, target, schema, { after, limit: PAGE }, async (asset) => {
      seen++;
      if (asset.algorithm !== 'sha1' || !asset.relativePath) return void notChecked++;
      if (!under(asset.relativePath, prefix)) return;
      const st = await lstat(join(lib.source, asset.relativePath)).catch(() => undefined);
      if (!st) missingHere.push({ rel: asset.relativePath, sha1: asset.checksum });
    });
    for (const { rel, sha1 } of missingHere) {
      beat({ step: 'finding the missing originals a copy of', assetsRead: seen, missing: checks.size + notFound.length + 1, current: rel });
      if ((await sha1OfPlainFile(lib.destination, rel)) === sha1) {
        fromMirror.push(rel);
        checks.set(rel, sha1);
        continue;
      }
      let found = false;
      for (const set of sets) {
        if ((await sha1OfPlainFile(join(versionsDir, set.name), rel)) === sha1) {
          const list = bySet.get(set.name);
          if (list) list.push(rel);
          else bySet.set(set.name, [rel]);
          checks.set(rel, sha1);
          found = true;
          break;
        }
      }
      if (!found) notFound.push(rel);
    }
    beat({ step: 'reading Immich\'s assets', assetsRead: seen, missing: checks.size + notFound.length });
    if (page.count < PAGE) break;
    after = page.last;
  }
  const groups: Group[] = [{ root: lib.destination, paths: fromMirror }];
  for (const set of [...sets].reverse()) if (bySet.has(set.name)) groups.push({ root: join(versionsDir, set.name), set: set.name, paths: bySet.get(set.name)! });
  return { groups, notFound, notChecked, checks };
}

/** --as-of: the mirror (under --path), then each file changed or deleted since from the oldest version set made after the date. */
async function planAsOf(config: Config, asOf: Date, prefix: string | undefined, beat: Beat): Promise<Group[]> {
  // A set named in the future (a clock that ran ahead) says nothing of when its files changed.
  const lib = config.library;
  const versionsDir = versionsDirOf(lib);
  const all = (await versionSets(lib)).filter((s) => s.at.getTime() <= Date.now() + config.backup.maxFutureMinutes * 60_000);
  const oldest = all[0];
  if (!oldest) throw new MirrorSafetyError(`no version sets on the drive (${versionsDir}): nothing older than the mirror itself is kept, so the files as of ${asOf.toISOString()} cannot be known; restore without --as-of`);
  // Older than the oldest kept set by more than a week (one mirror interval), changes in between
  // may have been pruned: a restore would mix versions of other times without saying so.
  if (asOf.getTime() < oldest.at.getTime() - WEEK_MS) {
    throw new MirrorSafetyError(`the version sets go back to ${oldest.at.toISOString()} only (library.keepVersionsWeeks ${lib.keepVersionsWeeks}): the files as of ${asOf.toISOString()} cannot be known; choose a date after ${new Date(oldest.at.getTime() - WEEK_MS).toISOString()}`);
  }
  const sets = all.filter((s) => s.at.getTime() > asOf.getTime());
  for (const set of sets) await assertPlainPrefix(join(versionsDir, set.name), prefix, `version set ${set.name}`);
  const chosen = new Set<string>();
  const groups: Group[] = [{ root: lib.destination, paths: [prefix ?? '.'], tree: true }];
  for (const set of sets) {
    const paths: string[] = [];
    for await (const rel of walkFiles(join(versionsDir, set.name), prefix)) {
      if (chosen.has(rel)) continue;
      chosen.add(rel);
      paths.push(rel);
      if (chosen.size % 1000 === 0) beat({ step: 'reading the version sets', set: set.name, files: chosen.size });
    }
    if (paths.length) groups.push({ root: join(versionsDir, set.name), set: set.name, paths });
  }
  return groups;
}

export interface SelectionRequest {
  selection: LibrarySelection;
  target?: PostgresTarget;
  dryRun: boolean;
  /** The real run copies no more files than the approved dry run counted. */
  maxFiles?: number;
}

/**
 * A selective library restore, or (dryRun) what it would bring back. The plan is made again for
 * the real run (the library may have changed since the dry run), and never copies more files
 * than the approved dry run counted (`maxFiles`). `planned`: the files listed by name (a
 * whole-tree part is counted by rsync).
 */
export async function restoreSelection(config: Config, { selection, target, dryRun, maxFiles }: SelectionRequest): Promise<{ result: SelectionResult; planned: number }> {
  const lib = config.library;
  const started = Date.now();
  // What the plan is doing, for the heartbeat (withHeartbeats sends it every second, even while one large video is hashed).
  let progress: Record<string, unknown> = { step: 'planning the restore' };
  const beat: Beat = (details) => void (progress = details);
  const prefix = selection.path?.replace(/\/+$/, '');
  let groups: Group[];
  let notFound: string[] = [];
  let notChecked = 0;
  let checks: Map<string, string> | undefined;
  if (selection.missing) {
    if (!target) throw new ConfigError('restore --missing needs the database to list what is missing: no database target was given; nothing was changed');
    ({ groups, notFound, notChecked, checks } = await withHeartbeats(planMissing(config, target, prefix, beat), () => progress));
  } else if (selection.asOf) {
    const at = new Date(selection.asOf);
    if (Number.isNaN(at.getTime())) throw new MirrorSafetyError(`--as-of ${selection.asOf} is not a date (e.g. 2026-11-01 or 2026-11-01T12:00:00Z)`);
    groups = await withHeartbeats(planAsOf(config, at, prefix, beat), () => progress);
  } else if (prefix) {
    groups = [{ root: lib.destination, paths: [prefix], tree: true }];
  } else {
    throw new ConfigError('a selective restore needs --missing, --path or --as-of: none was given; nothing was changed');
  }
  if (prefix && !(await lstat(join(lib.destination, prefix)).catch(() => undefined)) && !selection.missing && !selection.asOf) {
    throw new DumpNotFoundError(`the mirror holds nothing at ${prefix}: check the path (relative to the library, e.g. library/<user>/2024); nothing was restored`);
  }
  await assertPlainPrefix(lib.destination, prefix, 'the mirror');
  const planned = groups.reduce((n, g) => n + (g.tree ? 0 : g.paths.length), 0);
  // The whole-tree part is counted by rsync; explicit lists are known now.
  const dry = await copyGroups(lib, groups, true, dryRun ? 'dry run of the restore' : 'checking the restore');
  const total = dry.files;
  if (!dryRun && maxFiles !== undefined && total > maxFiles) {
    throw new MirrorSafetyError(`the restore would now copy ${total} file(s), more than the ${maxFiles} the approved dry run counted: nothing was copied; run the restore again to see and approve the new count`);
  }
  const copied = dryRun ? dry : await copyGroups(lib, groups, false, 'restoring library files');
  let verified: number | undefined;
  const mismatched: string[] = [];
  if (!dryRun && checks) {
    verified = 0;
    beat({ step: 'checking the restored originals against Immich\'s checksums', of: checks.size });
    await withHeartbeats((async () => {
      for (const [rel, sha1] of checks) {
        if ((await sha1OfPlainFile(lib.source, rel)) === sha1) verified++;
        else mismatched.push(rel);
      }
    })(), () => ({ ...progress, verified }));
    if (mismatched.length) throw new MirrorSafetyError(`${mismatched.length} restored original(s) do not match Immich's checksum after the copy (${mismatched.slice(0, 5).join(', ')}): the drive may be failing; run the restore again`);
  }
  const first = groups.flatMap((g) => (g.tree ? [] : g.paths)).slice(0, SHOWN);
  const result: SelectionResult = {
    files: copied.files,
    bytes: copied.bytes,
    fromMirror: copied.files - copied.fromSets,
    fromVersions: copied.fromSets,
    versionSets: groups.filter((g) => g.set).map((g) => g.set!).slice(0, 10),
    notFound: notFound.length,
    notFoundFirst: notFound.slice(0, SHOWN),
    notChecked,
    first: first.length ? first : prefix ? [`${prefix}/…`] : [],
    ...(verified !== undefined ? { verified } : {}),
    ...(copied.skipped.count ? { skipped: copied.skipped } : {}),
    durationMs: Date.now() - started,
  };
  return { result, planned };
}
