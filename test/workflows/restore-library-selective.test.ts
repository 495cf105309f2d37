import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { parseConfig } from '../../config/config.js';
import { versionSetName } from '../../core/library-layout.js';
import type { RestoreLibraryReport, WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { cli } from '../helpers/cli.js';
import { makeImmichLibrary, mountTmpfs, treeDigest, type ImmichAssetFixture } from '../helpers/library.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { freePort } from '../helpers/net.js';
import { failureType } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// Selective library restores (--missing, --path, --as-of): a real PostgreSQL holding an
// Immich-shaped asset table whose checksums are the generated files' real SHA-1, a real tmpfs
// mount as the drive, real rsync, a real dev server; the fixture docker stands in for the engine.

const stack = useStack({ postgres: true, dockerEnv: true, ping: true, dockerLog: true });

const dockerCalls = async () => (existsSync(stack.dockerLog) ? (await readFile(stack.dockerLog, 'utf8')).split('\n').filter((l) => /^(stop|compose-up) /.test(l)).map((l) => l.split(' ')[0]) : []);
const DAY = 24 * 3600_000;

let worlds = 0;
/** An Immich library of 40 assets (+2 external ones), mirrored onto a mounted tmpfs with rsync -a, and its asset table. */
async function world() {
  const root = await tempDir('selective');
  const library = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  const mirror = join(mountPoint, 'immich');
  stack.mounted(await mountTmpfs(mountPoint));
  // Each world its own assets in the one asset table: ids differ, paths differ by root.
  await stack.pg.psql('DROP TABLE IF EXISTS asset', 'immich').catch(() => undefined);
  const assets = await makeImmichLibrary(stack.pg, library, 40, { start: 1000 * ++worlds, externalCount: 2 });
  await writeFile(join(library, 'not-an-asset.txt'), 'Immich does not reference this');
  await mkdir(mirror);
  await execa('rsync', ['-a', `${library}/`, `${mirror}/`]);
  const raw = rawTestConfig({
    backupDir: join(root, 'dumps'),
    address: stack.temporal.address,
    extra: {
      library: { source: library, destination: mirror, mountPoint, mountWaitMinutes: 0 },
      immich: { composeDir: root, pingUrl: stack.ping.url, healthTimeoutSeconds: 5 },
      log: { level: 'warn' },
    },
  });
  const config = parseConfig(raw);
  const versions = `${mirror}.versions`;
  /** A version set made `daysAgo` days ago holding `content` for these library-relative paths. */
  const versionSet = async (daysAgo: number, files: Record<string, Buffer | string>) => {
    const name = versionSetName(new Date(Date.now() - daysAgo * DAY));
    for (const [rel, content] of Object.entries(files)) {
      await mkdir(dirname(join(versions, name, rel)), { recursive: true });
      await writeFile(join(versions, name, rel), content);
    }
    return name;
  };
  const restore = (input: Record<string, unknown>) => runWorkflow<RestoreLibraryReport>(stack.client, stack.temporal.address, config, 'RestoreLibrary', undefined, input);
  return { root, library, mirror, versions, assets, raw, config, versionSet, restore };
}

const pick = (assets: ImmichAssetFixture[], ...indexes: number[]) => indexes.map((i) => assets[i]!);

describe('RestoreLibrary --missing', () => {
  test('brings back exactly the originals Immich references and the library lacks, checked against Immich\'s SHA-1', async () => {
    const w = await world();
    const lost = pick(w.assets, 3, 17, 29);
    for (const a of lost) await rm(join(w.library, a.relativePath));
    await rm(join(w.library, 'not-an-asset.txt')); // not Immich's: --missing leaves it alone
    const before = await treeDigest(w.library);
    await rm(stack.dockerLog, { force: true });

    const dry = await w.restore({ missing: true, dryRun: true });
    assert.equal(dry.error, undefined, String(dry.error));
    assert.equal(dry.report!.outcome, 'dry-run');
    assert.equal(dry.report!.filesTransferred, 3);
    assert.deepEqual([...dry.report!.selection!.first].sort(), lost.map((a) => a.relativePath).sort());
    assert.equal(dry.report!.selection!.notChecked, 2, 'the two external-library assets are counted, not checked');
    assert.deepEqual(await treeDigest(w.library), before, 'a dry run changes nothing');
    assert.deepEqual(await dockerCalls(), []);

    const { report, error } = await w.restore({ missing: true, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.filesTransferred, 3);
    assert.equal(report!.selection!.verified, 3);
    assert.equal(report!.selection!.fromMirror, 3);
    const now = await treeDigest(w.library);
    assert.deepEqual(Object.keys(now).sort(), [...Object.keys(before), ...lost.map((a) => a.relativePath)].sort(), 'exactly the lost originals came back');
    assert.equal(existsSync(join(w.library, 'not-an-asset.txt')), false);
    assert.deepEqual(await dockerCalls(), ['stop', 'compose-up']);
  });

  test('an original damaged on the mirror comes back from the newest version set holding it intact, and one found nowhere is named', async () => {
    const w = await world();
    const [fromSet, nowhere] = pick(w.assets, 5, 6);
    const good = await readFile(join(w.mirror, fromSet!.relativePath));
    // Bit rot on the mirror: same size, one byte flipped.
    const rotten = Buffer.from(good);
    rotten[100] = rotten[100]! ^ 1;
    await writeFile(join(w.mirror, fromSet!.relativePath), rotten);
    await w.versionSet(20, { [fromSet!.relativePath]: good });
    await w.versionSet(10, { [fromSet!.relativePath]: 'an older, different content' });
    await writeFile(join(w.mirror, nowhere!.relativePath), 'damaged too');
    for (const a of [fromSet!, nowhere!]) await rm(join(w.library, a.relativePath));

    const { report, error } = await w.restore({ missing: true, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.filesTransferred, 1);
    assert.equal(report!.selection!.fromVersions, 1);
    assert.equal(report!.selection!.notFound, 1);
    assert.deepEqual(report!.selection!.notFoundFirst, [nowhere!.relativePath]);
    assert.match(report!.message, /found intact NOWHERE/);
    assert.deepEqual(await readFile(join(w.library, fromSet!.relativePath)), good);
    assert.equal(existsSync(join(w.library, nowhere!.relativePath)), false, 'a damaged copy is never put in place of a lost original');
    await recordFault('lost originals, one with bit rot on the mirror, one damaged everywhere', 'restore library --missing took the first from a version set (its SHA-1 matches Immich\'s), named the second as found nowhere, and put no damaged copy in place');
  });
});

describe('RestoreLibrary --path and --as-of', () => {
  test('--path brings back one subtree only', async () => {
    const w = await world();
    const inside = w.assets.filter((a) => a.relativePath.startsWith('library/user1/'));
    const outside = w.assets.find((a) => a.relativePath.startsWith('library/user2/'))!;
    for (const a of [...inside.slice(0, 2), outside]) await rm(join(w.library, a.relativePath));
    const { report, error } = await w.restore({ path: 'library/user1', approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.filesTransferred, 2);
    for (const a of inside) assert.ok(existsSync(join(w.library, a.relativePath)), a.relativePath);
    assert.equal(existsSync(join(w.library, outside.relativePath)), false, 'outside the path nothing came back');
  });

  test('--path through a symlink on the drive is refused before Immich stops, and nothing comes from the host', async () => {
    const w = await world();
    const host = await tempDir('host-secrets');
    await writeFile(join(host, 'secret.jpg'), 'a host file');
    await rm(join(w.mirror, 'library', 'user3'), { recursive: true });
    await symlink(host, join(w.mirror, 'library', 'user3'));
    await rm(join(w.library, 'library', 'user3'), { recursive: true });
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ path: 'library/user3', approved: true });
    const refused = failureType(error);
    assert.equal(refused.type, 'MirrorSafetyError');
    assert.match(refused.message, /library\/user3 in the mirror leads to .*host-secrets.* \(a symlink on the drive\): nothing was restored/);
    assert.equal(existsSync(join(w.library, 'library', 'user3', 'secret.jpg')), false);
    assert.deepEqual(await dockerCalls(), [], 'refused in the dry run, before anything stopped');
  });

  test('--as-of brings back the older content from the oldest version set made after the date, and nothing from links on the drive', async () => {
    const w = await world();
    const [changed, twice, untouched] = pick(w.assets, 1, 2, 3);
    // The library (and mirror) now hold new content; the version sets hold what each run replaced.
    for (const a of [changed!, twice!]) {
      await writeFile(join(w.library, a.relativePath), `rewritten ${a.id}`);
      await writeFile(join(w.mirror, a.relativePath), `rewritten ${a.id}`);
    }
    await w.versionSet(10, { [changed!.relativePath]: 'content of 12 days ago', [twice!.relativePath]: 'twice: the older content' });
    await w.versionSet(3, { [twice!.relativePath]: 'twice: the newer content' });
    const older = await w.versionSet(30, { [changed!.relativePath]: 'before the date: never chosen' });
    // A hostile drive: a link in a version set leading to a host file.
    const set10 = join(w.versions, (await execa('ls', [w.versions])).stdout.split('\n').sort()[1]!);
    await symlink('/etc/hostname', join(set10, 'library', 'leak.jpg'));
    const asOf = new Date(Date.now() - 12 * DAY).toISOString().slice(0, 10);

    const { report, error } = await w.restore({ asOf, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(await readFile(join(w.library, changed!.relativePath), 'utf8'), 'content of 12 days ago');
    assert.equal(await readFile(join(w.library, twice!.relativePath), 'utf8'), 'twice: the older content');
    assert.equal((await readFile(join(w.library, untouched!.relativePath))).length > 0, true);
    assert.ok(!report!.selection!.versionSets.includes(older), 'a set made before the date is not used');
    assert.equal(existsSync(join(w.library, 'library', 'leak.jpg')), false, 'a link on the drive is never followed');
    await recordFault('files rewritten since a date, a version set holding a link to /etc/hostname', 'restore library --as-of put back the content of the oldest version set after the date and brought no link back');
  });

  test('--as-of before the oldest kept version set is refused, and a set named in the future is never used', async () => {
    const w = await world();
    const [a] = pick(w.assets, 4);
    await writeFile(join(w.library, a!.relativePath), 'current');
    await w.versionSet(30, { [a!.relativePath]: 'thirty days ago' });
    await w.versionSet(-400, { [a!.relativePath]: 'from a clock a year ahead' });
    await rm(stack.dockerLog, { force: true });
    const old = await w.restore({ asOf: new Date(Date.now() - 60 * DAY).toISOString().slice(0, 10), approved: true });
    const refused = failureType(old.error);
    assert.equal(refused.type, 'MirrorSafetyError');
    assert.match(refused.message, /the version sets go back to .* only \(library\.keepVersionsWeeks 8\): the files as of .* cannot be known; choose a date after/);
    assert.deepEqual(await dockerCalls(), [], 'refused in the dry run, before Immich stopped');
    const { report, error } = await w.restore({ asOf: new Date(Date.now() - 31 * DAY).toISOString().slice(0, 10), path: a!.relativePath.split('/').slice(0, 2).join('/'), approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(await readFile(join(w.library, a!.relativePath), 'utf8'), 'thirty days ago');
    assert.equal(report!.selection!.versionSets.length, 1, 'the future-named set was not used');
  });

  test('a bad --path, --as-of or combination is refused in one line before connecting (exit 2)', async () => {
    const w = await world();
    const dead = await freePort();
    const file = await writeConfigFile(w.root, { ...w.raw, temporal: { ...w.raw.temporal, address: `127.0.0.1:${dead}` } });
    const cases: Array<[string[], RegExp]> = [
      [['--path', '../../etc'], /--path "\.\.\/\.\.\/etc": must not contain/],
      [['--path', '/etc'], /--path "\/etc": must be a path relative to the library/],
      [['--as-of', 'last tuesday'], /--as-of "last tuesday": expected a date/],
      [['--as-of', '2999-01-01'], /--as-of "2999-01-01": is in the future/],
      [['--missing', '--delete'], /--delete restores the whole library/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(['-c', file, 'restore', 'library', ...args]);
      assert.equal(r.exitCode, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    // The workflow refuses the same input from anyone who starts it directly.
    const direct = await w.restore({ path: '../etc', approved: true });
    assert.match(String((direct.error as { cause?: Error } | undefined)?.cause?.message), /must not contain/);
  });
});

describe('RestoreLibrary from the version sets real mirror runs keep', () => {
  test('a rewrite and a deletion the weekly mirror versioned: --as-of brings back the content before, --missing the deleted original', async () => {
    const w = await world();
    // Small test library: let the write-once guard pass one rewrite (its default share would refuse it).
    const config = parseConfig({ ...w.raw, library: { ...w.raw.library, delete: true, writeOnce: { maxFiles: 5, maxShare: 1 } } });
    const mirror = () => runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror');
    assert.equal((await mirror()).error, undefined);
    const [rewritten, deleted] = pick(w.assets, 8, 9);
    const original = await readFile(join(w.library, rewritten!.relativePath));
    const asOf = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    await new Promise((r) => setTimeout(r, 1100)); // version sets are named to the second
    await writeFile(join(w.library, rewritten!.relativePath), 'ransomware was here');
    await rm(join(w.library, deleted!.relativePath));
    const second = await mirror();
    assert.equal(second.error, undefined, String(second.error));
    assert.equal(await readFile(join(w.mirror, rewritten!.relativePath), 'utf8'), 'ransomware was here', 'the mirror follows the library');
    assert.equal(existsSync(join(w.mirror, deleted!.relativePath)), false, 'and deletes with it');

    const back = await runWorkflow<RestoreLibraryReport>(stack.client, stack.temporal.address, config, 'RestoreLibrary', undefined, { asOf, path: 'library', approved: true });
    assert.equal(back.error, undefined, String(back.error));
    assert.deepEqual(await readFile(join(w.library, rewritten!.relativePath)), original, 'the content before the rewrite is back');
    assert.equal(back.report!.selection!.fromVersions, 2);

    await rm(join(w.library, deleted!.relativePath));
    const missing = await runWorkflow<RestoreLibraryReport>(stack.client, stack.temporal.address, config, 'RestoreLibrary', undefined, { missing: true, approved: true });
    assert.equal(missing.error, undefined, String(missing.error));
    assert.equal(missing.report!.filesTransferred, 1);
    assert.equal(missing.report!.selection!.fromVersions, 1, 'the mirror no longer has it: it came from the version set');
    assert.equal(missing.report!.selection!.verified, 1);
  });
});
