import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { ExecaError } from 'execa';
import type { Config } from '../src/config.js';
import type { AuditState } from './library-audit.js';
import { readAssetPage, type AssetSchema, type ImmichAsset } from './immich-assets.js';
import { isMountPoint } from './mirror.js';
import { commandError, startCommand, throwIfCancelled } from './run-command.js';
import { ioPriority } from './rsync.js';
import type { PostgresTarget } from './types.js';
import type { SideReport } from '../src/library-audit-report.js';

// LibraryAudit's pass itself: the part that runs in its own worker thread (library-audit-thread.ts),
// so it imports little. Pages of assets in id order, files checked and hashed on both sides.

/** A hash batch: this many files or bytes per side, whichever comes first (one sha1sum each side). */
const BATCH_FILES = 512;
const BATCH_BYTES = 128 * 1024 * 1024;
/** lstat calls in flight at once. */
const STAT_AT_ONCE = 128;
const PAGE = 1000;
/** Directories whose place on the drive is remembered before hashing (re-checked after, uncached). */
const DIRS_REMEMBERED = 10_000;

/**
 * SHA-1 of each file (hex), or undefined for one sha1sum could not read; one sha1sum for the lot,
 * under `prefix` (ionice, nice). -z: names unescaped, records NUL-terminated, in argument order.
 */
export async function sha1Files(paths: readonly string[], prefix: readonly string[], signal?: AbortSignal): Promise<Array<string | undefined>> {
  if (!paths.length) return [];
  const [file, ...args] = [...prefix, 'sha1sum', '-z', '--', ...paths];
  const child = startCommand(file!, args, { label: 'sha1sum', ...(signal ? { signal } : {}) });
  let stdout: string;
  try {
    stdout = String((await child).stdout ?? '');
  } catch (err) {
    // Exit 1: some file could not be read (the others were hashed); anything else is a failure.
    if (!(err instanceof ExecaError) || err.exitCode !== 1 || signal?.aborted) throw commandError(err, 'sha1sum');
    throwIfCancelled();
    stdout = String(err.stdout ?? '');
  }
  const records = stdout.split('\0');
  const out: Array<string | undefined> = [];
  let r = 0;
  for (const path of paths) {
    const record = records[r];
    // "<40 hex> <' ' or '*'><name>"
    if (record !== undefined && record.slice(42) === path && /^[0-9a-f]{40} [ *]/.test(record)) {
      out.push(record.slice(0, 40));
      r++;
    } else out.push(undefined);
  }
  return out;
}

type FileCheck = { kind: 'missing' } | { kind: 'other'; why: string } | { kind: 'file'; size: number };
type Skipped = { a: ImmichAsset; skip: 'notContent' | 'outsideLibrary' };
type Audited = { a: ImmichAsset; skip?: undefined; rel: string; library: FileCheck; mirror: FileCheck | undefined };

export async function checkFile(path: string): Promise<FileCheck> {
  try {
    const st = await lstat(path);
    return st.isFile() ? { kind: 'file', size: st.size } : { kind: 'other', why: 'not a regular file' };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'missing' };
    return { kind: 'other', why: code ?? 'unreadable' };
  }
}


/** Where a mirror directory leads: on the drive where it says, missing, or somewhere else. */
type DirPlace = 'onDrive' | 'missing' | 'offDrive';

/**
 * Whether the directory `relDir` of the mirror is itself: its real path is the mirror's real path
 * joined with it, on the drive's device. A symlinked directory on the drive (immich/library/<user>
 * -> the live library) would otherwise have lstat and sha1sum read the live files and call the
 * mirror's copy good. Checked per directory, not per file: one realpath for all its files.
 */
export async function mirrorDirPlace(destination: string, root: { real: string; dev: number }, relDir: string): Promise<DirPlace> {
  try {
    const real = await realpath(join(destination, relDir));
    if (real !== join(root.real, relDir)) return 'offDrive';
    return (await stat(real)).dev === root.dev ? 'onDrive' : 'offDrive';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'missing' : 'offDrive';
  }
}

/** What a mirror file off the drive counts as: mismatched (the drive holds no copy of it there). */
const OFF_DRIVE: FileCheck = { kind: 'other', why: 'not on the drive (a directory on its path leads off it)' };

/** Why the mirror cannot be checked now (its files would all read as missing), or undefined. */
export async function mirrorProblemOf(lib: Config['library']): Promise<string | undefined> {
  if (!(await isMountPoint(lib.mountPoint))) return `drive not mounted at ${lib.mountPoint}`;
  const mount = await realpath(lib.mountPoint);
  const rel = relative(mount, resolve(lib.destination));
  if (rel.startsWith('..') || rel.startsWith('/')) return `library.destination ${lib.destination} is not on the drive mounted at ${lib.mountPoint}`;
  const real = await realpath(lib.destination).catch(() => undefined);
  if (!real) return `the mirror ${lib.destination} does not exist on the drive`;
  // A symlink on the drive could send the reads anywhere: the mirror must really lie on the drive.
  const [a, b] = await Promise.all([stat(mount), stat(real)]);
  const realRel = relative(mount, real);
  if (a.dev !== b.dev || realRel.startsWith('..') || realRel.startsWith('/')) return `library.destination ${lib.destination} leads to ${real}, off the drive mounted at ${lib.mountPoint}`;
  return undefined;
}

export interface SliceParams {
  config: Config;
  target: PostgresTarget;
  schema: AssetSchema;
  /** With state.run and state.pass set: where to go on from, and this run's quota. */
  state: AuditState;
  mirrorOff: string | undefined;
}

/** A batch committed (the new snapshot), or the file being read now. */
export type SliceEvent = { type: 'commit'; state: AuditState; current: string } | { type: 'current'; current: string };

/**
 * This run's slice of the pass: pages of assets in id order, each cut into hash batches (both
 * sides hashed at once), each batch committed whole (counts and position together) through `emit`.
 */
export async function auditSlice(p: SliceParams, emit: (e: SliceEvent) => void, signal?: AbortSignal): Promise<{ state: AuditState; mirrorOff: string | undefined }> {
  const { config, schema, state } = p;
  const lib = config.library;
  const priority = ioPriority(lib);
  const keep = lib.audit.reportNames;
  const run = state.run!;
  const pass = state.pass!;
  let mirrorOff = p.mirrorOff;
  let current = '';
  // The mirror's real root and device: every mirror file read must lie under it (see mirrorDirPlace).
  const root = mirrorOff ? undefined : await realpath(lib.destination).then(async (real) => ({ real, dev: (await stat(real)).dev }), () => undefined);
  if (!mirrorOff && !root) {
    mirrorOff = `the mirror ${lib.destination} could not be resolved on the drive`;
    run.mirrorReason = mirrorOff;
  }
  let dirs = new Map<string, Promise<DirPlace>>();
  const dirPlace = (rel: string) => {
    const dir = dirname(rel);
    let place = dirs.get(dir);
    if (!place) {
      if (dirs.size >= DIRS_REMEMBERED) dirs = new Map();
      place = mirrorDirPlace(lib.destination, root!, dir);
      dirs.set(dir, place);
    }
    return place;
  };
  const checkMirror = async (rel: string): Promise<FileCheck> => {
    const place = await dirPlace(rel);
    return place === 'onDrive' ? checkFile(join(lib.destination, rel)) : place === 'missing' ? { kind: 'missing' } : OFF_DRIVE;
  };
  const note = (side: SideReport, kind: 'missing' | 'mismatched', path: string) => {
    side[kind]++;
    if (side.names[kind].length < keep) side.names[kind].push(path);
  };
  const fetch = (after: string | undefined, limit: number) => {
    const rows: ImmichAsset[] = [];
    const done = readAssetPage(config, p.target, schema, { after, limit }, (a) => void rows.push(a)).then(() => ({ rows, asked: limit }));
    done.catch(() => undefined); // a prefetched page the loop never reaches
    return done;
  };
  const ask = (left: number) => Math.min(PAGE, left + 1);
  let left = run.quota - run.covered;
  let pending = left > 0 ? fetch(pass.after, ask(left)) : undefined;
  while (pending) {
    const { rows, asked } = await pending;
    pending = undefined;
    const take = rows.slice(0, left);
    const endOfPass = rows.length < asked;
    if (!endOfPass && left - take.length > 0 && take.length) pending = fetch(take.at(-1)!.id, ask(left - take.length));
    // Every file of the page looked at first (a few at a time), then cut into hash batches.
    const checks: Array<Skipped | Audited> = [];
    for (let i = 0; i < take.length; i += STAT_AT_ONCE) {
      checks.push(
        ...(await Promise.all(
          take.slice(i, i + STAT_AT_ONCE).map(async (a): Promise<Skipped | Audited> => {
            if (a.algorithm !== 'sha1') return { a, skip: 'notContent' as const };
            if (a.relativePath === undefined) return { a, skip: 'outsideLibrary' as const };
            const [library, mirror] = await Promise.all([checkFile(join(lib.source, a.relativePath)), mirrorOff ? undefined : checkMirror(a.relativePath)]);
            return { a, rel: a.relativePath, library, mirror };
          }),
        )),
      );
    }
    const batches: Array<Array<Skipped | Audited>> = [];
    for (let from = 0; from < checks.length; ) {
      let to = from;
      let bytes = 0;
      let files = 0;
      while (to < checks.length && (to === from || (bytes < BATCH_BYTES && files < BATCH_FILES))) {
        const c = checks[to]!;
        if (!c.skip && c.library.kind === 'file') {
          bytes += c.library.size;
          files++;
        }
        to++;
      }
      batches.push(checks.slice(from, to));
      from = to;
    }
    const audited = (batch: Array<Skipped | Audited>) => batch.filter((c): c is Audited => !c.skip);
    const libFilesOf = batches.map((b) => audited(b).filter((c) => c.library.kind === 'file'));
    const mirFilesOf = batches.map((b) => audited(b).filter((c) => c.mirror?.kind === 'file'));
    // Each side hashes its batches one after the other, never waiting for the other side: one
    // sha1sum per side at a time (one reader per disk), both disks kept busy.
    const chain = (lists: Audited[][], root: string) => {
      let previous: Promise<unknown> = Promise.resolve();
      return lists.map((list) => {
        const sums = previous.then(() => sha1Files(list.map((c) => join(root, c.rel)), priority, signal));
        sums.catch(() => undefined); // awaited below, in order; a batch after a failure is never reached
        previous = sums;
        return sums;
      });
    };
    const libHashes = chain(libFilesOf, lib.source);
    const mirHashes = mirrorOff ? libFilesOf.map(() => Promise.resolve([] as Array<string | undefined>)) : chain(mirFilesOf, lib.destination);
    for (let k = 0; k < batches.length; k++) {
      const batch = batches[k]!;
      const hashed = audited(batch);
      const libFiles = libFilesOf[k]!;
      const mirFiles = mirrorOff ? [] : mirFilesOf[k]!;
      current = hashed[0]?.rel ?? current;
      emit({ type: 'current', current });
      const [libSums, mirSums] = await Promise.all([libHashes[k]!, mirHashes[k]!]);
      // The drive may have gone while it was read: its files would read as missing.
      if (!mirrorOff && hashed.length && (await mirrorProblemOf(lib))) {
        mirrorOff = `the drive went away during the audit (${lib.mountPoint})`;
        run.mirrorReason = mirrorOff;
      }
      // A directory swapped for a symlink while the batch was hashed: its files were read off the drive.
      if (!mirrorOff && mirFiles.length) {
        const now = new Map<string, Promise<DirPlace>>();
        for (const c of mirFiles) {
          const dir = dirname(c.rel);
          if (!now.has(dir)) now.set(dir, mirrorDirPlace(lib.destination, root!, dir));
        }
        for (const c of mirFiles) if ((await now.get(dirname(c.rel))!) === 'offDrive') c.mirror = OFF_DRIVE;
      }
      const libSum = new Map(libFiles.map((c, j) => [c, libSums[j]]));
      const mirSum = new Map(mirFiles.map((c, j) => [c, mirSums[j]]));
      // A file sha1sum could not read may have gone since it was looked at: missing, not damaged.
      for (const c of libFiles) if (libSum.get(c) === undefined && (await checkFile(join(lib.source, c.rel))).kind === 'missing') c.library = { kind: 'missing' };
      for (const c of mirFiles) if (c.mirror?.kind === 'file' && mirSum.get(c) === undefined && (await checkFile(join(lib.destination, c.rel))).kind === 'missing') c.mirror = { kind: 'missing' };
      // Commit: counts and the position move together, in id order.
      for (const c of batch) {
        if (c.skip) pass.skipped[c.skip]++;
        else {
          const want = c.a.checksum.toLowerCase();
          if (c.library.kind === 'missing') note(pass.library, 'missing', c.rel);
          else if (c.library.kind === 'file' && libSum.get(c) === want) pass.library.ok++;
          else note(pass.library, 'mismatched', c.rel);
          if (mirrorOff || !c.mirror) {
            pass.mirror.notChecked++;
            pass.mirror.notCheckedReason = mirrorOff ?? pass.mirror.notCheckedReason;
          } else if (c.mirror.kind === 'missing') note(pass.mirror, 'missing', c.rel);
          else if (c.mirror.kind === 'file' && mirSum.get(c) === want) pass.mirror.ok++;
          else note(pass.mirror, 'mismatched', c.rel);
          const read = (c.library.kind === 'file' ? c.library.size : 0) + (!mirrorOff && c.mirror?.kind === 'file' ? c.mirror.size : 0);
          pass.bytes += read;
          run.bytes += read;
        }
        pass.covered++;
        run.covered++;
        pass.after = c.a.id;
      }
      emit({ type: 'commit', state, current });
    }
    left -= take.length;
    if (endOfPass) {
      run.passCompleted = true;
      break;
    }
    if (left <= 0) break;
  }
  return { state, mirrorOff };
}

