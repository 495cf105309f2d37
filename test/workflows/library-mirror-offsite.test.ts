import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { execa } from 'execa';
import { copyLibraryToNas, nasCopySnapshots, restoreFromNasCopy } from '../../adapters/library-offsite/library-copy.js';
import { libraryRepo, SNAPSHOT_HOST, SNAPSHOT_TAG } from '../../adapters/library-offsite/restic.js';
import type { Config } from '../../config/config.js';
import { versionSetName } from '../../core/library-layout.js';
import type { WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { makeLibrary, mountTmpfs } from '../helpers/library.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// library.offsite: after the drive, the library goes into an encrypted restic repository on a real
// sshd on loopback standing in for the NAS, over sftp on the same batch-mode ssh as OffsiteSync.

const stack = useStack({ sshd: true });
const day = 86_400_000;

/** relative path → SHA-1 (Immich's checksum) of every file under root. */
async function sha1Tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    out[relative(root, path)] = createHash('sha1').update(await readFile(path)).digest('hex');
  }
  return out;
}

/** Every file under dir whose bytes or name contain one of `needles`. */
async function filesHolding(dir: string, needles: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    const bytes = await readFile(path);
    if (needles.some((n) => bytes.includes(n) || path.includes(n))) found.push(path);
  }
  return found;
}

async function setup(files: number, library: Record<string, unknown> = {}) {
  const root = await tempDir('lib-offsite');
  const source = join(root, 'library');
  await makeLibrary(source, files);
  const nas = await tempDir('lib-nas');
  const remoteDir = join(nas, 'volume1', 'backups', 'immich', 'library');
  const configOf = (extra: { keyFile?: string; remoteDir?: string; library?: Record<string, unknown> } = {}): Config => {
    const config = testConfig({
      backupDir: join(root, 'dumps'),
      extra: { offsite: { ...stack.sshd.offsite }, library: { source, destination: join(root, 'wd', 'immich'), mountPoint: join(root, 'wd'), keepVersionsWeeks: 2, offsite: { enabled: true, remoteDir: extra.remoteDir ?? remoteDir }, ...library, ...extra.library } },
    });
    return extra.keyFile ? { ...config, security: { ...config.security, keyFile: extra.keyFile } } : config;
  };
  return { root, source, nas, remoteDir, config: configOf(), configOf };
}

/** restic on the test's repository, as an operator would run it by hand (password in the environment). */
async function resticByHand(config: Config, args: string[], cwd?: string) {
  const repo = await libraryRepo(config);
  return execa('restic', [...repo.globals, ...args], { env: repo.env, ...(cwd ? { cwd } : {}) });
}

describe('WeeklyLibraryMirror with library.offsite (an encrypted restic repository on the NAS)', () => {
  test('the library goes to the NAS encrypted: no file there holds a library file\'s bytes or name; a later run stores only the change; files restored from the NAS copy equal the originals', async () => {
    const { root, source, nas, remoteDir } = await setup(80);
    const mountPoint = join(root, 'wd-backup');
    stack.mounted(await mountTmpfs(mountPoint));
    const secret = `family-secret-${Math.random().toString(36).slice(2)}@example.org`;
    await mkdir(join(source, 'user0', 'notes'), { recursive: true });
    await writeFile(join(source, 'user0', 'notes', 'contacts.txt'), `${secret}\n`.repeat(50));
    // Photos do not compress: without these the generated library (one byte repeated) would shrink to nothing.
    await mkdir(join(source, 'user2', 'raw'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(source, 'user2', 'raw', `RAW_${i}.dng`), randomBytes(50_000));
    const config = testConfig({
      backupDir: join(root, 'dumps'),
      extra: {
        offsite: { ...stack.sshd.offsite },
        library: { source, destination: join(mountPoint, 'immich'), mountPoint, delete: true, keepVersionsWeeks: 2, writeOnce: { maxFiles: 5, maxShare: 0.5 }, offsite: { enabled: true, remoteDir } },
      },
    });
    const run = () => runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror');

    const first = await run();
    assert.equal(first.error, undefined, String(first.error));
    const one = first.report!.offsite!;
    assert.equal(one.filesTransferred, 101);
    assert.equal(one.snapshotFiles, 101);
    assert.equal(one.deleted, 0);
    assert.match(one.checked!, /^structure, data subset \d+\/12$/);
    assert.match(one.destination, new RegExp(`^${stack.sshd.user}@127\\.0\\.0\\.1:${stack.sshd.port}:${remoteDir}$`));
    assert.deepEqual((await readdir(remoteDir)).sort(), ['config', 'data', 'index', 'keys', 'locks', 'snapshots']);
    assert.deepEqual(await filesHolding(nas, [secret, 'contacts', 'IMG_000001', 'user0']), []);

    const before = await sha1Tree(source);
    const paths = Object.keys(before).filter((p) => p.endsWith('.jpg')).sort();
    const [changed, gone] = [paths[3]!, paths[4]!];
    await writeFile(join(source, changed), 'rewritten by something');
    const later = new Date(Date.now() + 60_000);
    await utimes(join(source, changed), later, later);
    await rm(join(source, gone));
    await writeFile(join(source, 'user1', 'new.jpg'), 'a new photo');

    const second = await run();
    assert.equal(second.error, undefined, String(second.error));
    const two = second.report!.offsite!;
    assert.equal(two.filesTransferred, 2, 'the rewritten file and the new one');
    assert.equal(two.deleted, 1);
    assert.equal(two.snapshotFiles, 101);
    assert.ok(two.bytesTransferred < one.bytesTransferred / 10, `only the change is stored: ${two.bytesTransferred} bytes after ${one.bytesTransferred}`);
    assert.deepEqual(await filesHolding(nas, [secret, 'contacts', 'new.jpg']), []);
    const snapshots = await nasCopySnapshots(config);
    assert.deepEqual(snapshots.slice(-2).map((s) => s.id), [one.snapshot, two.snapshot]);

    const restored = join(await tempDir('from-nas'), 'library');
    const back = await restoreFromNasCopy(config, restored);
    assert.equal(back.snapshot, two.snapshot);
    assert.deepEqual(await sha1Tree(restored), await sha1Tree(source));
    const part = join(await tempDir('from-nas-part'), 'x');
    await restoreFromNasCopy(config, part, ['user0/notes', paths[5]!]);
    assert.deepEqual(await sha1Tree(part), { 'user0/notes/contacts.txt': before['user0/notes/contacts.txt'], [paths[5]!]: before[paths[5]!] });
  });
});

describe('the library\'s NAS copy (adapters/library-offsite/library-copy.ts)', () => {
  test('with library.delete on, snapshots beyond keepVersionsWeeks are forgotten; while one is dated in the future (a clock that ran ahead) none is', async () => {
    const { source, config } = await setup(20, { delete: true });
    const stamp = (ms: number) => new Date(Date.now() + ms).toISOString().slice(0, 19).replace('T', ' ');
    await copyLibraryToNas(config, versionSetName(new Date()));
    const byHand = (ms: number) => resticByHand(config, ['backup', '--json', '--host', SNAPSHOT_HOST, '--tag', SNAPSHOT_TAG, '--time', stamp(ms), '.'], source);
    await byHand(-40 * day);
    await byHand(-30 * day);
    const kept = await nasCopySnapshots(config);
    assert.equal(kept.length, 3);
    // Kept: all within two weeks of the newest, and the newest of the two newest weeks that have one (30 days ago's).
    const result = await copyLibraryToNas(config, versionSetName(new Date()));
    assert.deepEqual(result.prunedVersionSets, [kept[0]!.id]);
    assert.deepEqual((await nasCopySnapshots(config)).map((s) => s.id), [kept[1]!.id, kept[2]!.id, result.snapshot]);
    const future = await byHand(365 * day);
    const after = await copyLibraryToNas(config, versionSetName(new Date()));
    const futureId = (JSON.parse(future.stdout.split('\n').filter((l) => l.includes('"summary"'))[0]!) as { snapshot_id: string }).snapshot_id;
    assert.deepEqual(after.futureVersionSets, [futureId]);
    assert.deepEqual(after.prunedVersionSets, [], 'nothing forgotten while a snapshot is dated in the future');
    assert.deepEqual((await nasCopySnapshots(config)).map((s) => s.id), [kept[1]!.id, kept[2]!.id, result.snapshot, after.snapshot, futureId]);
  });

  test('its heartbeats say how far the upload is (files, bytes, percent), then that it verifies; offsite.bwLimitKiB holds the upload back', async () => {
    const { source, configOf } = await setup(5);
    await mkdir(join(source, 'raw'), { recursive: true });
    for (let i = 0; i < 8; i++) await writeFile(join(source, 'raw', `RAW_${i}.dng`), randomBytes(256 * 1024));
    const base = configOf();
    const config = { ...base, offsite: { ...base.offsite, bwLimitKiB: 512 } };
    const beats: Record<string, unknown>[] = [];
    const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR', () => undefined) });
    env.on('heartbeat', (d: Record<string, unknown>) => beats.push(d));
    const started = Date.now();
    const result = (await env.run(() => copyLibraryToNas(config, versionSetName(new Date())))) as Awaited<ReturnType<typeof copyLibraryToNas>>;
    assert.ok(Date.now() - started > 3000, 'about 2 MiB at 512 KiB/s');
    assert.equal(result.filesTransferred, 13);
    const copying = beats.filter((b) => b.step === 'copying the library to the NAS (restic, encrypted)');
    assert.ok(copying.some((b) => (b.filesDone as number) > 0 && (b.percent as number) > 0 && b.totalFiles === 13 && /MiB$/.test(b.of as string)), JSON.stringify(copying));
    assert.ok(beats.some((b) => /^verifying the NAS copy \(restic check: structure, data subset \d+\/12\)$/.test(b.step as string)), JSON.stringify(beats.slice(-3)));
  });

  test('with library.delete off, nothing is forgotten: the NAS copy only gains, as the plain copy did', async () => {
    const { config } = await setup(10);
    const a = await copyLibraryToNas(config, versionSetName(new Date()));
    const b = await copyLibraryToNas(config, versionSetName(new Date()));
    assert.deepEqual(b.prunedVersionSets, []);
    assert.deepEqual((await nasCopySnapshots(config)).map((s) => s.id), [a.snapshot, b.snapshot]);
  });

  test('another keyring\'s password, or a folder that is no repository, is one clear line; nothing is written or initialised over it', async () => {
    const { root, remoteDir, config, configOf } = await setup(10);
    await copyLibraryToNas(config, versionSetName(new Date()));
    const other = configOf({ keyFile: join(root, 'other-host.key') });
    for (const attempt of [() => copyLibraryToNas(other, versionSetName(new Date())), () => restoreFromNasCopy(configOf({ keyFile: join(root, 'other-host.key') }), join(root, 'r1'))]) {
      const err = (await attempt().then(() => assert.fail('opened'), (e: unknown) => e)) as Error;
      assert.equal(err.name, 'NasRepositoryError');
      assert.doesNotMatch(err.message, /\n/);
      assert.match(err.message, /does not open with this host's keyring password: it was made with another keyring; recover the keyring with the recovery code/);
    }
    const empty = join(await tempDir('lib-nas-empty'), 'library');
    await mkdir(empty, { recursive: true });
    const none = (await restoreFromNasCopy(configOf({ remoteDir: empty }), join(root, 'r2')).then(() => assert.fail('restored'), (e: unknown) => e)) as Error;
    assert.equal(none.name, 'NasRepositoryError');
    assert.doesNotMatch(none.message, /\n/);
    assert.match(none.message, /^there is no restic repository at .*: check library\.offsite\.remoteDir; nothing was read/);
    // A repository that lost its config: never initialised again over its data.
    await rm(join(remoteDir, 'config'));
    const lost = (await copyLibraryToNas(config, versionSetName(new Date())).then(() => assert.fail('copied'), (e: unknown) => e)) as Error;
    assert.equal(lost.name, 'NasRepositoryError');
    assert.match(lost.message, /holds data\/, index\/, keys\/, locks\/, snapshots\/ but no restic config: .* it is not initialised again over it/);
    assert.deepEqual((await readdir(remoteDir)).sort(), ['data', 'index', 'keys', 'locks', 'snapshots']);
  });

  test('the guards still hold: an empty library copies nothing, a library far below the newest snapshot (delete on) is refused', async () => {
    const { source, config } = await setup(50, { delete: true });
    await copyLibraryToNas(config, versionSetName(new Date()));
    const files = Object.keys(await sha1Tree(source));
    for (const f of files.slice(0, 30)) await rm(join(source, f));
    const err = (await copyLibraryToNas(config, versionSetName(new Date())).then(() => assert.fail('copied'), (e: unknown) => e)) as Error;
    assert.equal(err.name, 'MirrorSafetyError');
    assert.match(err.message, /^refusing to copy the library to the NAS with deletion: the library holds 20 files, the NAS copy 50 \(below library\.minSourceFraction 0\.9\); nothing was copied or deleted there/);
    await rm(source, { recursive: true });
    await mkdir(source);
    const emptyErr = (await copyLibraryToNas(config, versionSetName(new Date())).then(() => assert.fail('copied'), (e: unknown) => e)) as Error;
    assert.equal(emptyErr.name, 'SourceEmptyError');
    assert.equal((await nasCopySnapshots(config)).length, 1);
  });

  test('a plaintext copy from before is reported, and left in place; a restore goes only into an empty folder, and a path asked for is taken literally', async () => {
    const { root, source, remoteDir, config } = await setup(10);
    await mkdir(join(source, 'odd'));
    for (const name of ['IMG [1]*.jpg', 'IMG 1x.jpg', 'IMG 1*.jpg']) await writeFile(join(source, 'odd', name), name);
    await mkdir(join(remoteDir, 'user0'), { recursive: true });
    await writeFile(join(remoteDir, 'user0', 'old.jpg'), 'plain');
    await mkdir(`${remoteDir}.versions/20260101T000000Z`, { recursive: true });
    const result = await copyLibraryToNas(config, versionSetName(new Date()));
    assert.deepEqual(result.plaintextCopy, [`${remoteDir} (1 entry beside the repository: user0/)`, `${remoteDir}.versions`]);
    assert.equal(await readFile(join(remoteDir, 'user0', 'old.jpg'), 'utf8'), 'plain');
    const target = join(root, 'not-empty');
    await mkdir(target);
    await writeFile(join(target, 'keep'), 'x');
    const err = (await restoreFromNasCopy(config, target).then(() => assert.fail('restored'), (e: unknown) => e)) as Error;
    assert.equal(err.name, 'UnsafePathError');
    assert.deepEqual(await readdir(target), ['keep']);
    const one = join(root, 'one');
    await restoreFromNasCopy(config, one, ['odd/IMG [1]*.jpg']);
    assert.deepEqual(await sha1Tree(one), { 'odd/IMG [1]*.jpg': createHash('sha1').update('IMG [1]*.jpg').digest('hex') });
  });
});
