import assert from 'node:assert/strict';
import { mkdir, realpath, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { sha1OfFile } from '../../adapters/mirror/file-sha1.js';
import { startReader } from '../../adapters/mirror/library-audit-reader.js';
import { ownProcessesNamed } from '../helpers/processes.js';
import { tempDir } from '../helpers/setup.js';

// LibraryAudit's reader on real files: what it reads and refuses, its protocol through a real
// `ionice -c3 nice -n19 node sha1-reader.js`, and that stopping it never waits on the process.

const sha1sum = async (path: string) => (await execa('sha1sum', ['-z', '--', path])).stdout.slice(0, 40); // -z: a name with a newline is not escaped
const buffer = Buffer.allocUnsafe(1 << 18);
/** The reader reads a file only at its real path: a temporary directory by its real path (TMPDIR may be a symlink). */
const realTempDir = async (prefix: string) => realpath(await tempDir(prefix));

describe('LibraryAudit reader', () => {
  test('a regular file hashes as sha1sum does, with its device; a symlink, FIFO, directory, device node or missing file is not read', async () => {
    const dir = await realTempDir('reader-files');
    const file = join(dir, 'IMG_0001.jpg');
    await writeFile(file, Buffer.alloc(700_000, 7));
    assert.deepEqual(sha1OfFile(file, buffer), { sha1: await sha1sum(file), dev: (await stat(file)).dev });
    await symlink(file, join(dir, 'link.jpg'));
    await execa('mkfifo', [join(dir, 'fifo.jpg')]);
    await mkdir(join(dir, 'dir.jpg'));
    for (const path of [join(dir, 'link.jpg'), join(dir, 'fifo.jpg'), join(dir, 'dir.jpg'), '/dev/zero', join(dir, 'missing.jpg')]) {
      assert.equal(sha1OfFile(path, buffer), undefined, path);
    }
  });

  test('a file reached through a symlinked directory, a .. or a doubled slash is not read; the same file at its real path is', async () => {
    const dir = await realTempDir('reader-dirlink');
    const library = join(dir, 'library');
    const outside = join(dir, 'outside');
    await mkdir(join(library, 'upload', 'user1'), { recursive: true });
    await mkdir(outside);
    const file = join(outside, 'shadow');
    await writeFile(file, 'root:$6$secret:19000:0:99999:7:::\n');
    // A directory on the path swapped for a symlink out of the library (upload/user1/link -> outside).
    await symlink(outside, join(library, 'upload', 'user1', 'link'));
    assert.equal(sha1OfFile(join(library, 'upload', 'user1', 'link', 'shadow'), buffer), undefined, 'read through a symlinked directory');
    // Nor through a path that is not the file's own: a `..` or a doubled slash.
    assert.equal(sha1OfFile(`${library}/../outside/shadow`, buffer), undefined, 'read through ..');
    assert.equal(sha1OfFile(`${outside}//shadow`, buffer), undefined, 'read through //');
    assert.deepEqual(sha1OfFile(file, buffer), { sha1: await sha1sum(file), dev: (await stat(file)).dev });
  });

  test('a file longer than the size it had when looked at is not read to its end', async () => {
    const dir = await realTempDir('reader-size');
    const file = join(dir, 'IMG_0002.jpg');
    await writeFile(file, Buffer.alloc(1000, 1));
    assert.equal(sha1OfFile(file, buffer, 1000)?.sha1, await sha1sum(file));
    assert.equal(sha1OfFile(file, buffer, 999), undefined);
    // A 1 TiB sparse file in its place: refused after the first read, not after a TiB of zeros.
    await truncate(file, 2 ** 40);
    const started = performance.now();
    assert.equal(sha1OfFile(file, buffer, 1000), undefined);
    assert.ok(performance.now() - started < 1000);
  });

  test('the reader process answers in order, names with spaces and newlines included, at nice 19 and idle I/O class', async () => {
    const dir = await realTempDir('reader-protocol');
    const names = ['a.jpg', 'with space.jpg', 'new\nline.jpg', 'ünï.jpg'];
    for (const [i, name] of names.entries()) await writeFile(join(dir, name), `content ${i}`);
    const reader = startReader({ ioniceClass: 3, nice: 19 });
    try {
      const files = await Promise.all([...names, 'missing.jpg'].map(async (n) => ({ path: join(dir, n), size: (await stat(join(dir, n)).catch(() => ({ size: 0 }))).size })));
      const [first, second] = await Promise.all([reader.hash(files), reader.hash(files.slice(0, 2))]);
      assert.deepEqual(first.map((r) => r?.sha1), [...(await Promise.all(names.map((n) => sha1sum(join(dir, n))))), undefined]);
      assert.deepEqual(second.map((r) => r?.sha1), first.slice(0, 2).map((r) => r?.sha1));
      const [pid] = (await ownProcessesNamed({ cmdline: /sha1-reader\.js$/ })).map(String);
      assert.ok(pid, 'the reader process runs');
      assert.equal(`${(await execa('ps', ['-o', 'ni=', '-p', pid])).stdout.trim()} ${(await execa('ionice', ['-p', pid])).stdout.trim()}`, '19 idle');
    } finally {
      reader.close();
    }
  });

  test('stopping a busy reader fails what was asked at once, without waiting for it, and the process goes', async () => {
    const dir = await realTempDir('reader-stop');
    const huge = join(dir, 'huge.mp4');
    await writeFile(huge, '');
    await truncate(huge, 2 ** 40); // a TiB of zeros to read: busy for minutes
    const reader = startReader({ ioniceClass: 3, nice: 19 });
    const pending = reader.hash([{ path: huge, size: 2 ** 40 }]);
    await new Promise((r) => setTimeout(r, 300));
    const stopped = performance.now();
    reader.close();
    await assert.rejects(pending, /the sha1 reader was stopped/);
    assert.ok(performance.now() - stopped < 100, 'rejected at once');
    for (let i = 0; i < 50 && (await ownProcessesNamed({ cmdline: /sha1-reader\.js$/ })).length; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await ownProcessesNamed({ cmdline: /sha1-reader\.js$/ }), []);
    const aborted = new AbortController();
    const second = startReader({ ioniceClass: 3, nice: 19 }, aborted.signal);
    const busy = second.hash([{ path: huge, size: 2 ** 40 }]);
    await new Promise((r) => setTimeout(r, 300));
    aborted.abort();
    await assert.rejects(busy, /the sha1 reader was stopped/);
    second.close();
  });
});
