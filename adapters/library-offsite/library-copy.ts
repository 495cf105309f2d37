import { mkdir, readdir } from 'node:fs/promises';
import { dirname, basename, resolve } from 'node:path';
import type { Config } from '../../config/config.js';
import { MirrorSafetyError, NasRepositoryError, SourceEmptyError, UnsafePathError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { remoteVersionsDirOf } from '../../core/library-layout.js';
import type { LibraryOffsiteResult } from '../../core/types.js';
import { withHeartbeats } from '../commands/run-command.js';
import { ioPriority } from '../commands/rsync.js';
import { countFiles, hasFiles } from '../mirror/drive.js';
import { libraryRepo, REPOSITORY_ENTRIES, runRestic, SNAPSHOT_HOST, SNAPSHOT_TAG, streamRestic, type ResticRepo } from './restic.js';
import { runRemote, sshTarget } from '../nas/ssh.js';

// library.offsite: the library's third copy, on the NAS, as an encrypted restic repository at
// library.offsite.remoteDir (see restic.ts): every file there is encrypted and authenticated on
// this host. Each run is a snapshot; the snapshots before stand in for the drive's version sets.
// Remote paths are from the config's safe character set: nothing else reaches the NAS's shell.

// restic check reads the repository's whole structure every run, and this share of its data:
// one twelfth a week, in turn, so every pack is read back from the NAS once a quarter without
// reading the whole library over the network each Sunday.
const CHECK_ROTATION_WEEKS = 12;
const WEEK_MS = 7 * 86_400_000;
// A snapshot dated this far past this host's clock was made by a clock that ran ahead.
const FUTURE_SLACK_MS = 3_600_000;

/** The rsync exclude patterns as restic reads them: a leading / anchors at the library, not at the filesystem's root. */
export function resticExcludes(source: string, excludes: readonly string[]): string[] {
  return excludes.map((pattern) => `--exclude=${pattern.startsWith('/') ? `${source}${pattern}` : pattern}`);
}

/** What is at library.offsite.remoteDir: a repository or not yet, and a plaintext copy left from before. */
async function repositoryState(config: Config, remoteDir: string): Promise<{ exists: boolean; plaintextCopy: string[] }> {
  const offsite = config.offsite;
  await runRemote(offsite, ['mkdir', '-p', '--', remoteDir], { label: 'ssh mkdir' });
  // -p marks directories with a slash: restic's config is a file, its keys a directory.
  const list = async (dir: string) => (await runRemote(offsite, ['ls', '-1Ap', '--', dir], { label: 'ssh ls' })).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const entries = await list(remoteDir);
  const restics = entries.filter((e) => (REPOSITORY_ENTRIES as readonly string[]).includes(e));
  const others = entries.filter((e) => !restics.includes(e));
  const versions = remoteVersionsDirOf(remoteDir);
  const plaintextCopy = [
    ...(others.length ? [`${remoteDir} (${others.length} entr${others.length === 1 ? 'y' : 'ies'} beside the repository: ${others.slice(0, 5).join(', ')}${others.length > 5 ? ', …' : ''})`] : []),
    ...((await list(dirname(versions))).includes(`${basename(versions)}/`) ? [versions] : []),
  ];
  const exists = restics.includes('config');
  if (exists && !restics.includes('keys/')) {
    throw new NasRepositoryError(`${remoteDir} on the NAS holds a restic config but no keys/: the repository is damaged; check it by hand (restic -r … check); nothing was written`);
  }
  if (!exists && restics.length) {
    // Initialising again would start a second repository over the first one's data.
    throw new NasRepositoryError(
      `${remoteDir} on the NAS holds ${restics.join(', ')} but no restic config: a repository that lost its config, or not restic's; it is not initialised again over it; check it by hand; nothing was written`,
    );
  }
  return { exists, plaintextCopy };
}

interface Snapshot {
  id: string;
  short_id: string;
  time: string;
}

/** The newest snapshot of the library (any host that made it, or only ours: `host`), if any. */
async function latestSnapshot(config: Config, repo: ResticRepo, filter: string[], what: string): Promise<Snapshot | undefined> {
  const out = await runRestic(config, repo, ['snapshots', '--json', '--tag', SNAPSHOT_TAG, ...filter, '--latest', '1'], { label: 'restic snapshots', what });
  const all = JSON.parse(out || '[]') as Snapshot[];
  return all.sort((a, b) => Date.parse(b.time) - Date.parse(a.time))[0];
}

/** Regular files in a snapshot, counted as restic lists them (one line each, never held whole). */
async function snapshotFiles(config: Config, repo: ResticRepo, id: string): Promise<number> {
  let files = 0;
  await streamRestic(config, repo, ['ls', '--json', id], {
    label: 'restic ls',
    what: 'nothing was written',
    onLine: (node) => void (node.struct_type === 'node' && node.type === 'file' && files++),
    progress: () => ({ step: 'counting the files of the NAS copy', files }),
  });
  return files;
}

/**
 * A snapshot of the library in its restic repository on the NAS (made when there is none yet,
 * never again over one), verified by `restic check`, then, with library.delete on, the snapshots
 * beyond library.keepVersionsWeeks weeks forgotten and pruned. The drive's checks again, right
 * before (the library may have gone since): the library holds files and, with deletion on, at
 * least library.minSourceFraction of the newest snapshot's. With deletion off no snapshot is
 * forgotten: as the plain copy did, the NAS only ever gains files. `now`: this host's clock, for
 * the check's share of the data and to tell snapshots dated in the future.
 */
export async function copyLibraryToNas(config: Config, versionSet: string, now = Date.now()): Promise<LibraryOffsiteResult> {
  const lib = config.library;
  const offsite = config.offsite;
  const remoteDir = lib.offsite.remoteDir.replace(/(.)\/+$/, '$1');
  const source = resolve(lib.source);
  const destination = `${sshTarget(offsite)}:${offsite.port}:${remoteDir}`;
  if (!(await hasFiles(source))) {
    throw new SourceEmptyError(`the library ${lib.source} is missing or holds no files: is it mounted? Nothing was copied to the NAS (${destination})`);
  }
  const repo = await libraryRepo(config, { create: true });
  const state = await repositoryState(config, remoteDir);
  if (!state.exists) await runRestic(config, repo, ['init'], { label: 'restic init', what: 'nothing was copied' });
  // A run stopped mid-prune leaves its exclusive lock, which would refuse every later backup: unlock removes stale locks only.
  else await runRestic(config, repo, ['unlock'], { label: 'restic unlock', what: 'nothing was copied' });
  const ours = ['--host', SNAPSHOT_HOST, '--path', source];
  // The snapshot restic takes as this backup's parent: the same host name and library path.
  const parent = await latestSnapshot(config, repo, ours, 'nothing was written');
  const parentFiles = parent ? await snapshotFiles(config, repo, parent.id) : 0;
  if (lib.delete && parent) {
    const sourceFiles = await withHeartbeats(countFiles(source), () => ({ step: 'counting files on the library' }));
    if (sourceFiles < lib.minSourceFraction * parentFiles) {
      throw new MirrorSafetyError(
        `refusing to copy the library to the NAS with deletion: the library holds ${sourceFiles} files, the NAS copy ${parentFiles} ` +
          `(below library.minSourceFraction ${lib.minSourceFraction}); nothing was copied or deleted there; check the library before it erases its backup`,
      );
    }
  }

  let status: Record<string, unknown> = {};
  let summary: Record<string, unknown> | undefined;
  const num = (o: Record<string, unknown> | undefined, k: string) => (typeof o?.[k] === 'number' ? (o[k] as number) : 0);
  const step = 'copying the library to the NAS (restic, encrypted)';
  await streamRestic(
    config,
    repo,
    [
      'backup', '--json', '--host', SNAPSHOT_HOST, '--tag', SNAPSHOT_TAG, '--tag', `set-${versionSet}`,
      ...(parent ? ['--parent', parent.id] : []),
      ...(offsite.bwLimitKiB ? ['--limit-upload', String(offsite.bwLimitKiB)] : []),
      ...resticExcludes(source, lib.excludes),
      '.',
    ],
    {
      label: 'restic backup',
      // From inside the library: the snapshot holds its tree at the root (restore --target puts it back as it was).
      cwd: source,
      what: 'no snapshot was made (what was uploaded and indexed is reused by the next run)',
      prefix: ioPriority(lib),
      onLine: (line) => {
        if (line.message_type === 'status') status = line;
        else if (line.message_type === 'summary') summary = line;
      },
      progress: () => ({
        step,
        percent: Math.floor(num(status, 'percent_done') * 100),
        filesDone: num(status, 'files_done'),
        totalFiles: num(status, 'total_files'),
        read: formatBytes(num(status, 'bytes_done')),
        of: formatBytes(num(status, 'total_bytes')),
      }),
      stall: {
        what: `the library copy to ${destination}`,
        setting: 'offsite.stallSeconds',
        seconds: offsite.stallSeconds,
        advice: 'check the NAS (its disk and its ssh server)',
        position: () => [status.bytes_done, status.files_done, status.total_files, summary !== undefined],
        where: () => `${formatBytes(num(status, 'bytes_done'))} read`,
      },
    },
  );
  if (!summary || typeof summary.snapshot_id !== 'string') throw new NasRepositoryError(`restic backup to ${repo.label} ended without naming its snapshot: nothing is known to be copied; run it again`);
  const snapshot = summary.snapshot_id;

  const k = (Math.floor(now / WEEK_MS) % CHECK_ROTATION_WEEKS) + 1;
  const checked = `structure, data subset ${k}/${CHECK_ROTATION_WEEKS}`;
  await runRestic(config, repo, ['check', `--read-data-subset=${k}/${CHECK_ROTATION_WEEKS}`], {
    label: 'restic check',
    what: `snapshot ${snapshot} was made but is not verified; nothing was forgotten or pruned`,
    progress: () => ({ step: `verifying the NAS copy (restic check: ${checked})` }),
  });

  // As with the drive's version sets: while a snapshot is dated in the future (a clock that ran
  // ahead, or runs behind now), nothing is forgotten; the operator checks the clock first.
  const listed = JSON.parse(await runRestic(config, repo, ['snapshots', '--json', '--tag', SNAPSHOT_TAG, '--host', SNAPSHOT_HOST], { label: 'restic snapshots', what: `snapshot ${snapshot} is made and verified; nothing was forgotten` }) || '[]') as Snapshot[];
  const future = listed.filter((s) => Date.parse(s.time) > now + FUTURE_SLACK_MS).map((s) => s.short_id);
  const pruned = lib.delete && !future.length ? await forgetOld(config, repo, lib.keepVersionsWeeks) : [];
  return {
    destination,
    filesTransferred: num(summary, 'files_new') + num(summary, 'files_changed'),
    bytesTransferred: num(summary, 'data_added'),
    deleted: Math.max(0, parentFiles - num(summary, 'files_changed') - num(summary, 'files_unmodified')),
    prunedVersionSets: pruned,
    ...(future.length ? { futureVersionSets: future } : {}),
    snapshot,
    snapshotFiles: num(summary, 'total_files_processed'),
    checked,
    ...(state.plaintextCopy.length ? { plaintextCopy: state.plaintextCopy } : {}),
  };
}

/**
 * restic forget of our snapshots, then prune when it forgot any. Kept: every snapshot of the last
 * N weeks (as the version sets of N weeks were), and whatever the clock says, the newest of each
 * of the newest N weeks that have a snapshot (keep-weekly counts weeks with a snapshot, not the
 * calendar): a clock that ran ahead never leaves fewer.
 */
async function forgetOld(config: Config, repo: ResticRepo, weeks: number): Promise<string[]> {
  const what = 'the new snapshot is made and verified; old snapshots stay until the next run';
  const out = await runRestic(config, repo, ['forget', '--json', '--tag', SNAPSHOT_TAG, '--host', SNAPSHOT_HOST, '--keep-weekly', String(weeks), '--keep-within', `${weeks * 7}d`], { label: 'restic forget', what });
  const groups = JSON.parse(out || '[]') as { remove?: Snapshot[] | null }[];
  const removed = groups.flatMap((g) => g.remove ?? []);
  if (removed.length) await runRestic(config, repo, ['prune'], { label: 'restic prune', what, progress: () => ({ step: 'pruning forgotten snapshots on the NAS' }) });
  return removed.sort((a, b) => Date.parse(a.time) - Date.parse(b.time)).map((s) => s.short_id);
}

export interface NasCopySnapshot {
  id: string;
  time: string;
  host: string;
  paths: string[];
}

/** The snapshots of the library on the NAS, oldest first (recover's listing). */
export async function nasCopySnapshots(config: Config): Promise<NasCopySnapshot[]> {
  const repo = await libraryRepo(config);
  const out = await runRestic(config, repo, ['snapshots', '--json', '--tag', SNAPSHOT_TAG], { label: 'restic snapshots', what: 'nothing was read' });
  const all = JSON.parse(out || '[]') as (Snapshot & { hostname: string; paths: string[] })[];
  return all.map((s) => ({ id: s.short_id, time: s.time, host: s.hostname, paths: s.paths })).sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
}

/** A path as a restic pattern that matches only itself: a photo named "IMG [1].jpg" is no character class. */
const globLiteral = (path: string) => path.replace(/[*?[\\]/g, '\\$&');

/**
 * The library's newest snapshot on the NAS restored into `targetDir` (missing or empty: nothing
 * there is overwritten), each file read back and compared by restic (--verify). `paths`: only these
 * (relative to the library, a file or a folder). Returns the snapshot and the files restored.
 */
export async function restoreFromNasCopy(config: Config, targetDir: string, paths: readonly string[] = []): Promise<{ snapshot: string; files: number; target: string }> {
  const target = resolve(targetDir);
  const present = await readdir(target).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (present.length) throw new UnsafePathError(`${target} is not empty (${present.length} entries): a restore from the NAS copy goes into a missing or empty folder, never over files; nothing was restored`);
  for (const p of paths) {
    if (p.startsWith('/') || p.split('/').includes('..') || p.includes('\0')) throw new UnsafePathError(`${JSON.stringify(p)} is not a path inside the library (relative, no ..): nothing was restored`);
  }
  const repo = await libraryRepo(config);
  const latest = await latestSnapshot(config, repo, [], 'nothing was read');
  if (!latest) throw new NasRepositoryError(`the library's repository on the NAS (${repo.label}) holds no snapshot of the library: nothing was restored`);
  await mkdir(target, { recursive: true, mode: 0o700 });
  const what = `the restore into ${target} did not finish: what is there may be partial`;
  await runRestic(config, repo, ['restore', '--verify', latest.id, '--target', target, ...paths.map((p) => `--include=/${globLiteral(p.replace(/\/+$/, ''))}`)], {
    label: 'restic restore',
    what,
    progress: () => ({ step: `restoring the library from the NAS copy (snapshot ${latest.short_id})` }),
  });
  return { snapshot: latest.short_id, files: await countFiles(target), target };
}
