import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { emptyPlan, expiredVersionSets, filesFromList, parseAcceptance, parseItemized, readPairings, recordPairing, rewriteDigest, sameBytes, topmostDeletions, unescapeRsyncName } from '../../activities/library-versions.js';
import { versionSetName } from '../../src/library-layout.js';
import { treeDigest } from '../helpers/library.js';
import { tempDir } from '../helpers/setup.js';

// The versioned mirror's pure parts, checked against what the real rsync prints and reads.

describe('library versions', () => {
  test('names rsync escapes (a newline, a backslash before #, non-ASCII) go back to their bytes, and the restricted copy brings exactly them', async () => {
    const root = await tempDir('itemize');
    const [src, dst] = [join(root, 'src'), join(root, 'dst')];
    const names = ['plain.jpg', 'line\nbreak.jpg', 'back\\#123slash.jpg', 'été 2024/ß.jpg', "quote'd \"x\".jpg"];
    for (const n of names) {
      await mkdir(join(src, n, '..'), { recursive: true });
      await writeFile(join(src, n), `body of ${n}`);
    }
    const { stdout } = await execa('rsync', ['-a', '--dry-run', '--out-format=%i %n', `${src}/`, `${dst}/`]);
    const plan = parseItemized(stdout.split('\n'), emptyPlan());
    assert.equal(plan.changed.length, 0);
    const listed = plan.created.map((p) => unescapeRsyncName(p).toString('utf8'));
    for (const n of names) assert.ok(listed.includes(n), `${JSON.stringify(n)} listed as ${JSON.stringify(plan.created)}`);
    const list = join(root, 'list');
    await writeFile(list, filesFromList(plan.created));
    await execa('rsync', ['-a', '--from0', `--files-from=${list}`, '--no-implied-dirs', `${src}/`, `${dst}/`]);
    assert.deepEqual(await treeDigest(dst), await treeDigest(src));
  });

  test('changed existing files are told apart by size; new files and deletions are not changes, and only topmost deletions are passed on', () => {
    const plan = parseItemized(
      ['*deleting   gone/dir/g1', '*deleting   gone/dir/', '*deleting   gone/', '*deleting   a/f3', '.d..t...... a/', '>f.st...... a/f1', '>f..t...... a/f2', 'cd+++++++++ n/', '>f+++++++++ n/new', 'Number of files: 8 (reg: 4, dir: 4)', '     1,234 100%  1.00MB/s  0:00:00 (xfr#1, to-chk=0/8)'],
      emptyPlan(),
    );
    assert.deepEqual(plan.changed, [{ path: 'a/f1', sizeDiffers: true }, { path: 'a/f2', sizeDiffers: false }]);
    assert.deepEqual(plan.created, ['a/', 'n/', 'n/new']);
    assert.equal(plan.deletedFiles, 2);
    assert.deepEqual(topmostDeletions(plan.deleted), ['gone', 'a/f3']);
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

  test('expired version sets: older than the window, oldest first, never the current run\'s, never another name', () => {
    const now = Date.UTC(2026, 10, 27, 5);
    const day = 86_400_000;
    const name = (days: number) => versionSetName(new Date(now - days * day));
    const names = [name(3), name(70), name(15), 'notes', '20261301T000000Z', name(100), `${name(90)}.old`];
    assert.deepEqual(expiredVersionSets(names, now, 2, name(3)), [name(100), name(70), name(15)]);
    assert.deepEqual(expiredVersionSets([name(100)], now, 2, name(100)), []);
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
