import { lstat, opendir, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { CommandFailedError, DriveNotMountedError, MirrorSafetyError, SourceEmptyError, StalledError } from '../src/errors.js';
import { requireAuthorizedRun } from './authorize.js';
import type { ActivityDeps } from './deps.js';
import { withHeartbeats } from './run-command.js';
import { runRsync } from './rsync.js';
import type { MirrorOutcome, MirrorResult, MirrorSettings } from './types.js';

/** True when `path` is itself a mount point (per /proc/self/mountinfo), not a directory on its parent's filesystem. */
export async function isMountPoint(path: string): Promise<boolean> {
  const real = await realpath(path).catch(() => undefined);
  if (!real) return false;
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return mountinfo.split('\n').some((line) => unescape(line.split(' ')[4] ?? '') === real);
}

/** Regular files under dir (0 when it does not exist). */
export async function countFiles(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return entries.filter((e) => e.isFile()).length;
}

/** True as soon as one regular file is found under dir: cheap even for a 135k-file library. */
export async function hasFiles(dir: string): Promise<boolean> {
  const stack = [dir];
  while (stack.length) {
    const current = stack.pop()!;
    const handle = await opendir(current).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
      throw err;
    });
    if (!handle) continue;
    for await (const entry of handle) {
      if (entry.isFile()) return true; // leaving the loop closes the handle
      if (entry.isDirectory()) stack.push(join(current, entry.name));
    }
  }
  return false;
}

export function createMirrorActivities({ config, logger }: ActivityDeps) {
  const lib = config.library;
  const priority = [...(lib.ioniceClass ? ['ionice', '-c', String(lib.ioniceClass)] : []), ...(lib.nice ? ['nice', '-n', String(lib.nice)] : [])];

  /**
   * rsync -a of one tree onto another under library.ioniceClass / nice, with the configured
   * excludes; stopped as stalled when nothing moves for library.stallSeconds (a frozen or dying
   * drive). `fromDrive`: the drive is not trusted (anyone with the disk in hand can write it), so
   * nothing comes back from it that the library never holds: no setuid/setgid bits, no device
   * files, FIFOs or sockets, no symlink leading out of the tree. What was skipped is reported.
   */
  async function copyTree(from: string, to: string, options: { delete: boolean; dryRun: boolean; step: string; what: string; maxDelete?: number; fromDrive?: boolean }): Promise<MirrorResult> {
    const started = Date.now();
    const untrusted = options.fromDrive
      ? ['--no-devices', '--no-specials', '--safe-links', '--chmod=ug-s', '--info=nonreg,name1']
      : [];
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
    await assertOnDrive();
    return undefined;
  }

  /**
   * The drive is someone else's disk: a symlink on it (the destination, or a folder on the way)
   * could send `rsync --delete` into a host directory, or a restore copy one into the library.
   * What the destination really is (its nearest existing part, resolved) must lie on the drive.
   */
  async function assertOnDrive(): Promise<void> {
    const mount = await realpath(lib.mountPoint);
    const { dev } = await stat(mount);
    let existing = resolve(lib.destination);
    while (!(await lstat(existing).catch(() => undefined)) && existing !== mount) existing = dirname(existing);
    const real = await realpath(existing);
    const rel = relative(mount, real);
    const st = await stat(real);
    if (rel.startsWith('..') || rel.startsWith('/') || st.dev !== dev) {
      throw new MirrorSafetyError(`library.destination ${lib.destination} leads to ${real}, off the drive mounted at ${lib.mountPoint} (a symlink on the drive?): nothing was copied or deleted; remove the link`);
    }
  }

  return {
    async mirrorSettings(): Promise<MirrorSettings> {
      return { mountWaitMs: lib.mountWaitMinutes * 60_000, mountPollMs: lib.mountPollSeconds * 1000, mountPoint: lib.mountPoint, delete: lib.delete };
    },

    /**
     * The preconditions, then the copy, in one activity (one round trip): the drive is mounted,
     * the library holds files, and (with deletion on) it holds at least library.minSourceFraction
     * of the mirror's files, so an emptied or unmounted library never erases its own backup. A
     * drive that is not there is an answer ({ ready: false }), for the workflow to wait on; the
     * copy is rsync -a at idle I/O priority, and a retry resumes, as rsync skips what is done.
     */
    async mirrorLibrary(): Promise<MirrorOutcome> {
      // Deleting from the mirror is destructive: only a run that was authorized (its schedule, or a start token).
      if (lib.delete) await requireAuthorizedRun(config.security.keyFile, 'mirror with deletion');
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
      const result = await copyTree(lib.source, lib.destination, { delete: lib.delete, dryRun: false, step: 'mirroring library', what: `the library mirror onto ${lib.mountPoint}` });
      logger.info({ ...result, destination: lib.destination }, 'library mirrored');
      return { ready: true, ...result };
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
