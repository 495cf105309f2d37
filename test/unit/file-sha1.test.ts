import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { sha1OfPlainFile } from '../../adapters/mirror/file-sha1.js';
import { tempDir } from '../helpers/setup.js';

// The selective library restore's hash of a file on the drive, by promise, with the audit reader's
// checks (sha1OfFile): on real files, symlinks and a FIFO.

const sha1sum = async (path: string) => (await execa('sha1sum', ['--', path])).stdout.slice(0, 40);

describe('sha1OfPlainFile', () => {
  test('a regular file under the root hashes as sha1sum does, also when the root itself is reached through a symlink', async () => {
    const dir = await tempDir('plain-sha1');
    await mkdir(join(dir, 'mirror', 'library', 'user1'), { recursive: true });
    const file = join(dir, 'mirror', 'library', 'user1', 'IMG_0001.jpg');
    await writeFile(file, Buffer.alloc(3_000_000, 5));
    assert.equal(await sha1OfPlainFile(join(dir, 'mirror'), 'library/user1/IMG_0001.jpg'), await sha1sum(file));
    await symlink(join(dir, 'mirror'), join(dir, 'mount'));
    assert.equal(await sha1OfPlainFile(join(dir, 'mount'), 'library/user1/IMG_0001.jpg'), await sha1sum(file));
  });

  test('a symlink (last or on the way), a FIFO, a directory or a missing file is not read', async () => {
    const dir = await tempDir('plain-sha1-refuse');
    const root = join(dir, 'mirror');
    await mkdir(join(root, 'library'), { recursive: true });
    await mkdir(join(dir, 'outside'));
    await writeFile(join(dir, 'outside', 'shadow'), 'root:$6$secret\n');
    await symlink(join(dir, 'outside', 'shadow'), join(root, 'library', 'link.jpg'));
    await symlink(join(dir, 'outside'), join(root, 'library', 'user2'));
    await execa('mkfifo', [join(root, 'library', 'fifo.jpg')]);
    for (const rel of ['library/link.jpg', 'library/user2/shadow', 'library/fifo.jpg', 'library', 'library/missing.jpg']) {
      assert.equal(await sha1OfPlainFile(root, rel), undefined, rel);
    }
    assert.equal(await sha1OfPlainFile(join(dir, 'no-such-root'), 'library/x.jpg'), undefined);
  });
});
