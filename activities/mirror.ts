import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { CommandFailedError, DriveNotMountedError, MirrorSafetyError, SourceEmptyError, StalledError, WriteOnceError } from '../core/errors.js';
import { versionSetName, versionSetProblem, versionSetTime, versionsDirOf } from '../core/library-layout.js';
import { openDumpStore } from '../adapters/dump-store/index.js';
import { requireAuthorizedRun } from './authorize.js';
import { assertOnDrive, countFiles, hasFiles, isMountPoint } from '../adapters/mirror/drive.js';
import type { ActivityDeps } from './deps.js';
import { acceptanceText, changeDigest, derivedMatcher, emptyPlan, mapLimit, oldestVersions, parseItemized, pruneVersionSets, recordPairing, sameBytes, UNCHECKED, uncheckedMarker, versionSetContents, type MirrorPlan, type PruneVersionsResult, type SetFinding } from '../adapters/mirror/library-versions.js';
import { withHeartbeats } from '../adapters/commands/run-command.js';
import { FROM_UNTRUSTED_TREE, ioPriority, runRsync } from '../adapters/commands/rsync.js';
import type { MirrorLibraryInput, MirrorOutcome, MirrorResult, MirrorSettings, MirrorVersioning } from '../core/types.js';

/** Rewritten files named in the report, the alarm and the refusal. */
const REWRITES_SHOWN = 5;

export function createMirrorActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;
  const priority = ioPriority(lib);

  /**
   * rsync -a of one tree onto another under library.ioniceClass / nice, with the configured
   * excludes; stopped as stalled when nothing moves for library.stallSeconds (a frozen or dying
   * drive). `fromDrive`: the drive is not trusted (anyone with the disk in hand can write it), so
   * nothing comes back from it that the library never holds: no setuid/setgid bits, no device
   * files, FIFOs or sockets, no symlink leading out of the tree. What was skipped is reported.
   */
  async function copyTree(from: string, to: string, options: { delete: boolean; dryRun: boolean; step: string; what: string; maxDelete?: number; fromDrive?: boolean }): Promise<MirrorResult> {
    const started = Date.now();
    const untrusted = options.fromDrive ? FROM_UNTRUSTED_TREE : [];
    const args = [
      '-a',
      ...untrusted,
      // rsync's own bound on silence between its processes, beside the stall guard's on progress.
      `--timeout=${lib.stallSeconds}`,
      '--mkpath',
      ...(options.delete ? ['--delete'] : []),
      ...(options.delete && options.maxDelete !== undefined ? [`--max-delete=${options.maxDelete}`] : []),
      ...(options.dryRun ? ['--dry-run'] : []),
      ...(lib.bwLimitKiB ? [`--bwlimit=${lib.bwLimitKiB}`] : []),
      ...lib.excludes.map((pattern) => `--exclude=${pattern}`),
      '--',
      `${resolve(from)}/`,
      `${resolve(to)}/`,
    ];
    const stall = { what: options.what, setting: 'library.stallSeconds', seconds: lib.stallSeconds, advice: 'check the drive (dmesg, fsfreeze --unfreeze), then run it again' };
    const stats = await runRsync(args, { step: options.step, prefix: priority, stall, reportSkipped: options.fromDrive === true }).catch((err: unknown) => {
      // rsync's exit 30: its --timeout saw no data move for library.stallSeconds.
      if (err instanceof CommandFailedError && /\(exit code 30\)/.test(err.message)) {
        throw new StalledError(`${options.what} stalled: rsync saw no data move for ${lib.stallSeconds} s (library.stallSeconds) and stopped; check the drive (dmesg), then run it again`);
      }
      throw err;
    });
    return {
      filesTransferred: stats.filesTransferred,
      bytesTransferred: stats.bytesTransferred,
      deleted: stats.deleted,
      sourceFiles: stats.regularFiles,
      durationMs: Date.now() - started,
      ...(stats.skipped ? { skipped: stats.skipped } : {}),
    };
  }

  async function driveProblem(): Promise<string | undefined> {
    if (!(await isMountPoint(lib.mountPoint))) return `drive not mounted at ${lib.mountPoint}`;
    const inside = relative(resolve(lib.mountPoint), resolve(lib.destination));
    if (inside.startsWith('..') || resolve(lib.mountPoint, inside) !== resolve(lib.destination)) {
      return `library.destination ${lib.destination} is not on the drive mounted at ${lib.mountPoint}`;
    }
    await assertOnDrive(lib, lib.destination, 'library.destination');
    return undefined;
  }

  /** The newest valid dump now (authenticated, not future-stamped, not flagged): what this mirror pairs with. */
  async function pairedDump(): Promise<{ file: string; sha256: string } | undefined> {
    try {
      const { dump } = await openDumpStore(config, logger).latest();
      return dump ? { file: dump.file, sha256: dump.sha256 } : undefined;
    } catch (err) {
      logger.warn({ reason: (err as Error).message }, 'no dump to pair the library mirror with');
      return undefined;
    }
  }

  /**
   * A write to the drive outside rsync, bounded like rsync by library.stallSeconds: on a frozen or
   * dying drive it would wait in the kernel for ever (the thread stays stuck there until the drive
   * answers; the activity fails as stalled, and is not retried).
   */
  async function onDrive<T>(step: string, work: Promise<T>): Promise<T> {
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

  /**
   * The versioned mirror, at the cost of plain rsync plus what changed: one `rsync -a --backup
   * --backup-dir=<this run's version set>` (with --delete when library.delete), so every file it
   * overwrites or deletes moves into the set. The write-once guard then looks only at the set:
   * a file the mirror holds again was overwritten; its old and new bytes differ (a rewrite, which
   * Immich never does) or not (a new mtime); a file it no longer holds was deleted. Rewrites and
   * deletions of originals (not Immich's derived files) above library.writeOnce, unless the operator
   * approved exactly these, go straight back onto the mirror and the run fails: no original stays
   * overwritten or deleted. A marker beside the set until the check is done: a run stopped in
   * between has its set checked by the next run.
   */
  async function versionedMirror(input: MirrorLibraryInput): Promise<MirrorOutcome> {
    const started = Date.now();
    const versionsDir = resolve(versionsDirOf(lib));
    const setDir = join(versionsDir, input.versionSet);
    await assertOnDrive(lib, setDir, 'the version set');
    const pair = await pairedDump();
    await onDrive('creating the versions folder', mkdir(versionsDir, { recursive: true }));
    const markers = await uncheckedSets(versionsDir);
    // Oldest first: what the guard puts back comes from the oldest set holding it.
    const sets = [...new Set([...markers, input.versionSet])].sort();
    await onDrive('marking the version set unchecked', markUnchecked(versionsDir, input.versionSet));
    const stall = { what: `the library mirror onto ${lib.mountPoint}`, setting: 'library.stallSeconds', seconds: lib.stallSeconds, advice: 'check the drive (dmesg, fsfreeze --unfreeze), then run it again' };
    const plan: MirrorPlan = emptyPlan();
    const args = [
      '-a',
      `--timeout=${lib.stallSeconds}`,
      '--mkpath',
      ...(lib.delete ? ['--delete'] : []),
      ...(lib.bwLimitKiB ? [`--bwlimit=${lib.bwLimitKiB}`] : []),
      ...lib.excludes.map((pattern) => `--exclude=${pattern}`),
      '--backup',
      `--backup-dir=${setDir}`,
      // One line per change only: a no-change run prints nothing.
      '--out-format=%i %n',
      '--',
      `${resolve(lib.source)}/`,
      `${resolve(lib.destination)}/`,
    ];
    const copied = await runRsync(args, { step: 'mirroring library', prefix: priority, stall, okExitCodes: [24], onLines: (lines) => parseItemized(lines, plan) }).catch((err: unknown) => {
      if (err instanceof CommandFailedError && /\(exit code 30\)/.test(err.message)) {
        throw new StalledError(`${stall.what} stalled: rsync saw no data move for ${lib.stallSeconds} s (library.stallSeconds) and stopped; check the drive (dmesg), then run it again`);
      }
      throw err;
    });

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
    if (changes > limit && !approved) {
      // Each original back in its place (a rename on the drive), from the oldest set holding it: the mirror keeps its originals.
      await onDrive(
        'putting the originals back',
        mapLimit([...rewrites, ...deletions], async (r) => {
          const target = join(lib.destination, r.path);
          // Never through a folder the drive turned into a symlink since rsync ran.
          await assertOnDrive(lib, dirname(target), 'a folder on the mirror');
          if (!r.onMirror) await mkdir(dirname(target), { recursive: true });
          await rename(join(versionsDir, r.set, r.path), target);
        }),
      );
      await onDrive('marking the version sets checked', Promise.all(sets.map((set) => rm(join(versionsDir, uncheckedMarker(set)), { force: true }))));
      const refused = { count: changes, digest };
      const why = accepted ? `the approval given (${acceptanceText(accepted)}) is for another set of files; ` : '';
      logger.error({ rewrites: names.length, first: shown, deletions: deleted.length, firstDeleted: deletedShown, limit, digest }, 'write-once guard: mass rewrite or deletion refused, originals put back');
      const what = [
        ...(names.length ? [`${names.length} original(s) already on the mirror changed content in the library (first: ${shown.join(', ')})`] : []),
        ...(deleted.length ? [`${deleted.length} original(s) on the mirror were deleted from the library (first: ${deletedShown.join(', ')})`] : []),
      ].join(' and ');
      throw new WriteOnceError(
        `${what}, above library.writeOnce ` +
          `(${lib.writeOnce.maxFiles} files, ${lib.writeOnce.maxShare} of ${copied.regularFiles}): ${why}none was overwritten${lib.delete ? ' or deleted' : ''} (new files were copied); ` +
          `check the library (ransomware, a failing disk, a tool that rewrote, renamed or deleted files), and if the change is intended run: immich-backup backup library --accept-rewrites ${acceptanceText(refused)}`,
      );
    }
    await onDrive('marking the version sets checked', Promise.all(sets.map((set) => rm(join(versionsDir, uncheckedMarker(set)), { force: true }))));
    if (names.length) logger.warn({ rewrites: names.length, first: shown, versionSet: input.versionSet }, 'originals changed content in the library: old versions kept in the version set');
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
    await onDrive('recording the pairing', recordPairing(versionsDir, { versionSet: input.versionSet, mirroredAt: new Date(started).toISOString(), ...(pair ? { dump: pair.file, sha256: pair.sha256 } : {}) }));
    const result: MirrorResult = { filesTransferred: copied.filesTransferred, bytesTransferred: copied.bytesTransferred, deleted: copied.deleted, sourceFiles: copied.regularFiles, durationMs: Date.now() - started };
    logger.info({ ...result, ...versioning, rsyncMs: copiedAtMs - started, destination: lib.destination }, 'library mirrored, versioned');
    return { ready: true, ...result, versioning };
  }

  return {
    async mirrorSettings(): Promise<MirrorSettings> {
      return { mountWaitMs: lib.mountWaitMinutes * 60_000, mountPollMs: lib.mountPollSeconds * 1000, mountPoint: lib.mountPoint, delete: lib.delete, offsite: lib.offsite.enabled };
    },

    /**
     * After a successful run: version sets older than library.keepVersionsWeeks go, oldest first;
     * never this run's, never the newest keepVersionsWeeks, nothing while a set is named in the
     * future. The time is the worker's own: whatever a caller passes (older workflows send nowMs) is ignored.
     */
    async pruneLibraryVersions({ keep }: { keep: string; nowMs?: number }): Promise<PruneVersionsResult> {
      const problem = await driveProblem();
      if (problem) throw new DriveNotMountedError(`${problem}: no version set was pruned`);
      const dir = versionsDirOf(lib);
      await assertOnDrive(lib, dir, 'library.versionsDir');
      const result = await withHeartbeats(pruneVersionSets(dir, Date.now(), lib.keepVersionsWeeks, keep), () => ({ step: 'pruning old version sets' }));
      if (result.future) logger.warn({ future: result.future, dir }, 'version sets named in the future (the clock ran ahead, or runs behind now): nothing pruned; check the clock (timedatectl), then remove or rename those sets');
      if (result.ignored.length) logger.warn({ ignored: result.ignored, dir }, 'entries named like version sets that are not directories: left alone');
      if (result.pruned.length) logger.info({ pruned: result.pruned, keepVersionsWeeks: lib.keepVersionsWeeks }, 'old library version sets pruned');
      return result;
    },

    /**
     * The preconditions, then the copy, in one activity (one round trip): the drive is mounted,
     * the library holds files, and (with deletion on) it holds at least library.minSourceFraction
     * of the mirror's files, so an emptied or unmounted library never erases its own backup. A
     * drive that is not there is an answer ({ ready: false }), for the workflow to wait on; the
     * copy is rsync -a at idle I/O priority, and a retry resumes, as rsync skips what is done.
     */
    async mirrorLibrary(input?: MirrorLibraryInput): Promise<MirrorOutcome> {
      // Every run is versioned and guarded: a caller without a set (an older workflow) gets one named for now.
      const versionSet = input?.versionSet ?? versionSetName(new Date());
      const problemOfSet = versionSetProblem(versionSet, Date.now());
      if (problemOfSet) throw new MirrorSafetyError(`version set ${JSON.stringify(versionSet).slice(0, 40)} ${problemOfSet}: nothing was copied`);
      // Deleting from the mirror is destructive: only a run that was authorized (its schedule, or a start token).
      if (lib.delete) await requireAuthorizedRun(config.security.keyFile, 'mirror with deletion');
      // Approving rewrites is the operator's: only with the start token made for exactly this approval.
      if (input?.acceptRewrites) await requireAuthorizedRun(config.security.keyFile, 'overwrite originals on the mirror');
      const problem = await driveProblem();
      if (problem) return { ready: false, reason: problem };
      if (!(await hasFiles(lib.source))) {
        throw new SourceEmptyError(`the library ${lib.source} is missing or holds no files: is it mounted? Nothing was mirrored`);
      }
      // Counting both trees costs seconds on a large library: only deletion needs the numbers.
      if (lib.delete) {
        const [sourceFiles, mirrorFiles] = await withHeartbeats(Promise.all([countFiles(lib.source), countFiles(lib.destination)]), () => ({ step: 'counting files' }));
        if (sourceFiles < lib.minSourceFraction * mirrorFiles) {
          throw new MirrorSafetyError(
            `refusing to mirror with deletion: the library holds ${sourceFiles} files, the mirror ${mirrorFiles} ` +
              `(below library.minSourceFraction ${lib.minSourceFraction}); check the library before it erases its backup`,
          );
        }
      }
      // Checked again here: the drive may have gone while the library was counted.
      const gone = await driveProblem();
      if (gone) throw new DriveNotMountedError(`${gone}: nothing was written`);
      return versionedMirror({ ...input, versionSet });
    },

    /** Before RestoreLibrary touches anything: the drive is mounted and its mirror holds files. */
    async checkRestoreSource(): Promise<void> {
      const problem = await driveProblem();
      if (problem) throw new DriveNotMountedError(`${problem}: nothing was restored`);
      if (!(await hasFiles(lib.destination))) throw new SourceEmptyError(`the mirror ${lib.destination} holds no files: nothing to restore from`);
    },

    /**
     * The mirror back onto the library, at the same priority; --dry-run reports what rsync would do.
     * `maxDelete`: with deletion, no more deletions than the approved dry run counted.
     */
    async restoreLibraryFiles({ delete: del, dryRun, maxDelete }: { delete: boolean; dryRun: boolean; maxDelete?: number }): Promise<MirrorResult> {
      if (!dryRun) await requireAuthorizedRun(config.security.keyFile, 'restore the library from the drive');
      const problem = await driveProblem();
      if (problem) throw new DriveNotMountedError(`${problem}: nothing was restored`);
      const result = await copyTree(lib.destination, lib.source, { delete: del, dryRun, fromDrive: true, step: dryRun ? 'dry run of the library restore' : 'restoring library', what: `the library restore from ${lib.mountPoint}`, ...(maxDelete !== undefined ? { maxDelete } : {}) }).catch((err: unknown) => {
        // rsync's exit 25: more deletions than approved. Not retried: each retry would delete that many more.
        if (err instanceof CommandFailedError && /\(exit code 25\)/.test(err.message)) {
          throw new MirrorSafetyError(`the restore would delete more library files than the ${maxDelete} the approved dry run counted: deletion stopped there; run the restore again to see and approve the new count`);
        }
        throw err;
      });
      if (result.skipped?.count) logger.warn({ skipped: result.skipped, dryRun, mirror: lib.destination }, 'the mirror holds devices, FIFOs, sockets or symlinks leading out of it: not restored');
      logger.info({ ...result, dryRun, library: lib.source }, dryRun ? 'library restore dry run' : 'library restored from the mirror');
      return result;
    },
  };
}
