import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { collectStatus } from '../../status/status.js';
import { PAIRINGS_FILE, readPairings } from '../../adapters/mirror/library-versions.js';
import { versionSetName, versionsDirOf } from '../../core/library-layout.js';
import type { WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { cli } from '../helpers/cli.js';
import { rawTestConfig, tempDir, testConfig, writeConfigFile } from '../helpers/setup.js';
import { applicationFailure } from '../helpers/restore-stack.js';
import { useStack } from '../helpers/stack.js';
import { plantDump } from '../helpers/trust.js';

// The versioned WeeklyLibraryMirror (issue 15, items 1, 2 and 6): real rsync into a real tmpfs
// standing in for the WD drive, a real Temporal dev server, a real HTTP receiver for the alarms.

const stack = useStack({ receiver: true });

async function setup(files: number, library: Record<string, unknown> = {}) {
  const root = await tempDir('versions');
  const source = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  await makeLibrary(source, files);
  stack.mounted(await mountTmpfs(mountPoint));
  const destination = join(mountPoint, 'immich');
  const hook = `/hook-${Math.random().toString(36).slice(2)}`;
  const backupDir = join(root, 'dumps');
  await mkdir(backupDir, { recursive: true });
  const config = testConfig({ backupDir, extra: { library: { source, destination, mountPoint, mountWaitMinutes: 0.05, mountPollSeconds: 1, ...library }, notifications: { webhooks: [`${stack.receiver.url}${hook}`] } } });
  const versions = versionsDirOf(config.library);
  const run = (input: Record<string, unknown> = {}) => runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror', undefined, input);
  const events = () => stack.receiver.delivered(hook).map((r) => JSON.parse(r.body) as { event: string; message: string });
  const paths = async () => Object.keys(await treeDigest(source)).sort();
  return { root, source, destination, mountPoint, versions, config, backupDir, run, events, paths };
}

/** Rewrites a library file's content: at the same size (only the bytes tell), or longer. */
async function rewrite(path: string, sameSize: boolean): Promise<void> {
  const old = await readFile(path);
  const body = sameSize ? Buffer.from(old.map((b) => b ^ 0xff)) : Buffer.concat([old, Buffer.from('encrypted')]);
  await writeFile(path, body);
  // A minute ahead, as a later write would: rsync's quick check sees it.
  const later = new Date(Date.now() + 60_000);
  await utimes(path, later, later);
}

describe('WeeklyLibraryMirror keeps versions and guards write-once originals', () => {
  test('content rewritten in the library: the old version is kept in the run\'s version set on the drive, the report names it and an alarm goes out', async () => {
    const { source, destination, versions, run, events, paths } = await setup(300);
    assert.equal((await run()).error, undefined);
    const [a, b, c] = (await paths()).slice(10, 13) as [string, string, string];
    const before = await treeDigest(destination);
    await rewrite(join(source, a), true);
    await rewrite(join(source, b), false);
    // A touch (new mtime, same bytes) is not a rewrite.
    const later = new Date(Date.now() + 60_000);
    await utimes(join(source, c), later, later);

    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    const v = report!.versioning!;
    assert.match(v.versionSet, /^\d{8}T\d{6}Z$/);
    assert.equal(v.rewrites.count, 2);
    assert.deepEqual(v.rewrites.first, [a, b].sort());
    assert.equal(v.touched, 1);
    assert.equal(v.versioned, 3);
    // The previous content of each overwritten file, at its path inside the version set.
    const kept = await treeDigest(join(versions, v.versionSet));
    assert.deepEqual(kept, { [a]: before[a], [b]: before[b], [c]: before[c] });
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));
    const alarms = events().filter((e) => e.event === 'alarm');
    assert.equal(alarms.length, 1);
    // The folders written into got their times back: the next run finds nothing to do.
    const next = await run();
    assert.equal(next.error, undefined, String(next.error));
    assert.equal(next.report!.versioning!.differences, 0);
    assert.equal(next.report!.versioning!.versioned, 0);
    assert.match(alarms[0]!.message, new RegExp(`2 original\\(s\\) already on the mirror changed content in the library \\(${[a, b].sort().join(', ')}\\); their previous versions are in version set ${v.versionSet}`));
  });

  test('a run stopped between its copy and its check (its marker left beside the set) has that set checked by the next run, which alarms on the rewrite', async () => {
    const { source, destination, versions, run, events, paths } = await setup(100, { writeOnce: { maxFiles: 10, maxShare: 0.5 } });
    assert.equal((await run()).error, undefined);
    // What a run leaves when it dies right after rsync: the old version in its set, the new one on the mirror, the marker.
    const path = (await paths())[7]!;
    const stopped = '20261101T050000Z';
    await mkdir(join(versions, stopped, path, '..'), { recursive: true });
    await writeFile(join(versions, stopped, path), await readFile(join(destination, path)));
    await rewrite(join(source, path), false);
    await writeFile(join(destination, path), await readFile(join(source, path)));
    await writeFile(join(versions, `.unchecked-${stopped}`), '');

    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.versioning!.rewrites.count, 1);
    assert.deepEqual(report!.versioning!.rewrites.first, [path]);
    assert.ok(events().some((e) => e.event === 'alarm' && e.message.includes(path)));
    assert.ok(!(await readdir(versions)).includes(`.unchecked-${stopped}`), 'checked once');
    assert.equal((await run()).report!.versioning!.rewrites.count, 0);
  });

  test('a no-change rerun copies nothing, versions nothing and reports no rewrite', async () => {
    const { run } = await setup(100);
    assert.equal((await run()).error, undefined);
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.filesTransferred, 0);
    assert.equal(report!.versioning!.versioned, 0);
    assert.equal(report!.versioning!.differences, 0);
    assert.equal(report!.versioning!.rewrites.count, 0);
  });

  test('a mass rewrite is refused with a one-line reason naming the approval and no original is overwritten (new files are copied); the approved run overwrites exactly those, keeping the old versions', async () => {
    const { source, destination, versions, run, events, paths } = await setup(200, { writeOnce: { maxFiles: 100, maxShare: 0.01 } });
    assert.equal((await run()).error, undefined);
    const before = await treeDigest(destination);
    const victims = (await paths()).slice(0, 5);
    for (const p of victims) await rewrite(join(source, p), true);
    await writeFile(join(source, 'new-after.jpg'), 'a new photo');

    const refused = applicationFailure((await run()).error);
    assert.equal(refused.type, 'WriteOnceError');
    assert.doesNotMatch(refused.message, /\n/);
    assert.match(refused.message, /^5 original\(s\) already on the mirror changed content in the library \(first: .*\), above library\.writeOnce \(100 files, 0\.01 of 201\): none was overwritten \(new files were copied\); .* run: immich-backup backup library --accept-rewrites 5:[0-9a-f]{32}$/);
    const withNew = { ...before, 'new-after.jpg': (await treeDigest(source))['new-after.jpg']! };
    assert.deepEqual(await treeDigest(destination), withNew, 'no original overwritten; the new file copied');
    assert.ok(events().some((e) => e.event === 'failure' && /WriteOnceError|changed content/.test(e.message)), 'the refusal is announced as a failure');
    const [, count, digest] = /--accept-rewrites (\d+):([0-9a-f]{32})$/.exec(refused.message)!;

    // An approval for another set (one more file rewritten since) approves nothing.
    const sixth = (await paths()).find((p) => p.startsWith('user') && !victims.includes(p))!;
    await rewrite(join(source, sixth), false);
    const other = applicationFailure((await run({ acceptRewrites: { count: Number(count), digest } })).error);
    assert.equal(other.type, 'WriteOnceError');
    assert.match(other.message, /^6 original\(s\).*the approval given \(5:[0-9a-f]{32}\) is for another set of files; none was overwritten/);
    assert.deepEqual(await treeDigest(destination), withNew);

    const [, count6, digest6] = /--accept-rewrites (\d+):([0-9a-f]{32})$/.exec(other.message)!;
    const { report, error } = await run({ acceptRewrites: { count: Number(count6), digest: digest6 } });
    assert.equal(error, undefined, String(error));
    const v = report!.versioning!;
    assert.equal(v.accepted, true);
    assert.equal(v.rewrites.count, 6);
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));
    const kept = await treeDigest(join(versions, v.versionSet));
    assert.deepEqual(Object.keys(kept).sort(), [...victims, sixth].sort());
    for (const p of [...victims, sixth]) assert.equal(kept[p], before[p]);
  });

  test('the CLI refuses a malformed approval in one line, before it connects or starts anything', async () => {
    const dir = await tempDir('accept-cli');
    const configFile = await writeConfigFile(dir, rawTestConfig({ backupDir: join(dir, 'dumps'), address: '127.0.0.1:1' }));
    for (const bad of ['12', '12:abc', `-1:${'0'.repeat(32)}`]) {
      const r = await cli(['-c', configFile, 'backup', 'library', '--accept-rewrites', bad]);
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /^error: option '--accept-rewrites <count:digest>' argument '.*' is invalid\. --accept-rewrites .*: expected COUNT:DIGEST as the refused run printed it .*nothing was started\n\(--help shows the usage\)\n$/);
    }
  });

  test('an approval without the CLI\'s start token is refused before anything is read or written', async () => {
    const { source, destination, run, paths } = await setup(50);
    assert.equal((await run()).error, undefined);
    const before = await treeDigest(destination);
    await rewrite(join(source, (await paths())[0]!), true);
    const failure = applicationFailure((await run({ acceptRewrites: { count: 1, digest: '0'.repeat(32) }, authorization: undefined })).error);
    assert.equal(failure.type, 'UnauthorizedError');
    assert.deepEqual(await treeDigest(destination), before);
  });

  test('with delete: true a file and a folder deleted from the library are recoverable from the run\'s version set', async () => {
    // Deletions count against library.writeOnce: let these few pass (on 120 files the default 1% would refuse them).
    const { source, destination, versions, run, paths } = await setup(120, { delete: true, writeOnce: { maxFiles: 100, maxShare: 1 } });
    assert.equal((await run()).error, undefined);
    const before = await treeDigest(destination);
    const gone = (await paths())[0]!;
    await rm(join(source, gone));
    const folder = 'user3/2024/12';
    const inFolder = Object.keys(before).filter((p) => p.startsWith(`${folder}/`));
    assert.ok(inFolder.length > 0);
    await rm(join(source, folder), { recursive: true });

    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    const v = report!.versioning!;
    assert.equal(report!.deleted, 1 + inFolder.length + 1); // the files and the folder itself
    assert.equal(v.versioned, 1 + inFolder.length);
    assert.equal(v.rewrites.count, 0);
    assert.deepEqual(await treeDigest(destination), await treeDigest(source));
    const kept = await treeDigest(join(versions, v.versionSet));
    assert.deepEqual(Object.keys(kept).sort(), [gone, ...inFolder].sort());
    for (const p of Object.keys(kept)) assert.equal(kept[p], before[p]);
    assert.equal((await run()).report!.versioning!.differences, 0, 'the folders deleted from got their times back');
  });

  test('pruning after a successful run removes version sets older than keepVersionsWeeks, oldest first, and nothing else; a refused run prunes nothing', async () => {
    const { source, versions, run, paths } = await setup(60, { keepVersionsWeeks: 2, writeOnce: { maxFiles: 0, maxShare: 0 } });
    assert.equal((await run()).error, undefined);
    const day = 86_400_000;
    const now = Date.now();
    const old1 = versionSetName(new Date(now - 30 * day));
    const old2 = versionSetName(new Date(now - 20 * day));
    const recent = versionSetName(new Date(now - 5 * day));
    for (const name of [old1, old2, recent, 'notes', '2020-01-01']) {
      await mkdir(join(versions, name, 'user0'), { recursive: true });
      await writeFile(join(versions, name, 'user0', 'IMG.jpg'), name);
    }
    // A symlink named like an old version set, leading to a host directory: never followed.
    const host = await tempDir('host');
    await writeFile(join(host, 'keep.txt'), 'host file');
    const planted = versionSetName(new Date(now - 40 * day));
    await symlink(host, join(versions, planted));

    // With writeOnce at 0, one rewrite refuses the run: nothing is pruned.
    const victim = join(source, (await paths())[0]!);
    await rewrite(victim, false);
    assert.equal(applicationFailure((await run()).error).type, 'WriteOnceError');
    assert.ok((await readdir(versions)).includes(old1));

    // The rewritten file leaves the library: with deletion off the mirror keeps its copy, nothing is rewritten.
    await rm(victim);
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.deepEqual(report!.prunedVersionSets, [old1, old2]);
    const left = await readdir(versions);
    assert.ok(!left.includes(old1) && !left.includes(old2));
    for (const name of [recent, 'notes', '2020-01-01', planted, PAIRINGS_FILE]) assert.ok(left.includes(name), `${name} kept`);
    assert.equal(await readFile(join(host, 'keep.txt'), 'utf8'), 'host file');
  });

  test('a version set dir that leads off the drive (a symlink planted there) is refused: nothing copied or deleted', async () => {
    const { source, destination, mountPoint, config, run, paths } = await setup(40);
    assert.equal((await run()).error, undefined);
    const before = await treeDigest(destination);
    const host = await tempDir('host-versions');
    await rm(versionsDirOf(config.library), { recursive: true });
    await symlink(host, versionsDirOf(config.library));
    await rewrite(join(source, (await paths())[0]!), false);
    const failure = applicationFailure((await run()).error);
    assert.equal(failure.type, 'MirrorSafetyError');
    assert.match(failure.message, /^the version set \S+ leads to \S+, off the drive mounted at/);
    assert.deepEqual(await treeDigest(destination), before);
    assert.deepEqual(await readdir(host), []);
    assert.ok((await stat(mountPoint)).isDirectory());
  });

  test('each mirror run records the newest valid dump at its start; the report and status show the pair', async () => {
    const { versions, backupDir, config, run } = await setup(30);
    await plantDump(config, backupDir, 'immich_20261120_030000.sql.gz', 'older dump');
    await plantDump(config, backupDir, 'immich_20261121_030000.sql.gz', 'newest dump');
    // Named like a newer dump, but not ours (no tag): never the pair.
    await writeFile(join(backupDir, 'immich_20261122_030000.sql.gz'), 'planted');
    await writeFile(join(backupDir, 'immich_20261122_030000.sql.gz.sha256'), `${'0'.repeat(64)}  immich_20261122_030000.sql.gz\n`);
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.versioning!.pairedDump, 'immich_20261121_030000.sql.gz');
    const pairings = await readPairings(versions);
    assert.equal(pairings.at(-1)!.dump, 'immich_20261121_030000.sql.gz');
    assert.equal(pairings.at(-1)!.versionSet, report!.versioning!.versionSet);
    const status = await collectStatus(config, stack.client, Date.now());
    const row = status.rows.find((r) => r.id === 'library-mirror')!;
    assert.match(row.summary, /library mirror of \d{4}-\d{2}-\d{2} \d{2}:\d{2}Z pairs with immich_20261121_030000\.sql\.gz/);
  });
});
