import assert from 'node:assert/strict';
import { mkdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { MirrorSafetyError } from '../../core/errors.js';
import { execa } from 'execa';
import { derivedMatcher, emptyPlan, oldestVersions, parseAcceptance, planVersionPrune, parseItemized, readPairings, recordPairing, rewriteDigest, sameBytes, versionSetContents } from '../../adapters/mirror/library-versions.js';
import { versionSetName } from '../../core/library-layout.js';
import { treeDigest } from '../helpers/library.js';
import { tempDir } from '../helpers/setup.js';

// The versioned mirror's pure parts, checked against what the real rsync prints and reads.

describe('library versions', () => {
  test('rsync --backup-dir keeps what it overwrites or deletes, odd names included; the set tells overwritten from deleted; a no-change rerun prints no line', async () => {
    const root = await tempDir('backupdir');
    const [src, dst, set] = [join(root, 'src'), join(root, 'dst'), join(root, 'versions', '20261127T050000Z')];
    const names = ['plain.jpg', 'line\nbreak.jpg', 'back\\#123slash.jpg', 'été 2024/ß.jpg', "quote'd \"x\".jpg"];
    for (const n of names) {
      await mkdir(join(src, n, '..'), { recursive: true });
      await writeFile(join(src, n), `body of ${n}`);
    }
    const args = ['-a', '--delete', '--backup', `--backup-dir=${set}`, '--out-format=%i %n', `${src}/`, `${dst}/`];
    await execa('rsync', args);
    const later = new Date(Date.now() + 60_000);
    for (const n of names.slice(1)) {
      await writeFile(join(src, n), `new body of ${n}`);
      await utimes(join(src, n), later, later);
    }
    const { rm } = await import('node:fs/promises');
    await rm(join(src, names[0]!));
    const plan = parseItemized((await execa('rsync', args)).stdout.split('\n'), emptyPlan());
    assert.equal(plan.deletedFiles, 1);
    const contents = await versionSetContents(set, dst);
    assert.deepEqual(contents.files.sort(), [...names].sort());
    assert.deepEqual(contents.overwritten.sort(), names.slice(1).sort());
    for (const n of names.slice(1)) assert.equal(await readFile(join(set, n), 'utf8'), `body of ${n}`);
    assert.equal((await execa('rsync', args)).stdout, '');
    assert.deepEqual(await treeDigest(dst), await treeDigest(src));
  });

  test('itemized lines: files transferred again are told from new ones, attribute-only changes and deletions', () => {
    const plan = parseItemized(
      ['*deleting   gone/dir/g1', '*deleting   gone/dir/', '*deleting   gone/', '*deleting   a/f3', '.d..t...... a/', '>f.st...... a/f1', '.f...p..... a/f2', 'cd+++++++++ n/', '>f+++++++++ n/new', 'Number of files: 8 (reg: 4, dir: 4)', '     1,234 100%  1.00MB/s  0:00:00 (xfr#1, to-chk=0/8)'],
      emptyPlan(),
    );
    assert.deepEqual(plan.changed, ['a/f1']);
    assert.deepEqual(plan.created, ['a/', 'a/f2', 'n/', 'n/new']);
    assert.equal(plan.deletedFiles, 2);
    assert.equal(plan.deleted.length, 4);
  });

  test('the approval fingerprint depends on the exact set of files, not their order', () => {
    assert.equal(rewriteDigest(['b', 'a']), rewriteDigest(['a', 'b']));
    assert.notEqual(rewriteDigest(['a', 'b']), rewriteDigest(['a', 'b', 'c']));
    assert.notEqual(rewriteDigest(['a']), rewriteDigest(['b']));
    const digest = rewriteDigest(['a']);
    assert.deepEqual(parseAcceptance(`1:${digest}`), { count: 1, digest });
    for (const bad of ['1', `x:${digest}`, `1:${digest.slice(1)}`, `1:${digest};rm`, `-1:${digest}`]) {
      assert.throws(() => parseAcceptance(bad), (err: Error) => /^--accept-rewrites .*: expected COUNT:DIGEST .*nothing was started$/.test(err.message) && !err.message.includes('\n'), bad);
    }
  });

  test('same-size files are compared by their bytes', async () => {
    const root = await tempDir('same');
    await writeFile(join(root, 'a'), 'abcdef');
    await writeFile(join(root, 'b'), 'abcdef');
    await writeFile(join(root, 'c'), 'abcdeX');
    assert.equal(await sameBytes(join(root, 'a'), join(root, 'b')), true);
    assert.equal(await sameBytes(join(root, 'a'), join(root, 'c')), false);
  });

  test('expired version sets: older than the window, oldest first, never the current run\'s, never the newest keepWeeks, never another name', () => {
    const now = Date.UTC(2026, 10, 27, 5);
    const day = 86_400_000;
    const name = (days: number) => versionSetName(new Date(now - days * day));
    const names = [name(3), name(70), name(15), 'notes', '20261301T000000Z', name(100), `${name(90)}.old`, name(20)];
    assert.deepEqual(planVersionPrune(names, now, 2, name(3)), { expired: [name(100), name(70), name(20)], future: [] });
    assert.deepEqual(planVersionPrune([name(100)], now, 2, name(100)).expired, []);
    // A name that is not a directory (a planted symlink) does not hold a place among the newest kept.
    assert.deepEqual(planVersionPrune([name(100), name(90), name(80)], now, 2, 'x', (n) => n !== name(80)).expired, [name(80)]);
  });

  test('a clock far ahead still leaves the newest keepWeeks version sets; a set named in the future stops all pruning and is named', () => {
    const day = 86_400_000;
    const now = Date.UTC(2026, 10, 27, 5);
    const weekly = Array.from({ length: 12 }, (_, i) => versionSetName(new Date(now - i * 7 * day)));
    // The clock jumped ahead by years: every set looks expired, the newest 8 stay.
    const ahead = planVersionPrune(weekly, now + 5 * 365 * day, 8, 'none');
    assert.deepEqual(ahead.expired, weekly.slice(8).reverse());
    assert.deepEqual(planVersionPrune(weekly, 1e15, 8, 'none').expired.length, 4);
    // A set named in the future (made while the clock ran ahead): nothing is pruned, whatever else is old.
    const future = versionSetName(new Date(now + 30 * day));
    assert.deepEqual(planVersionPrune([...weekly, future], now, 2, 'none'), { expired: [], future: [future] });
    // Within the hour's slack (a server clock a little ahead of the worker's): not the future.
    assert.deepEqual(planVersionPrune([...weekly, versionSetName(new Date(now + 60_000))], now, 8, 'none').future, []);
  });

  test('a path held by two version sets (a run stopped before its check, then a later run) yields only the oldest, the original', () => {
    const found = [
      { set: '20261115T050000Z', path: 'a.jpg', onMirror: true },
      { set: '20261108T050000Z', path: 'a.jpg', onMirror: true },
      { set: '20261115T050000Z', path: 'b.jpg', onMirror: false },
    ];
    assert.deepEqual(oldestVersions(found), [
      { set: '20261108T050000Z', path: 'a.jpg', onMirror: true },
      { set: '20261115T050000Z', path: 'b.jpg', onMirror: false },
    ]);
  });

  test('Immich\'s derived files are told from originals: top folders, sidecars in any case, folder check files', () => {
    const derived = derivedMatcher(['thumbs/', 'encoded-video/', 'profile/', 'backups/', '*.xmp', '.immich']);
    for (const p of ['thumbs/u1/ab/cd/x-preview.jpeg', 'encoded-video/u1/x.mp4', 'profile/u1/p.jpg', 'backups/immich-db-backup-1.sql.gz', 'library/u1/2024/IMG_1.jpg.xmp', 'upload/u1/IMG_2.XMP', 'library/.immich']) assert.equal(derived(p), true, p);
    for (const p of ['library/u1/2024/IMG_1.jpg', 'upload/u1/IMG_2.heic', 'library/thumbs/x.jpg', 'library/u1/xmp.jpg', 'library/u1/a.xmp.jpg']) assert.equal(derived(p), false, p);
  });

  test('a version set is walked without holding the event loop, and one holding more entries than a run can have moved is refused', async () => {
    const root = await tempDir('walk');
    const set = join(root, 'set');
    for (let d = 0; d < 20; d++) {
      await mkdir(join(set, `d${d}`), { recursive: true });
      await Promise.all(Array.from({ length: 1000 }, (_, i) => writeFile(join(set, `d${d}`, `f${i}`), '')));
    }
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const contents = await versionSetContents(set, join(root, 'mirror'));
      assert.equal(contents.files.length, 20_000);
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 0, 'timers (heartbeats) ran while the set was walked');
    await assert.rejects(versionSetContents(set, join(root, 'mirror'), { maxEntries: 5_000 }), (err: Error) => err instanceof MirrorSafetyError && /holds more than 5000 entries/.test(err.message) && !err.message.includes('\n'));
  });

  test('the pairing record keeps one entry per run, and a hand-edited or hostile file yields nothing it cannot vouch for', async () => {
    const dir = await tempDir('pairings');
    await recordPairing(dir, { versionSet: '20261120T050000Z', mirroredAt: '', dump: 'immich_20261120_030000.sql.gz', sha256: 'a'.repeat(64) });
    await recordPairing(dir, { versionSet: '20261127T050000Z', mirroredAt: '' });
    await recordPairing(dir, { versionSet: '20261127T050000Z', mirroredAt: '', dump: 'immich_20261127_030000.sql.gz' });
    const read = await readPairings(dir);
    assert.deepEqual(read.map((p) => [p.versionSet, p.dump]), [['20261120T050000Z', 'immich_20261120_030000.sql.gz'], ['20261127T050000Z', 'immich_20261127_030000.sql.gz']]);
    assert.equal(read[0]!.mirroredAt, '2026-11-20T05:00:00.000Z');
    await writeFile(join(dir, 'mirror-pairings.json'), JSON.stringify([{ versionSet: '../../etc', dump: 'immich_20261120_030000.sql.gz' }, { versionSet: '20261127T050000Z', dump: '/etc/passwd' }]));
    assert.deepEqual((await readPairings(dir)).map((p) => [p.versionSet, p.dump]), [['20261127T050000Z', undefined]]);
    await writeFile(join(dir, 'mirror-pairings.json'), 'not json');
    assert.deepEqual(await readPairings(dir), []);
    assert.ok((await readFile(join(dir, 'mirror-pairings.json'), 'utf8')).length > 0);
  });
});
