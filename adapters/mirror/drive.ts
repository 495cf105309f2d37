import { lstat, opendir, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { MirrorSafetyError } from '../../core/errors.js';

// The USB drive as a place: is it mounted, is a path really on it, does a tree hold files.

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

/**
 * The drive is someone else's disk: a symlink on it (the destination, or a folder on the way)
 * could send `rsync --delete` into a host directory, or a restore copy one into the library.
 * What `path` really is (its nearest existing part, resolved) must lie on the drive.
 */
export async function assertOnDrive(
  lib: { mountPoint: string },
  path: string,
  what: string,
  outcome = 'nothing was copied or deleted; remove the link',
): Promise<void> {
  const mount = await realpath(lib.mountPoint);
  const { dev } = await stat(mount);
  let existing = resolve(path);
  while (!(await lstat(existing).catch(() => undefined)) && existing !== mount) existing = dirname(existing);
  const real = await realpath(existing);
  const rel = relative(mount, real);
  const st = await stat(real);
  if (rel.startsWith('..') || rel.startsWith('/') || st.dev !== dev) {
    throw new MirrorSafetyError(`${what} ${path} leads to ${real}, off the drive mounted at ${lib.mountPoint} (a symlink on the drive?): ${outcome}`);
  }
}

/** Why the drive cannot take or give the mirror now (not mounted, destination off it), or undefined when it can. */
export async function driveProblem(lib: { mountPoint: string; destination: string }): Promise<string | undefined> {
  if (!(await isMountPoint(lib.mountPoint))) return `drive not mounted at ${lib.mountPoint}`;
  const inside = relative(resolve(lib.mountPoint), resolve(lib.destination));
  if (inside.startsWith('..') || resolve(lib.mountPoint, inside) !== resolve(lib.destination)) {
    return `library.destination ${lib.destination} is not on the drive mounted at ${lib.mountPoint}`;
  }
  await assertOnDrive(lib, lib.destination, 'library.destination');
  return undefined;
}
