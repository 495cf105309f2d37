import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { remoteVersionsDirOf, versionSetName } from '../../core/library-layout.js';
import type { WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// library.offsite (issue 15, item 7): after the drive, the library goes to a real sshd on
// loopback standing in for the NAS, over the same batch-mode ssh as OffsiteSync, versioned there.

const stack = useStack({ sshd: true });

describe('WeeklyLibraryMirror with library.offsite', () => {
  test('copies the library to the NAS after the drive; what a later run overwrites or deletes there is kept in its version set on the NAS, and old NAS sets are pruned', async () => {
    const root = await tempDir('lib-offsite');
    const source = join(root, 'library');
    const mountPoint = join(root, 'wd-backup');
    await makeLibrary(source, 80);
    stack.mounted(await mountTmpfs(mountPoint));
    const remoteDir = join(await tempDir('lib-nas'), 'volume1', 'backups', 'immich', 'library');
    const remoteVersions = remoteVersionsDirOf(remoteDir);
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
    assert.equal(first.report!.offsite!.filesTransferred, 80);
    assert.deepEqual(await treeDigest(remoteDir), await treeDigest(source));

    const before = await treeDigest(remoteDir);
    const paths = Object.keys(before).sort();
    const [changed, gone] = [paths[3]!, paths[4]!];
    await writeFile(join(source, changed), 'rewritten by something');
    const later = new Date(Date.now() + 60_000);
    await utimes(join(source, changed), later, later);
    await rm(join(source, gone));
    // An old set on the NAS, a recent one, something that is not a set, and a symlink named like an old set.
    const day = 86_400_000;
    const old = versionSetName(new Date(Date.now() - 30 * day));
    const recent = versionSetName(new Date(Date.now() - 3 * day));
    for (const name of [old, recent, 'readme']) {
      await mkdir(join(remoteVersions, name), { recursive: true });
      await writeFile(join(remoteVersions, name, 'x.jpg'), name);
    }
    const host = await tempDir('nas-host');
    await writeFile(join(host, 'keep.txt'), 'kept');
    const plantedName = versionSetName(new Date(Date.now() - 40 * day));
    await symlink(host, join(remoteVersions, plantedName));

    const second = await run();
    assert.equal(second.error, undefined, String(second.error));
    const set = second.report!.versioning!.versionSet;
    assert.equal(second.report!.offsite!.deleted, 1);
    assert.deepEqual(await treeDigest(remoteDir), await treeDigest(source));
    const kept = await treeDigest(join(remoteVersions, set));
    assert.deepEqual(kept, { [changed]: before[changed], [gone]: before[gone] });
    // rm -rf of a symlink removes the link only: the directory it led to keeps its file.
    assert.deepEqual(second.report!.offsite!.prunedVersionSets, [plantedName, old]);
    const left = (await readdir(remoteVersions)).sort();
    assert.deepEqual(left, [recent, set, 'readme'].sort());
    assert.equal(await readFile(join(host, 'keep.txt'), 'utf8'), 'kept');
    assert.match(second.report!.offsite!.destination, new RegExp(`^${stack.sshd.user}@127\\.0\\.0\\.1:${stack.sshd.port}:${remoteDir}$`));
  });
});
