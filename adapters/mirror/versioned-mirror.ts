import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Config } from '../../config/config.js';
import { MirrorSafetyError, StalledError, WriteOnceError } from '../../core/errors.js';
import { versionSetTime, versionsDirOf } from '../../core/library-layout.js';
import type { MirrorResult, MirrorVersioning, RewriteAcceptance } from '../../core/types.js';
import { withHeartbeats } from '../commands/run-command.js';
import { FROM_UNTRUSTED_TREE, ioPriority, RSYNC_VANISHED, runRsync, type RsyncStall } from '../commands/rsync.js';
import { assertOnDrive } from './drive.js';
import { acceptanceText, changeDigest, derivedMatcher, emptyPlan, mapLimit, oldestVersions, parseItemized, recordPairing, sameBytes, UNCHECKED, uncheckedMarker, versionSetContents, type MirrorPlan, type SetFinding } from './library-versions.js';

// The library's mirror on the drive: the rsync between the library and the drive (both ways), and
// the versioned mirror with its write-once guard. WeeklyLibraryMirror's and RestoreLibrary's
// activities call these; everything here runs, and is tested, without a worker.

type Library = Config['library'];

/** Rewritten files named in the report, the alarm and the refusal. */
const REWRITES_SHOWN = 5;

/** A stall on the drive, for rsync's two messages: the stall guard's advice names fsfreeze, rsync's own --timeout's keeps its shorter wording. */
function driveStall(lib: Library, what: string): RsyncStall {
  return { what, setting: 'library.stallSeconds', seconds: lib.stallSeconds, advice: 'check the drive (dmesg, fsfreeze --unfreeze), then run it again', timedOut: { ending: ' and stopped; check the drive (dmesg), then run it again' } };
}

/**
 * rsync -a of one tree onto another with the configured excludes, under library.ioniceClass /
 * nice: the one argument list for the mirror and the full restore. `extra` goes after the
 * excludes, before the two trees.
 */
function treeArgs(lib: Library, from: string, to: string, options: { delete: boolean; maxDelete?: number; dryRun?: boolean; fromDrive?: boolean; extra?: readonly string[] }): string[] {
  return [
    '-a',
    ...(options.fromDrive ? FROM_UNTRUSTED_TREE : []),
    // rsync's own bound on silence between its processes, beside the stall guard's on progress.
    `--timeout=${lib.stallSeconds}`,
    '--mkpath',
    ...(options.delete ? ['--delete'] : []),
    ...(options.delete && options.maxDelete !== undefined ? [`--max-delete=${options.maxDelete}`] : []),
    ...(options.dryRun ? ['--dry-run'] : []),
    ...(lib.bwLimitKiB ? [`--bwlimit=${lib.bwLimitKiB}`] : []),
    ...lib.excludes.map((pattern) => `--exclude=${pattern}`),
    ...(options.extra ?? []),
    '--',
    `${resolve(from)}/`,
    `${resolve(to)}/`,
  ];
}

/**
 * The mirror back onto the library (a full restore; --dry-run reports what rsync would do),
 * stopped as stalled when nothing moves for library.stallSeconds (a frozen or dying drive). The
 * drive is not trusted (anyone with the disk in hand can write it), so nothing comes back from it
 * that the library never holds: no setuid/setgid bits, no device files, FIFOs or sockets, no
 * symlink leading out of the tree. What was skipped is reported.
 */
export async function restoreFromDrive(lib: Library, options: { delete: boolean; dryRun: boolean; maxDelete?: number }): Promise<MirrorResult> {
  const started = Date.now();
  const args = treeArgs(lib, lib.destination, lib.source, { ...options, fromDrive: true });
  const step = options.dryRun ? 'dry run of the library restore' : 'restoring library';
  const stats = await runRsync(args, { step, prefix: ioPriority(lib), stall: driveStall(lib, `the library restore from ${lib.mountPoint}`), reportSkipped: true });
  return {
    filesTransferred: stats.filesTransferred,
    bytesTransferred: stats.bytesTransferred,
    deleted: stats.deleted,
    sourceFiles: stats.regularFiles,
    durationMs: Date.now() - started,
    ...(stats.skipped ? { skipped: stats.skipped } : {}),
  };
}

/**
 * A write to the drive outside rsync, bounded like rsync by library.stallSeconds: on a frozen or
 * dying drive it would wait in the kernel for ever (the thread stays stuck there until the drive
 * answers; the activity fails as stalled, and is not retried).
 */
async function onDrive<T>(lib: Library, step: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StalledError(`the library mirror onto ${lib.mountPoint} stalled: ${step} did not finish within ${lib.stallSeconds} s (library.stallSeconds); check the drive (dmesg, fsfreeze --unfreeze), then run it again`)), lib.stallSeconds * 1000);
  });
  try {
    return await withHeartbeats(Promise.race([work, stalled]), () => ({ step }));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The marker beside a set until the guard has checked it. The drive is not trusted: a marker that
 * is not a regular file (a symlink planted to make root write elsewhere) stops the run before
 * anything is written, and a new one is created afresh, never through a link.
 */
async function markUnchecked(versionsDir: string, set: string): Promise<void> {
  const path = join(versionsDir, uncheckedMarker(set));
  await rm(path, { force: true });
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  await fh.close();
}

/** The sets whose markers were left by runs stopped before their check; tampered markers refuse the run. */
async function uncheckedSets(versionsDir: string): Promise<string[]> {
  const sets: string[] = [];
  for (const name of await readdir(versionsDir)) {
    const set = UNCHECKED.exec(name)?.[1];
    if (!set) continue;
    const st = await lstat(join(versionsDir, name));
    if (!st.isFile()) {
      throw new MirrorSafetyError(`${join(versionsDir, name)} is not a regular file (a symlink or folder planted on the drive?): nothing was copied or deleted; remove it, then run the mirror again`);
    }
    if (versionSetTime(set)) sets.push(set);
  }
  return sets;
}

export interface VersionedMirrorInput {
  /** This run's version set. */
  versionSet: string;
  acceptRewrites?: RewriteAcceptance;
  /** The dump this mirror pairs with (the newest valid one now), recorded beside the sets; asked once the set's place is checked. */
  pairedDump: () => Promise<{ file: string; sha256: string } | undefined>;
}

/** What the write-once guard refused: the originals are back on the mirror; the caller raises `error`. */
export interface WriteOnceRefusal {
  error: WriteOnceError;
  /** For the alarm's log line. */
  details: { rewrites: number; first: string[]; deletions: number; firstDeleted: string[]; limit: number; digest: string };
}

export type VersionedMirrorOutcome = { refused: WriteOnceRefusal } | { refused?: undefined; result: MirrorResult; versioning: MirrorVersioning; rsyncMs: number };

/**
 * The versioned mirror, at the cost of plain rsync plus what changed: one `rsync -a --backup
 * --backup-dir=<this run's version set>` (with --delete when library.delete), so every file it
 * overwrites or deletes moves into the set. The write-once guard then looks only at the set:
 * a file the mirror holds again was overwritten; its old and new bytes differ (a rewrite, which
 * Immich never does) or not (a new mtime); a file it no longer holds was deleted. Rewrites and
 * deletions of originals (not Immich's derived files) above library.writeOnce, unless the operator
 * approved exactly these, go straight back onto the mirror and the run is refused: no original
 * stays overwritten or deleted. A marker beside the set until the check is done: a run stopped in
 * between has its set checked by the next run.
 */
export async function versionedMirror(lib: Library, input: VersionedMirrorInput): Promise<VersionedMirrorOutcome> {
  const started = Date.now();
  const versionsDir = resolve(versionsDirOf(lib));
  const setDir = join(versionsDir, input.versionSet);
  await assertOnDrive(lib, setDir, 'the version set');
  const pair = await input.pairedDump();
  await onDrive(lib, 'creating the versions folder', mkdir(versionsDir, { recursive: true }));
  const markers = await uncheckedSets(versionsDir);
  // Oldest first: what the guard puts back comes from the oldest set holding it.
  const sets = [...new Set([...markers, input.versionSet])].sort();
  await onDrive(lib, 'marking the version set unchecked', markUnchecked(versionsDir, input.versionSet));
  const plan: MirrorPlan = emptyPlan();
  // One line per change only: a no-change run prints nothing.
  const args = treeArgs(lib, lib.source, lib.destination, { delete: lib.delete, extra: ['--backup', `--backup-dir=${setDir}`, '--out-format=%i %n'] });
  const stall = driveStall(lib, `the library mirror onto ${lib.mountPoint}`);
  const copied = await runRsync(args, { step: 'mirroring library', prefix: ioPriority(lib), stall, okExitCodes: [RSYNC_VANISHED], onLines: (lines) => parseItemized(lines, plan) });

  const copiedAtMs = Date.now();
  // The write-once guard, over what the run (and any run stopped before its check) overwrote or deleted.
  const derived = derivedMatcher(lib.writeOnce.derived);
  // A set holds at most what the mirror held: anything far beyond was not put there by a run.
  const maxEntries = 2 * Math.max(copied.regularFiles, 5_000) + 100_000;
  const found: SetFinding[] = [];
  let checked = 0;
  let versioned = 0;
  const rewrites: SetFinding[] = [];
  const deletions: SetFinding[] = [];
  let touched = 0;
  await withHeartbeats((async () => {
    for (const set of sets) {
      const dir = join(versionsDir, set);
      if (set !== input.versionSet) await assertOnDrive(lib, dir, 'the version set');
      const contents = await versionSetContents(dir, lib.destination, { maxEntries });
      if (set === input.versionSet) versioned = contents.files.length;
      const overwritten = new Set(contents.overwritten);
      for (const path of contents.files) if (!derived(path)) found.push({ set, path, onMirror: overwritten.has(path) });
    }
    for (const f of oldestVersions(found)) {
      if (!f.onMirror) deletions.push(f);
      else if (await sameBytes(join(versionsDir, f.set, f.path), join(lib.destination, f.path)).catch(() => false)) touched++;
      else rewrites.push(f);
      checked++;
    }
  })(), () => ({ step: 'checking overwritten and deleted originals', checked }));
  const names = rewrites.map((r) => r.path);
  const deleted = deletions.map((d) => d.path);
  const digest = changeDigest(names, deleted);
  const changes = names.length + deleted.length;
  const shown = [...names].sort().slice(0, REWRITES_SHOWN);
  const deletedShown = [...deleted].sort().slice(0, REWRITES_SHOWN);
  const limit = Math.min(lib.writeOnce.maxFiles, Math.floor(lib.writeOnce.maxShare * copied.regularFiles));
  const accepted = input.acceptRewrites;
  const approved = accepted !== undefined && accepted.count === changes && accepted.digest === digest;
  const markChecked = () => onDrive(lib, 'marking the version sets checked', Promise.all(sets.map((set) => rm(join(versionsDir, uncheckedMarker(set)), { force: true }))));
  if (changes > limit && !approved) {
    // Each original back in its place (a rename on the drive), from the oldest set holding it: the mirror keeps its originals.
    await onDrive(
      lib,
      'putting the originals back',
      mapLimit([...rewrites, ...deletions], async (r) => {
        const target = join(lib.destination, r.path);
        // Never through a folder the drive turned into a symlink since rsync ran.
        await assertOnDrive(lib, dirname(target), 'a folder on the mirror');
        if (!r.onMirror) await mkdir(dirname(target), { recursive: true });
        await rename(join(versionsDir, r.set, r.path), target);
      }),
    );
    await markChecked();
    const refused = { count: changes, digest };
    const why = accepted ? `the approval given (${acceptanceText(accepted)}) is for another set of files; ` : '';
    const what = [
      ...(names.length ? [`${names.length} original(s) already on the mirror changed content in the library (first: ${shown.join(', ')})`] : []),
      ...(deleted.length ? [`${deleted.length} original(s) on the mirror were deleted from the library (first: ${deletedShown.join(', ')})`] : []),
    ].join(' and ');
    const error = new WriteOnceError(
      `${what}, above library.writeOnce ` +
        `(${lib.writeOnce.maxFiles} files, ${lib.writeOnce.maxShare} of ${copied.regularFiles}): ${why}none was overwritten${lib.delete ? ' or deleted' : ''} (new files were copied); ` +
        `check the library (ransomware, a failing disk, a tool that rewrote, renamed or deleted files), and if the change is intended run: immich-backup backup library --accept-rewrites ${acceptanceText(refused)}`,
    );
    return { refused: { error, details: { rewrites: names.length, first: shown, deletions: deleted.length, firstDeleted: deletedShown, limit, digest } } };
  }
  await markChecked();
  const versioning: MirrorVersioning = {
    versionSet: input.versionSet,
    versioned,
    differences: plan.created.length + plan.changed.length + plan.deleted.length,
    rewrites: { count: names.length, first: shown, digest },
    touched,
    ...(deleted.length ? { deletions: { count: deleted.length, first: deletedShown } } : {}),
    ...(approved && changes > limit ? { accepted: true } : {}),
    ...(pair ? { pairedDump: pair.file } : {}),
  };
  await onDrive(lib, 'recording the pairing', recordPairing(versionsDir, { versionSet: input.versionSet, mirroredAt: new Date(started).toISOString(), ...(pair ? { dump: pair.file, sha256: pair.sha256 } : {}) }));
  const result: MirrorResult = { filesTransferred: copied.filesTransferred, bytesTransferred: copied.bytesTransferred, deleted: copied.deleted, sourceFiles: copied.regularFiles, durationMs: Date.now() - started };
  return { result, versioning, rsyncMs: copiedAtMs - started };
}
