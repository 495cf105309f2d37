import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import type { Config } from '../../config/config.js';
import type { AuditState } from './audit-state.js';
import { readAssetPage, type AssetSchema, type ImmichAsset } from '../immich/immich-assets.js';
import { isMountPoint } from './drive.js';
import { startReader, type Reader, type Sha1Read } from './library-audit-reader.js';
import { SourceEmptyError } from '../../core/errors.js';
import type { PostgresTarget } from '../../core/types.js';
import type { SideReport } from '../../core/library-audit-report.js';

// LibraryAudit's pass itself: the part that runs in its own worker thread (audit-thread-main.ts),
// so it imports little. Pages of assets in id order, files checked and hashed on both sides.

/** A hash batch: this many files or bytes per side, whichever comes first (one request to each side's reader). */
const BATCH_FILES = 512;
const BATCH_BYTES = 128 * 1024 * 1024;
/** And at most this many assets in all (skipped ones and missing files included), so that a run of them is never held at once. */
const BATCH_ASSETS = 1000;
/** lstat calls in flight at once. */
const STAT_AT_ONCE = 128;
const PAGE = 1000;
/** Hash batches formed (and queued on each side) ahead of the one being committed. */
const BATCHES_AHEAD = 3;
/** Directories whose place on the drive is remembered before hashing (re-checked after, uncached). */
const DIRS_REMEMBERED = 10_000;

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


/** Where a directory of one side (the library, or the mirror) leads: into that side where it says, missing, or out of it. */
type DirPlace = 'inside' | 'missing' | 'outside';

/** A side's real root (the realpath of library.source or library.destination); the mirror's with the drive's device. */
export interface SideRoot {
  real: string;
  dev?: number;
}

/**
 * Whether the directory `relDir` of a side is itself: its real path is the side's real path joined
 * with it (for the mirror, on the drive's device too). A symlinked directory would otherwise have
 * lstat and the reader look at files elsewhere: in the library, which Immich's container writes,
 * upload/<user>/link -> /etc would have the audit (root) hash /etc/shadow against a checksum of the
 * writer's choosing; on the drive, immich/library/<user> -> the live library would have the
 * mirror's copy called good. Checked per directory, not per file: one realpath for all its files.
 */
export async function dirPlace(root: SideRoot, relDir: string): Promise<DirPlace> {
  const path = join(root.real, relDir);
  try {
    if ((await realpath(path)) !== path) return 'outside';
    return root.dev === undefined || (await stat(path)).dev === root.dev ? 'inside' : 'outside';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') return 'outside';
    // Missing, unless a symlink along it leads out (to nothing, or to what does not exist out there):
    // each directory looked at lies in the side, its parents having been found to be directories.
    let dir = root.real;
    for (const name of relDir.split('/')) {
      dir = join(dir, name);
      const st = await lstat(dir).catch(() => undefined);
      if (st?.isSymbolicLink()) return 'outside';
      if (!st?.isDirectory()) return 'missing';
    }
    return 'missing';
  }
}

/** What a file reached through a directory leading out of its side counts as: mismatched (the side holds no copy of it there). */
const OUT_OF_LIBRARY: FileCheck = { kind: 'other', why: 'not in the library (a directory on its path leads out of it)' };
const OFF_DRIVE: FileCheck = { kind: 'other', why: 'not on the drive (a directory on its path leads off it)' };

/** One side of the audit: its real root, what a file out of it counts as, and the places of its directories looked at. */
interface Side {
  root: SideRoot;
  outside: FileCheck;
  dirs: Map<string, Promise<DirPlace>>;
}

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
  const keep = lib.audit.reportNames;
  const run = state.run!;
  const pass = state.pass!;
  let mirrorOff = p.mirrorOff;
  let current = '';
  // Each side's real root: its files are looked at and read only under it (see dirPlace), by their
  // real path (the root joined with the asset's plain relative path: the reader refuses any other).
  const libReal = await realpath(lib.source).catch(() => undefined);
  if (!libReal) throw new SourceEmptyError(`the library ${lib.source} could not be resolved: is it mounted? Nothing more was audited`);
  const library: Side = { root: { real: libReal }, outside: OUT_OF_LIBRARY, dirs: new Map() };
  const mirrorRoot = mirrorOff ? undefined : await realpath(lib.destination).then(async (real) => ({ real, dev: (await stat(real)).dev }), () => undefined);
  if (!mirrorOff && !mirrorRoot) {
    mirrorOff = `the mirror ${lib.destination} could not be resolved on the drive`;
    run.mirrorReason = mirrorOff;
  }
  const mirror: Side | undefined = mirrorRoot && { root: mirrorRoot, outside: OFF_DRIVE, dirs: new Map() };
  const placeOf = (side: Side, rel: string) => {
    const dir = dirname(rel);
    let place = side.dirs.get(dir);
    if (!place) {
      if (side.dirs.size >= DIRS_REMEMBERED) side.dirs = new Map();
      place = dirPlace(side.root, dir);
      side.dirs.set(dir, place);
    }
    return place;
  };
  /** A side's file, looked at only when its directory is where it says. */
  const checkOn = async (side: Side, rel: string, place = placeOf(side, rel)): Promise<FileCheck> => {
    const where = await place;
    return where === 'inside' ? checkFile(join(side.root.real, rel)) : where === 'missing' ? { kind: 'missing' } : side.outside;
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
  const lookAt = async (a: ImmichAsset): Promise<Skipped | Audited> => {
    if (a.algorithm !== 'sha1') return { a, skip: 'notContent' as const };
    if (a.relativePath === undefined) return { a, skip: 'outsideLibrary' as const };
    const [libCheck, mirCheck] = await Promise.all([checkOn(library, a.relativePath), mirror && !mirrorOff ? checkOn(mirror, a.relativePath) : undefined]);
    return { a, rel: a.relativePath, library: libCheck, mirror: mirCheck };
  };
  /** Whether the pass's last page was read (a page shorter than asked): set once the batches run out. */
  let endOfPass = false;
  /**
   * The slice's assets in hash batches, in id order: pages read ahead one at a time, each page's
   * files looked at a few at a time, a batch handed out as soon as it is full, so that hashing
   * starts after the first batch's lstat calls, not after a whole page's.
   */
  async function* batches(): AsyncGenerator<Array<Skipped | Audited>> {
    let left = run.quota - run.covered;
    let pending = left > 0 ? fetch(pass.after, ask(left)) : undefined;
    let batch: Array<Skipped | Audited> = [];
    let bytes = 0;
    let files = 0;
    while (pending) {
      const { rows, asked } = await pending;
      pending = undefined;
      const take = rows.slice(0, left);
      endOfPass = rows.length < asked;
      left -= take.length;
      if (!endOfPass && left > 0 && take.length) pending = fetch(take.at(-1)!.id, ask(left));
      for (let i = 0; i < take.length; i += STAT_AT_ONCE) {
        for (const c of await Promise.all(take.slice(i, i + STAT_AT_ONCE).map(lookAt))) {
          if (batch.length && (bytes >= BATCH_BYTES || files >= BATCH_FILES || batch.length >= BATCH_ASSETS)) {
            yield batch;
            batch = [];
            bytes = files = 0;
          }
          batch.push(c);
          if (!c.skip && c.library.kind === 'file') {
            bytes += c.library.size;
            files++;
          }
        }
      }
    }
    if (batch.length) yield batch;
  }
  // Each side's reader hashes its batches one after the other, never waiting for the other side:
  // one reader per disk, both disks kept busy. A few batches are queued ahead, so that a reader
  // starts the next batch as soon as it ends one.
  const hashOn = (reader: Reader, files: Array<{ path: string; size: number }>) => {
    const sums = reader.hash(files);
    sums.catch(() => undefined); // awaited in order below; a batch after a failure is never reached
    return sums;
  };
  // A file is read up to the size it had when looked at: one that grew since (a huge sparse file
  // planted in its place) is not read to its end, and counts as mismatched.
  const sizeOf = (check: FileCheck) => (check.kind === 'file' ? check.size : 0);
  type InFlight = { batch: Array<Skipped | Audited>; hashed: Audited[]; libFiles: Audited[]; mirFiles: Audited[]; libSums: Promise<Array<Sha1Read | undefined>>; mirSums: Promise<Array<Sha1Read | undefined>> };
  const inFlight: InFlight[] = [];
  const hashBatch = (batch: Array<Skipped | Audited>) => {
    const hashed = batch.filter((c): c is Audited => !c.skip);
    const libFiles = hashed.filter((c) => c.library.kind === 'file');
    const mirFiles = mirrorOff ? [] : hashed.filter((c) => c.mirror?.kind === 'file');
    inFlight.push({
      batch,
      hashed,
      libFiles,
      mirFiles,
      libSums: hashOn(libReader, libFiles.map((c) => ({ path: join(library.root.real, c.rel), size: sizeOf(c.library) }))),
      mirSums: mirFiles.length && mirReader && mirror ? hashOn(mirReader, mirFiles.map((c) => ({ path: join(mirror.root.real, c.rel), size: sizeOf(c.mirror!) }))) : Promise.resolve([]),
    });
  };
  /**
   * A side's files as read, re-checked after: one whose directory now leads out of the side (swapped
   * for a symlink while the batch was hashed), or that the reader found off the drive's device (a
   * directory swapped and back around the read), counts as out of it; one the reader could not read
   * may have gone since it was looked at: missing, not damaged. Returns each file's SHA-1 as read.
   */
  const settle = async (side: Side, key: 'library' | 'mirror', files: Audited[], sums: Array<Sha1Read | undefined>) => {
    const now = new Map<string, Promise<DirPlace>>();
    for (const c of files) if (!now.has(dirname(c.rel))) now.set(dirname(c.rel), dirPlace(side.root, dirname(c.rel)));
    const sha1 = new Map<Audited, string | undefined>();
    for (const [j, c] of files.entries()) {
      const read = sums[j];
      const place = now.get(dirname(c.rel))!;
      if ((await place) === 'outside' || (read && side.root.dev !== undefined && read.dev !== side.root.dev)) c[key] = side.outside;
      else if (!read && (await checkOn(side, c.rel, place)).kind === 'missing') c[key] = { kind: 'missing' };
      sha1.set(c, read?.sha1);
    }
    return sha1;
  };
  const commitFirst = async () => {
    const { batch, hashed, libFiles, mirFiles } = inFlight[0]!;
    current = hashed[0]?.rel ?? current;
    emit({ type: 'current', current });
    const [libSums, mirSums] = await Promise.all([inFlight[0]!.libSums, inFlight[0]!.mirSums]);
    inFlight.shift();
    // The drive may have gone while it was read: its files would read as missing. Or been
    // unplugged and mounted again, on another device: its files would read as off the drive.
    if (!mirrorOff && hashed.length) {
      const rootNow = await realpath(lib.destination).then(async (real) => ({ real, dev: (await stat(real)).dev }), () => undefined);
      if ((await mirrorProblemOf(lib)) || !rootNow || rootNow.real !== mirror!.root.real || rootNow.dev !== mirror!.root.dev) {
        mirrorOff = `the drive went away or was mounted again during the audit (${lib.mountPoint})`;
        run.mirrorReason = mirrorOff;
      }
    }
    const libSum = await settle(library, 'library', libFiles, libSums);
    const mirSum = !mirrorOff && mirror ? await settle(mirror, 'mirror', mirFiles, mirSums) : new Map<Audited, string | undefined>();
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
  };
  // One reader per side, at the library's idle priority; killed when the slice ends or is cancelled.
  const priority = { ioniceClass: lib.ioniceClass, nice: lib.nice };
  const libReader = startReader(priority, signal);
  const mirReader = mirrorOff ? undefined : startReader(priority, signal);
  try {
    if (!signal?.aborted) {
      for await (const batch of batches()) {
        hashBatch(batch);
        while (inFlight.length >= BATCHES_AHEAD) await commitFirst();
        if (signal?.aborted) break;
      }
      while (inFlight.length && !signal?.aborted) await commitFirst();
    }
  } finally {
    libReader.close();
    mirReader?.close();
  }
  if (signal?.aborted) throw signal.reason;
  if (endOfPass) run.passCompleted = true;
  return { state, mirrorOff };
}

