import { CommandFailedError, DriveNotMountedError, MirrorSafetyError, SourceEmptyError } from '../core/errors.js';
import { versionSetName, versionSetProblem, versionsDirOf } from '../core/library-layout.js';
import { openDumpStore } from '../adapters/dump-store/index.js';
import { requireAuthorizedRun } from '../adapters/run-auth/index.js';
import { assertOnDrive, countFiles, driveProblem, hasFiles } from '../adapters/mirror/drive.js';
import type { ActivityDeps } from './deps.js';
import { pruneVersionSets, type PruneVersionsResult } from '../adapters/mirror/library-versions.js';
import { restoreFromDrive, versionedMirror } from '../adapters/mirror/versioned-mirror.js';
import { withHeartbeats } from '../adapters/commands/run-command.js';
import { RSYNC_MAX_DELETE } from '../adapters/commands/rsync.js';
import type { MirrorLibraryInput, MirrorOutcome, MirrorResult, MirrorSettings } from '../core/types.js';

export function createMirrorActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;

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

  /** The versioned mirror and its write-once guard (adapters/mirror/versioned-mirror.ts); a refusal is logged as the alarm, then raised. */
  async function mirrorVersioned(input: MirrorLibraryInput): Promise<MirrorOutcome> {
    const run = await versionedMirror(lib, { ...input, pairedDump });
    if (run.refused) {
      logger.error(run.refused.details, 'write-once guard: mass rewrite or deletion refused, originals put back');
      throw run.refused.error;
    }
    const { result, versioning } = run;
    if (versioning.rewrites.count) logger.warn({ rewrites: versioning.rewrites.count, first: versioning.rewrites.first, versionSet: input.versionSet }, 'originals changed content in the library: old versions kept in the version set');
    logger.info({ ...result, ...versioning, rsyncMs: run.rsyncMs, destination: lib.destination }, 'library mirrored, versioned');
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
      const problem = await driveProblem(lib);
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
      const problem = await driveProblem(lib);
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
      const gone = await driveProblem(lib);
      if (gone) throw new DriveNotMountedError(`${gone}: nothing was written`);
      return mirrorVersioned({ ...input, versionSet });
    },

    /** Before RestoreLibrary touches anything: the drive is mounted and its mirror holds files. */
    async checkRestoreSource(): Promise<void> {
      const problem = await driveProblem(lib);
      if (problem) throw new DriveNotMountedError(`${problem}: nothing was restored`);
      if (!(await hasFiles(lib.destination))) throw new SourceEmptyError(`the mirror ${lib.destination} holds no files: nothing to restore from`);
    },

    /**
     * The mirror back onto the library, at the same priority; --dry-run reports what rsync would do.
     * `maxDelete`: with deletion, no more deletions than the approved dry run counted.
     */
    async restoreLibraryFiles({ delete: del, dryRun, maxDelete }: { delete: boolean; dryRun: boolean; maxDelete?: number }): Promise<MirrorResult> {
      if (!dryRun) await requireAuthorizedRun(config.security.keyFile, 'restore the library from the drive');
      const problem = await driveProblem(lib);
      if (problem) throw new DriveNotMountedError(`${problem}: nothing was restored`);
      const result = await restoreFromDrive(lib, { delete: del, dryRun, ...(maxDelete !== undefined ? { maxDelete } : {}) }).catch((err: unknown) => {
        // rsync's exit 25: more deletions than approved. Not retried: each retry would delete that many more.
        if (err instanceof CommandFailedError && err.exitCode === RSYNC_MAX_DELETE) {
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
