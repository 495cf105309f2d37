import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { execa } from 'execa';

/** A generated photo library: `count` files under user/year/month folders, deterministic sizes and bytes. */
export async function makeLibrary(root: string, count: number, bytesEach = (i: number) => 2000 + ((i * 7919) % 20000)): Promise<number> {
  let total = 0;
  for (let i = 0; i < count; i++) {
    const dir = join(root, `user${i % 4}`, String(2020 + (i % 5)), String((i % 12) + 1).padStart(2, '0'));
    await mkdir(dir, { recursive: true });
    const size = bytesEach(i);
    const body = Buffer.alloc(size, i % 251);
    body.write(`IMG_${i}`, 0);
    await writeFile(join(dir, `IMG_${String(i).padStart(6, '0')}.jpg`), body);
    total += size;
  }
  return total;
}

/** relative path → sha256 of every file under root. */
export async function treeDigest(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    out[relative(root, path)] = createHash('sha256').update(await readFile(path)).digest('hex');
  }
  return out;
}

/** Mounts a real tmpfs at dir (root only: these machines run tests as root), standing in for the USB drive. */
export async function mountTmpfs(dir: string, size = '256m'): Promise<{ unmount(): Promise<void> }> {
  if (process.getuid?.() !== 0) throw new Error('mounting a tmpfs for the drive tests needs root (CI runs as root)');
  await mkdir(dir, { recursive: true });
  await execa('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  return { unmount: async () => void (await execa('umount', ['-l', dir])) };
}

/**
 * Mounts a fresh ext4 image (a loop device) at dir, standing in for the USB drive where tmpfs cannot:
 * tmpfs does not support fsfreeze. Unmounting thaws it first and frees the loop device and image.
 */
export async function mountLoopExt4(dir: string, sizeMiB = 64): Promise<{ unmount(): Promise<void>; freeze(): Promise<void>; thaw(): Promise<void> }> {
  if (process.getuid?.() !== 0) throw new Error('mounting a loop device for the drive tests needs root (CI runs as root)');
  await mkdir(dir, { recursive: true });
  const image = `${dir.replace(/\/+$/, '')}.ext4`;
  await execa('truncate', ['-s', `${sizeMiB}M`, image]);
  await execa('mkfs.ext4', ['-q', '-F', image]);
  await execa('mount', ['-o', 'loop', image, dir]);
  const thaw = async () => void (await execa('fsfreeze', ['--unfreeze', dir], { reject: false }));
  return {
    freeze: async () => void (await execa('fsfreeze', ['--freeze', dir])),
    thaw,
    async unmount() {
      await thaw();
      // mount -o loop set autoclear: unmounting frees the loop device.
      await execa('umount', [dir], { reject: false });
      await rm(image, { force: true });
    },
  };
}
