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

/** One asset of an Immich-shaped library: its file under the library and its row in Immich's `asset` table. */
export interface ImmichAssetFixture {
  id: string;
  /** Relative to the library root (library.source): library/<user>/<year>/<month>/IMG_n.jpg */
  relativePath: string;
  /** As Immich's container sees it: /data/<relativePath> */
  originalPath: string;
  sha1: string;
}

/**
 * An Immich-shaped library: `count` generated originals under root/library/<user>/<year>/<month>/,
 * and, in the test server's `immich` database, Immich 2.x's `asset` table (id, ownerId,
 * originalPath, checksum bytea, checksumAlgorithm) whose checksums are the files' real SHA-1.
 * `externalCount` more rows stand for an external library (checksumAlgorithm sha1-path, paths
 * outside /data). Creates the database and table when missing; appends otherwise.
 */
export async function makeImmichLibrary(
  pg: { psql(sql: string, database?: string): Promise<string> },
  root: string,
  count: number,
  options: { prefix?: string; start?: number; externalCount?: number; bytesEach?: (i: number) => number } = {},
): Promise<ImmichAssetFixture[]> {
  const prefix = options.prefix ?? '/data';
  const start = options.start ?? 0;
  const bytesEach = options.bytesEach ?? ((i: number) => 1000 + ((i * 7919) % 9000));
  if ((await pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'immich'")) === '0') await pg.psql('CREATE DATABASE immich');
  await pg.psql(
    `CREATE TABLE IF NOT EXISTS asset (id uuid PRIMARY KEY, "ownerId" uuid NOT NULL, "originalPath" text NOT NULL, checksum bytea NOT NULL, "checksumAlgorithm" text NOT NULL DEFAULT 'sha1', "libraryId" uuid, "deletedAt" timestamptz)`,
    'immich',
  );
  const assets: ImmichAssetFixture[] = [];
  const rows: string[] = [];
  for (let i = start; i < start + count; i++) {
    const user = `user${i % 4}`;
    const rel = join('library', user, String(2020 + (i % 5)), String((i % 12) + 1).padStart(2, '0'), `IMG_${String(i).padStart(6, '0')}.jpg`);
    const body = Buffer.alloc(bytesEach(i), i % 251);
    body.write(`IMG_${i} ${root}`, 0);
    await mkdir(join(root, dirnameOf(rel)), { recursive: true });
    await writeFile(join(root, rel), body);
    const sha1 = createHash('sha1').update(body).digest('hex');
    const id = uuidOf(`asset${i}`);
    assets.push({ id, relativePath: rel, originalPath: `${prefix}/${rel}`, sha1 });
    rows.push(`('${id}', '${uuidOf(user)}', '${prefix}/${rel}', '\\x${sha1}', 'sha1', NULL)`);
  }
  for (let i = 0; i < (options.externalCount ?? 0); i++) {
    const path = `/mnt/external/photos/EXT_${start + i}.jpg`;
    const sha1 = createHash('sha1').update(path).digest('hex');
    rows.push(`('${uuidOf(`external${start + i}`)}', '${uuidOf('user0')}', '${path}', '\\x${sha1}', 'sha1-path', '${uuidOf('external-library')}')`);
  }
  for (let i = 0; i < rows.length; i += 1000) {
    await pg.psql(`INSERT INTO asset (id, "ownerId", "originalPath", checksum, "checksumAlgorithm", "libraryId") VALUES ${rows.slice(i, i + 1000).join(',\n')}`, 'immich');
  }
  return assets;
}

const dirnameOf = (rel: string) => rel.split('/').slice(0, -1).join('/');
const uuidOf = (seed: string) => createHash('md5').update(seed).digest('hex').replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
