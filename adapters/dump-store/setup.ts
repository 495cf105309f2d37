import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import type { Config } from '../../config/config.js';
import { UnsafePathError } from '../../core/errors.js';
import { assertNotWritableByOthers } from './key.js';
import { openKeyring } from './keyring.js';
import { privateCopyDir } from './private-copy.js';
import { ensureRecovery, type RecoveryStatus } from './recovery.js';

/** Work folders beside the key this old are from a worker or command that died mid-way (a decrypted dump may be in one). */
const STALE_WORK_MS = 6 * 3_600_000;

/** Removes what a killed worker left in the private folder: NAS copies fetched or sealed, keyring uploads (never a folder in use: those are younger). */
async function sweepPrivateCopies(keyFile: string): Promise<void> {
  const dir = privateCopyDir(keyFile);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!/^(nas|upload|keyring)-[A-Za-z0-9]{6}$/.test(name)) continue;
    const st = await lstat(join(dir, name)).catch(() => undefined);
    if (st?.isDirectory() && Date.now() - st.mtimeMs > STALE_WORK_MS) await rm(join(dir, name), { recursive: true, force: true });
  }
}

const inside = (path: string, dir: string) => {
  const rel = relative(resolve(dir), resolve(path));
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'));
};

/**
 * What the worker checks before it connects: the key is outside the staging dir, exists (made on
 * the first start: `made` then, with its keyring and recovery code) and is owner-only; the key, the config file and the
 * staging dir cannot be changed by anyone but root and this user. Each failure is one line.
 */
export async function trustedSetup(config: Config, configFile?: string): Promise<{ made: boolean; recovery: RecoveryStatus & { made: boolean } }> {
  const key = config.security.keyFile;
  if (inside(key, config.backup.dir)) throw new UnsafePathError(`security.keyFile ${key} is inside backup.dir ${config.backup.dir}: the key must live apart from the dumps it vouches for (and off the NAS)`);
  if (configFile) await assertNotWritableByOthers(configFile, 'the config file');
  await mkdir(config.backup.dir, { recursive: true, mode: 0o700 });
  await assertNotWritableByOthers(config.backup.dir, 'backup.dir');
  const made = !existsSync(key);
  await openKeyring(key, { create: true });
  await assertNotWritableByOthers(key, 'security.keyFile');
  await sweepPrivateCopies(key);
  // The recovery code is made with the keyring, and the wrapped keyring follows every change of it.
  const { envelope: _, ...recovery } = await ensureRecovery(key);
  return { made, recovery };
}
