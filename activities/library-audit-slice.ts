import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import type { Config } from '../config/config.js';
import type { AuditState } from '../adapters/mirror/audit-state.js';
import { readAssetPage, type AssetSchema, type ImmichAsset } from '../adapters/immich/immich-assets.js';
import { isMountPoint } from '../adapters/mirror/drive.js';
import { startReader, type Reader, type Sha1Read } from '../adapters/mirror/library-audit-reader.js';
import type { PostgresTarget } from '../core/types.js';
import type { SideReport } from '../core/library-audit-report.js';

// LibraryAudit's pass itself: the part that runs in its own worker thread (library-audit-thread.ts),
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


/** Where a mirror directory leads: on the drive where it says, missing, or somewhere else. */
type DirPlace = 'onDrive' | 'missing' | 'offDrive';

/**
 * Whether the directory `relDir` of the mirror is itself: its real path is the mirror's real path
 * joined with it, on the drive's device. A symlinked directory on the drive (immich/library/<user>
 * -> the live library) would otherwise have lstat and the reader read the live files and call the
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
  const lookAt = async (a: ImmichAsset): Promise<Skipped | Audited> => {
    if (a.algorithm !== 'sha1') return { a, skip: 'notContent' as const };
    if (a.relativePath === undefined) return { a, skip: 'outsideLibrary' as const };
    const [library, mirror] = await Promise.all([checkFile(join(lib.source, a.relativePath)), mirrorOff ? undefined : checkMirror(a.relativePath)]);
    return { a, rel: a.relativePath, library, mirror };
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
      libSums: hashOn(libReader, libFiles.map((c) => ({ path: join(lib.source, c.rel), size: sizeOf(c.library) }))),
      mirSums: mirFiles.length && mirReader ? hashOn(mirReader, mirFiles.map((c) => ({ path: join(lib.destination, c.rel), size: sizeOf(c.mirror!) }))) : Promise.resolve([]),
    });
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
      if ((await mirrorProblemOf(lib)) || !rootNow || rootNow.real !== root!.real || rootNow.dev !== root!.dev) {
        mirrorOff = `the drive went away or was mounted again during the audit (${lib.mountPoint})`;
        run.mirrorReason = mirrorOff;
      }
    }
    // A directory swapped for a symlink while the batch was hashed: its files were read off the drive.
    if (!mirrorOff && mirFiles.length) {
      const now = new Map<string, Promise<DirPlace>>();
      for (const c of mirFiles) {
        const dir = dirname(c.rel);
        if (!now.has(dir)) now.set(dir, mirrorDirPlace(lib.destination, root!, dir));
      }
      for (const c of mirFiles) if ((await now.get(dirname(c.rel))!) === 'offDrive') c.mirror = OFF_DRIVE;
      // And the file the reader opened must lie on the drive's device: a directory swapped for a
      // symlink and back around the read would pass the check above, not this one.
      mirFiles.forEach((c, j) => {
        if (mirSums[j] && mirSums[j].dev !== root!.dev) c.mirror = OFF_DRIVE;
      });
    }
    const libSum = new Map(libFiles.map((c, j) => [c, libSums[j]?.sha1]));
    const mirSum = new Map(mirFiles.map((c, j) => [c, mirSums[j]?.sha1]));
    // A file the reader could not read may have gone since it was looked at: missing, not damaged.
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

