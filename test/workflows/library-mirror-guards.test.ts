import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createActivities } from '../../activities/index.js';
import type { MirrorOutcome } from '../../core/types.js';
import { grantRun } from '../../adapters/run-auth/index.js';
import { versionSetName, versionsDirOf } from '../../core/library-layout.js';
import { createLogger } from '../../config/logger.js';
import { nasCopySnapshots } from '../../adapters/library-offsite/library-copy.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// The outside review of issue 15 (findings 2 to 8): the versioned mirror's activities called as a
// workflow would call them (Temporal's MockActivityEnvironment), with real rsync into a real tmpfs
// standing in for the WD drive, and a real sshd on loopback standing in for the NAS.

const stack = useStack({ temporal: false, sshd: true });

const logger = createLogger({ level: 'fatal', fd: 2 });
const day = 86_400_000;
let runs = 0;

async function setup(files: number, library: Record<string, unknown> = {}) {
  const root = await tempDir('guards');
  const source = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  await makeLibrary(source, files);
  stack.mounted(await mountTmpfs(mountPoint));
  const destination = join(mountPoint, 'immich');
  const backupDir = join(root, 'dumps');
  await mkdir(backupDir, { recursive: true });
  const remoteDir = join(await tempDir('guards-nas'), 'volume1', 'library');
  const configOf = (lib: Record<string, unknown> = {}) =>
    testConfig({ backupDir, extra: { offsite: { ...stack.sshd.offsite }, library: { source, destination, mountPoint, offsite: { enabled: true, remoteDir }, ...library, ...lib } } });
  const config = configOf();
  // Each call a run of its own, granted as authorizeRun grants a run started with the CLI's token.
  const run = async <T>(fn: (a: ReturnType<typeof createActivities>) => Promise<T>, lib: Record<string, unknown> = {}): Promise<T> => {
    const c = configOf(lib);
    const execution = { workflowId: 'weekly-library-mirror-test', runId: `run-${++runs}` };
    await grantRun(c.security.keyFile, { workflowType: 'WeeklyLibraryMirror', ...execution });
    const env = new MockActivityEnvironment({ workflowExecution: execution }, { logger: new DefaultLogger('ERROR', () => undefined) });
    const activities = createActivities({ config: c, logger });
    return env.run(() => fn(activities));
  };
  const paths = async () => Object.keys(await treeDigest(source)).sort();
  return { root, source, destination, mountPoint, remoteDir, config, versions: versionsDirOf(config.library), run, paths };
}

/** Rewrites a library file's content, a minute (or more) ahead as a later write would be: rsync's quick check sees it. */
async function rewrite(path: string, tag: string): Promise<void> {
  await writeFile(path, Buffer.concat([await readFile(path), Buffer.from(tag)]));
  const later = new Date(Date.now() + 60_000 * tag.length);
  await utimes(path, later, later);
}

const setNamed = (msAgo: number) => versionSetName(new Date(Date.now() - msAgo));
const sets = async (dir: string) => (await readdir(dir)).filter((n) => /^\d{8}T\d{6}Z$/.test(n)).sort();
const errorOf = (p: Promise<unknown>) => p.then(() => assert.fail('expected a failure'), (err: Error) => err);

describe('the versioned mirror holds against its own callers, the drive and the NAS', () => {
  test('pruning goes by the worker\'s clock: a caller\'s nowMs far in the future prunes nothing, and the newest keepVersionsWeeks sets stay whatever their age', async () => {
    const { source, versions, run, paths } = await setup(40, { keepVersionsWeeks: 2, writeOnce: { maxFiles: 100, maxShare: 1 } });
    const [older, newer] = [setNamed(30 * day), setNamed(20 * day)];
    await run((a) => a.mirrorLibrary({ versionSet: setNamed(40 * day) }));
    for (const [i, set] of [older, newer].entries()) {
      await rewrite(join(source, (await paths())[i]!), 'x');
      await run((a) => a.mirrorLibrary({ versionSet: set }));
    }
    assert.deepEqual((await sets(versions)).slice(-2), [older, newer]);
    const result = await run((a) => a.pruneLibraryVersions({ nowMs: 1e15, keep: 'nothing' }));
    assert.ok(!result.pruned.includes(older) && !result.pruned.includes(newer), 'both sets are older than 2 weeks but the newest two: kept');
    assert.deepEqual((await sets(versions)).slice(-2), [older, newer]);
  });

  test('a version set named in the future stops pruning on the drive, and the report names it', async () => {
    const { versions, run } = await setup(20, { keepVersionsWeeks: 1 });
    await run((a) => a.mirrorLibrary({ versionSet: setNamed(0) }));
    const old = [setNamed(60 * day), setNamed(50 * day), setNamed(40 * day)];
    const future = versionSetName(new Date(Date.now() + 400 * day));
    for (const name of [...old, future]) await mkdir(join(versions, name, 'user0'), { recursive: true });
    const result = await run((a) => a.pruneLibraryVersions({ keep: 'nothing' }));
    assert.deepEqual([result.pruned, result.future], [[], [future]]);
    assert.deepEqual(await sets(versions), [...old, future].sort());
  });

  test('mirrorLibrary without input versions and guards like a scheduled run: a rewrite above the limit is refused and the mirror keeps the original', async () => {
    const { source, destination, versions, run, paths } = await setup(60, { writeOnce: { maxFiles: 0, maxShare: 0 } });
    const first = (await run((a) => a.mirrorLibrary())) as MirrorOutcome & { ready: true };
    assert.equal(first.versioning?.rewrites.count, 0);
    const victim = (await paths())[0]!;
    const original = await readFile(join(destination, victim));
    await rewrite(join(source, victim), 'yy');
    const err = await errorOf(run((a) => a.mirrorLibrary()));
    assert.equal(err.name, 'WriteOnceError');
    assert.deepEqual(await readFile(join(destination, victim)), original);
    assert.equal((await sets(versions)).length >= 1, true, 'the run had a version set of its own');
  });

  test('a version set name that is not a run\'s start, or lies in the future, is refused before anything is written', async () => {
    const { root, destination, run } = await setup(10);
    for (const bad of ['../../escape', '20261301T000000Z', versionSetName(new Date(Date.now() + 30 * day))]) {
      const err = await errorOf(run((a) => a.mirrorLibrary({ versionSet: bad })));
      assert.equal(err.name, 'MirrorSafetyError', bad);
      assert.match(err.message, /^version set ".*" is (not a run's start time|named in the future).*: nothing was copied$/);
      const nasErr = await errorOf(run((a) => a.mirrorLibraryOffsite({ versionSet: bad })));
      assert.equal(nasErr.name, 'MirrorSafetyError', bad);
    }
    assert.equal(existsSync(destination), false, 'nothing copied');
    assert.equal(existsSync(join(root, 'escape')), false);
  });

  test('an original rewritten twice, its first rewrite left unchecked by a stopped run: the refused run puts back the original, not the first rewrite, and counts the path once', async () => {
    const { source, destination, versions, run, paths } = await setup(100);
    const lax = { writeOnce: { maxFiles: 1000, maxShare: 1 } };
    const strict = { writeOnce: { maxFiles: 2, maxShare: 1 } };
    await run((a) => a.mirrorLibrary({ versionSet: setNamed(14 * day) }), lax);
    const all = await paths();
    const x = all[0]!;
    const x0 = await readFile(join(source, x));
    // Run A rewrites X (X0 -> X1) and stops after its rsync, before its check: its marker stays.
    const setA = setNamed(7 * day);
    await rewrite(join(source, x), '1');
    await run((a) => a.mirrorLibrary({ versionSet: setA }), lax);
    await writeFile(join(versions, `.unchecked-${setA}`), '');
    // Run B: X rewritten again (X1 -> X2), and two others: above the limit of 2, refused.
    await rewrite(join(source, x), '22');
    for (const f of all.slice(1, 3)) await rewrite(join(source, f), '22');
    const err = await errorOf(run((a) => a.mirrorLibrary({ versionSet: setNamed(0) }), strict));
    assert.equal(err.name, 'WriteOnceError');
    assert.deepEqual(await readFile(join(destination, x)), x0, 'the mirror holds the original again');
    assert.match(err.message, /^3 original\(s\) already on the mirror changed content/);
    for (const f of all.slice(1, 3)) assert.notDeepEqual(await readFile(join(destination, f)), await readFile(join(source, f)));
  });

  test('a marker planted as a symlink beside the version sets refuses the run: nothing is created off the drive', async () => {
    const { versions, destination, run } = await setup(20);
    await run((a) => a.mirrorLibrary({ versionSet: setNamed(7 * day) }));
    const before = await treeDigest(destination);
    const target = join(await tempDir('host'), 'nologin');
    const set = setNamed(0);
    await symlink(target, join(versions, `.unchecked-${set}`));
    const err = await errorOf(run((a) => a.mirrorLibrary({ versionSet: set })));
    assert.equal(err.name, 'MirrorSafetyError');
    assert.match(err.message, /\.unchecked-\d{8}T\d{6}Z is not a regular file .*: nothing was copied or deleted; remove it/);
    assert.equal(existsSync(target), false);
    assert.deepEqual(await treeDigest(destination), before);
    assert.ok((await lstat(join(versions, `.unchecked-${set}`))).isSymbolicLink(), 'left for the operator to see');
  });

  test('the NAS copy repeats the emptied-library checks: an empty library copies nothing, a library far below the NAS copy deletes nothing there', async () => {
    const { source, config, run, paths } = await setup(50, { delete: true });
    const first = await run((a) => a.mirrorLibraryOffsite({ versionSet: setNamed(7 * day) }));
    assert.equal(first.snapshotFiles, 50);
    const onNas = await nasCopySnapshots(config);
    // Most of the library gone (a mount that half failed): below minSourceFraction of the NAS copy.
    for (const f of (await paths()).slice(0, 30)) await rm(join(source, f));
    const err = await errorOf(run((a) => a.mirrorLibraryOffsite({ versionSet: setNamed(0) })));
    assert.equal(err.name, 'MirrorSafetyError');
    assert.match(err.message, /^refusing to copy the library to the NAS with deletion: the library holds 20 files, the NAS copy 50 \(below library\.minSourceFraction 0\.9\); nothing was copied or deleted there/);
    assert.deepEqual(await nasCopySnapshots(config), onNas);
    await rm(source, { recursive: true });
    await mkdir(source);
    const empty = await errorOf(run((a) => a.mirrorLibraryOffsite({ versionSet: setNamed(0) })));
    assert.equal(empty.name, 'SourceEmptyError');
    assert.deepEqual(await nasCopySnapshots(config), onNas);
  });

  test('NAS snapshots are forgotten by the worker\'s clock: a caller\'s nowMs in the far future forgets nothing', async () => {
    const { source, config, run, paths } = await setup(20, { keepVersionsWeeks: 1, delete: true });
    await run((a) => a.mirrorLibraryOffsite({ versionSet: setNamed(21 * day) }));
    await rewrite(join(source, (await paths())[0]!), 'x');
    await run((a) => a.mirrorLibraryOffsite({ versionSet: setNamed(14 * day) }));
    const result = await run((a) => a.mirrorLibraryOffsite({ versionSet: setNamed(0), nowMs: 1e15 }));
    assert.deepEqual(result.prunedVersionSets, []);
    assert.equal((await nasCopySnapshots(config)).length, 3, 'all made this week: kept');
  });

  test('with delete on, originals renamed away (x.jpg -> x.jpg.locked) above library.writeOnce are refused and put back; the approved run moves them into its version set', async () => {
    const { source, destination, versions, run, paths } = await setup(100, { delete: true, writeOnce: { maxFiles: 2, maxShare: 1 } });
    await run((a) => a.mirrorLibrary({ versionSet: setNamed(7 * day) }));
    const before = await treeDigest(destination);
    const victims = (await paths()).slice(0, 5);
    for (const p of victims) await rename(join(source, p), join(source, `${p}.locked`));
    const err = await errorOf(run((a) => a.mirrorLibrary({ versionSet: setNamed(60_000) })));
    assert.equal(err.name, 'WriteOnceError');
    assert.doesNotMatch(err.message, /\n/);
    assert.match(err.message, /^5 original\(s\) on the mirror were deleted from the library \(first: .*\), above library\.writeOnce \(2 files, 1 of 100\): none was overwritten or deleted \(new files were copied\); .* run: immich-backup backup library --accept-rewrites 5:[0-9a-f]{32}$/);
    const after = await treeDigest(destination);
    for (const p of victims) assert.equal(after[p], before[p], `${p} put back`);
    for (const p of victims) assert.ok(after[`${p}.locked`], `${p}.locked copied`);
    const [, count, digest] = /--accept-rewrites (\d+):([0-9a-f]{32})$/.exec(err.message)!;
    const set = setNamed(0);
    const approved = (await run((a) => a.mirrorLibrary({ versionSet: set, acceptRewrites: { count: Number(count), digest: digest! } }))) as MirrorOutcome & { ready: true };
    assert.equal(approved.versioning?.accepted, true);
    assert.deepEqual(approved.versioning?.deletions?.count, 5);
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));
    const kept = await treeDigest(join(versions, set));
    for (const p of victims) assert.equal(kept[p], before[p]);
  });

  test('Immich\'s derived files (thumbnails, transcodes, its database backups, XMP sidecars) rewritten or deleted are mirrored and versioned, never counted by the guard', async () => {
    const { source, destination, versions, run } = await setup(20, { delete: true, writeOnce: { maxFiles: 0, maxShare: 0 } });
    const derived = ['thumbs/u1/ab/x-preview.jpeg', 'encoded-video/u1/x.mp4', 'backups/immich-db-backup-1.sql.gz', 'user0/2020/01/IMG_000000.jpg.xmp'];
    for (const p of derived) {
      await mkdir(join(source, p, '..'), { recursive: true });
      await writeFile(join(source, p), `first ${p}`);
    }
    await run((a) => a.mirrorLibrary({ versionSet: setNamed(7 * day) }));
    for (const p of derived.slice(0, 3)) await rewrite(join(source, p), 'regenerated');
    await rm(join(source, derived[3]!));
    const set = setNamed(0);
    const result = (await run((a) => a.mirrorLibrary({ versionSet: set }))) as MirrorOutcome & { ready: true };
    assert.equal(result.versioning?.rewrites.count, 0);
    assert.equal(result.versioning?.deletions, undefined);
    assert.equal(result.versioning?.versioned, 4);
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));
    assert.deepEqual(Object.keys(await treeDigest(join(versions, set))).sort(), [...derived].sort());
  });
});
