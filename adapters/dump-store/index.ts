import { constants } from 'node:fs';
import { link, lstat, readdir, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { Logger } from '../../config/logger.js';
import { checksumFileName, DUMP_NAME_HINT, isDumpName, isRestorePointName, REJECTED_DIR, RESTORE_POINTS_DIR, rowCountsFileName } from '../../core/dump-names.js';
import { ChecksumMismatchError, ConfigError, DumpConflictError, DumpNameTakenError, DumpNotFoundError } from '../../core/errors.js';
import type { RowCounts, TableDigests } from '../../core/reports.js';
import type { DumpKind, ResolveDumpInput, ResolvedDump, VerifiedDump } from '../../core/types.js';
import { diskError, fsyncDir, ownDir, readRegular, writeFileAtomic } from '../files/fs-safe.js';
import { checkRestorable } from '../postgres/load.js';
import { authenticDumps, latestUsable, readChecksumFile, type Latest, type Skipped, type TrustedDump } from './authentic.js';
import { listDumps, type Catalog } from './catalog.js';
import { openKeyring, type Keyring, type TagKeys } from './keyring.js';
import { fetchNasCopy, newestNasCopy, sealedForNas, type FetchOptions, type NasCopy, type NasUpload } from './nas-copy.js';
import { copyIntoTemp, importFromNas, linkIfAbsent } from './nas-import.js';
import { privateCopy, privateCopyDir } from './private-copy.js';
import { locate, resolveDump } from './resolve.js';
import { authenticRows, digestsFileName, readDigestsFile, removeDigestsFile, shrinkOf, writeDigestsFile, writeRows, type RecordedRows } from './rows.js';
import { parseTags, TAG_SUFFIX, tagDump, tagFileName, verifyDumpTag } from './tags.js';

// The dump store: which dumps are ours and how that is proven. Everything that reads or writes a
// dump's trust goes through it: its .sha256, its tag (<dump>.hmac, made with the worker's key), its
// recorded row counts and digests, the private copy a load reads, a copy taken back from the NAS.
// A dump's folder follows from its name (restore points in backup.dir/restore-points, the rest in
// backup.dir); the key is read once, on first use.

export { futureStamped, readChecksumFile, type Latest, type Skipped, type TrustedDump } from './authentic.js';
export type { Catalog, CatalogEntry } from './catalog.js';
export { digestsFileName, rowFacts, type RecordedRows } from './rows.js';
export { trustedSetup } from './setup.js';
export { tagFileName } from './tags.js';
export type { NasCopy, NasUpload } from './nas-copy.js';
/** The wrapped keyring as it goes to the NAS (OffsiteSync keeps it there up to date). */
export { envelopeForNas } from './recovery.js';
/** The key as it is on disk, for who derives tokens from it without a store (the CLI's run authorization). */
export { readKey } from './key.js';
export { keyId, openKeyring, type Keyring, type TagKeys } from './keyring.js';

export interface DumpStore {
  /** The worker's current key, read on first use and kept: run authorization (adapters/run-auth) derives its tokens from it too. */
  key(): Promise<Buffer>;
  /** Every key this host holds (current and retired), with the age identities and the library repository's password. */
  keyring(): Promise<Keyring>;
  /** The dump tags (`dump <hex>`) beside the dumps and restore points here: what the keys vouched for, at a rotation. */
  localDumpTags(): Promise<string[]>;
  /** The folder of a kind of dump: backup.dir, or backup.dir/restore-points. */
  dir(kind?: DumpKind): string;
  /** Everything a restore can load, wherever it is (`immich-backup dumps`). */
  list(nowMs?: number): Promise<Catalog>;
  /** Our dumps (or restore points) whose tag verifies, oldest first, and what was passed over with why. */
  authentic(kind?: DumpKind): Promise<{ dumps: TrustedDump[]; skipped: Skipped[] }>;
  /** The newest authentic dump, not from the future, not flagged (with needRows: with authentic row counts). */
  latest(options?: { nowMs?: number; needRows?: boolean }): Promise<Latest>;
  /** Throws UnauthenticatedDumpError (its message ending with `consequence`) unless the dump's tag vouches for this sha256. */
  verify(file: string, sha256: string, consequence?: string, dir?: string): Promise<void>;
  /** The row counts recorded beside a dump, when their tag verifies. */
  rows(file: string, dir?: string): Promise<RecordedRows | undefined>;
  /**
   * Records a dump's row counts (atomically, tagged) with the digests its writer took (on a retry,
   * those already recorded), flagged when `compare` finds them shrunk against the newest earlier
   * dump with authentic counts. Returns the flag and the digests (none: they went missing).
   */
  recordRows(file: string, counts: { tables: RowCounts; immichVersion?: string }, options: { compare: boolean; dir?: string }): Promise<{ shrink?: string; digests?: TableDigests }>;
  /**
   * The dump writer's last step: the digests (when given) and the .sha256 beside the written
   * temporary file, then the file under its final name (a link: nothing is ever replaced).
   */
  publish(dir: string, name: string, temp: string, sha256: string, digests?: TableDigests): Promise<void>;
  /** Validated: from now on the dump is ours, as its tag says to every reader. */
  seal(file: string, sha256: string, dir?: string): Promise<void>;
  /**
   * Vouches for a dump in backup.dir that has no valid tag: checked in full first (`checking` is
   * called before). `from: 'offsite'`: the NAS copy, fetched and decrypted, checked in full, and
   * put into backup.dir as a dump of ours (never replacing a local file).
   */
  adopt(file: string, checking?: () => void, options?: { from?: 'local' | 'offsite' }): Promise<VerifiedDump>;
  /** Digests of a dump that is no backup: nothing will compare them. */
  dropDigests(file: string, dir?: string): Promise<void>;
  /**
   * A dump that is no backup (it failed validation, or changed since): it, its .sha256 and its tag
   * move into rejected/ beside it (kept for a look, never pruned or loaded as ours), its digests are
   * dropped. Returns that folder.
   */
  setAside(file: string, dir?: string): Promise<string>;
  /** The folder private copies are made in (beside the key, the worker's own): checked, made if missing. */
  checkCopyDir(): Promise<string>;
  /** The verified bytes of a dump, copied into an unlinked private file (see private-copy.ts). */
  privateCopy(path: string, file: string, sha256: string, step: string): Promise<FileHandle>;
  /** A dump fetched from the NAS into backup.dir, verified in full, never replacing a local file. */
  importFromNas(file: string): Promise<ResolvedDump>;
  /**
   * The NAS copy of a dump in a private folder (beside the key): fetched, its ciphertext checked
   * against its .age.sha256, decrypted, its tag verified, checked in full; with its authentic row
   * counts. dispose() removes it. (A plain copy from before encryption is read too.)
   */
  fetchNasCopy(file: string, options?: FetchOptions): Promise<NasCopy>;
  /** The newest encrypted copy on the NAS by name, never one stamped in the future, preferring those tagged with a key this host holds. */
  newestNasCopy(nowMs?: number): Promise<string | undefined>;
  /** What goes to the NAS for a verified dump: encrypted (age, the current key), its row counts, tag and ciphertext checksum, in a private folder. */
  sealedForNas(file: string, dir?: string): Promise<NasUpload>;
  /** Which dump a restore of `dump` (a name, or "latest") loads, from where (resolve.ts). */
  resolve(input: ResolveDumpInput): Promise<ResolvedDump>;
  /** Where a dump of that name and origin is: from the name alone, never a path given by anyone. */
  locate(file: string, origin: ResolvedDump['origin']): Pick<ResolvedDump, 'file' | 'path' | 'format' | 'origin'>;
  /** A dump and the files beside it: its tag and checksum first (without them it no longer counts as ours), the dump last. */
  remove(file: string, dir?: string): Promise<void>;
}

const noLogger = { info: () => undefined, warn: () => undefined, error: () => undefined } as unknown as Logger;

export function openDumpStore(config: Config, logger: Logger = noLogger): DumpStore {
  const backupDir = config.backup.dir;
  const pointsDir = join(backupDir, RESTORE_POINTS_DIR);
  const keyFile = config.security.keyFile;
  // The keyring is read once per process and again only when a rotation or a recovery replaced it
  // (keyring.ts); a key that cannot be read is asked for again next time (it may be fixed meanwhile).
  const keys = () => openKeyring(keyFile);
  const key = async () => (await keys()).current.key;
  // Who writes (the dump writer, validation) makes the key on first use, as the worker's start does.
  const writingKeys = () => openKeyring(keyFile, { create: true });
  const dirOf = (file: string) => (isRestorePointName(file) ? pointsDir : backupDir);

  const store: DumpStore = {
    key,
    keyring: keys,

    async localDumpTags() {
      const found: string[] = [];
      for (const dir of [backupDir, pointsDir]) {
        for (const name of (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith(TAG_SUFFIX))) {
          const dump = parseTags((await readRegular(join(dir, name), 4096))?.toString('utf8') ?? '').dump;
          if (dump) found.push(dump);
        }
      }
      return found;
    },
    dir: (kind = 'backup') => (kind === 'restore-point' ? pointsDir : backupDir),
    list: (nowMs = Date.now()) => listDumps(config, keys, nowMs),

    async authentic(kind = 'backup') {
      const k = await keys();
      return kind === 'restore-point' ? authenticDumps(pointsDir, k, isRestorePointName) : authenticDumps(backupDir, k);
    },

    async latest({ nowMs = Date.now(), needRows = false } = {}) {
      return latestUsable(backupDir, await keys(), nowMs, config.backup.maxFutureMinutes, needRows);
    },

    async verify(file, sha256, consequence, dir = dirOf(file)) {
      await verifyDumpTag(await keys(), dir, file, sha256, consequence);
    },

    async rows(file, dir = dirOf(file)) {
      return authenticRows(dir, file, await keys());
    },

    async recordRows(file, { tables, immichVersion }, { compare, dir = dirOf(file) }) {
      const k = await keys();
      // Compared with the dump before it: a database that lost its data still dumps "fine".
      const shrink = compare ? await shrinkAgainstPrevious(dir, file, tables, k) : undefined;
      // The digests the dump writer took from the dump's stream; on a retry after they were moved
      // in here, the ones already in the authentic .rows.json.
      const digests = (await readDigestsFile(k, dir, file)) ?? (await authenticRows(dir, file, k))?.digests;
      await writeRows(k, dir, file, { tables, ...(immichVersion ? { immichVersion } : {}), ...(shrink ? { shrink } : {}), ...(digests ? { digests } : {}) });
      await removeDigestsFile(dir, file);
      return { ...(shrink ? { shrink } : {}), ...(digests ? { digests } : {}) };
    },

    async publish(dir, name, temp, sha256, digests) {
      const finalPath = join(dir, name);
      try {
        // Digests and checksum first, then the dump: a dump under its final name always has its .sha256
        // beside it. link, not rename: nothing under the final name is ever replaced.
        if (digests) await writeDigestsFile(await writingKeys(), dir, name, sha256, digests);
        await writeFileAtomic(join(dir, checksumFileName(name)), `${sha256}  ${name}\n`);
        await link(temp, finalPath);
        await rm(temp);
        await fsyncDir(dir);
      } catch (err) {
        await rm(temp, { force: true });
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new DumpNameTakenError(`${finalPath} appeared while this dump was written: nothing was replaced`);
        throw diskError(err, dir);
      }
    },

    async seal(file, sha256, dir = dirOf(file)) {
      await tagDump(await writingKeys(), dir, file, sha256);
    },

    async adopt(file, checking, { from = 'local' } = {}) {
      if (!isDumpName(file)) throw new ConfigError(`${JSON.stringify(file)} is not a dump name (${DUMP_NAME_HINT}): give a file's name in ${backupDir}, not a path`);
      if (from === 'offsite') return adoptNasCopy(file, checking);
      const k = await keys();
      const path = join(backupDir, file);
      const st = await lstat(path).catch(() => undefined);
      if (!st?.isFile()) throw new DumpNotFoundError(`${path} is ${st ? 'not a regular file (never followed)' : 'missing'}: expected a dump file in ${backupDir}; nothing adopted`);
      checking?.();
      const verified = await checkRestorable({ file, path, format: 'cluster' });
      const recorded = await readChecksumFile(join(backupDir, checksumFileName(file)));
      if (recorded && recorded !== verified.sha256) throw new ChecksumMismatchError(`${file} hashes to ${verified.sha256} but its .sha256 records ${recorded}: it changed after it was written; nothing adopted`);
      // Never through whatever sits under that name (a symlink planted there): created afresh, or refused.
      if (!recorded) await writeFile(join(backupDir, checksumFileName(file)), `${verified.sha256}  ${file}\n`, { mode: 0o600, flag: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW });
      await tagDump(k, backupDir, file, verified.sha256);
      return verified;
    },

    async dropDigests(file, dir = dirOf(file)) {
      await removeDigestsFile(dir, file);
    },

    async setAside(file, dir = dirOf(file)) {
      const aside = join(dir, REJECTED_DIR);
      await ownDir(aside);
      await rename(join(dir, file), join(aside, file));
      for (const name of [checksumFileName(file), tagFileName(file)]) await rename(join(dir, name), join(aside, name)).catch(() => undefined);
      await removeDigestsFile(dir, file);
      return aside;
    },

    checkCopyDir: () => ownDir(privateCopyDir(keyFile)),
    privateCopy: (path, file, sha256, step) => privateCopy(path, file, privateCopyDir(keyFile), sha256, step),
    importFromNas: (file) => importFromNas(config, logger, (f) => fetchNasCopy(config, keys, f), file),
    fetchNasCopy: (file, options) => fetchNasCopy(config, keys, file, options),
    newestNasCopy: (nowMs) => newestNasCopy(config, keys, nowMs),
    sealedForNas: (file, dir = dirOf(file)) => sealedForNas(config, keys, dir, file, join(dir, file)),
    resolve: (input) => resolveDump(config, logger, store, input),
    locate: (file, origin) => locate(config, file, origin),

    async remove(file, dir = dirOf(file)) {
      for (const name of [tagFileName(file), checksumFileName(file), rowCountsFileName(file), digestsFileName(file), file]) await rm(join(dir, name), { force: true });
    },
  };

  /**
   * `adopt --from offsite`: the NAS copy checked in full without asking its tag, then put into
   * backup.dir (never over a local file) with its .sha256 and a tag of the current key.
   */
  async function adoptNasCopy(file: string, checking?: () => void): Promise<VerifiedDump> {
    const local = join(backupDir, file);
    if (await lstat(local).catch(() => undefined)) throw new DumpConflictError(`${local} exists: nothing adopted from the NAS (never replaced); adopt the local one (immich-backup adopt ${file}) or move it aside first`);
    checking?.();
    await ownDir(backupDir);
    const copy = await fetchNasCopy(config, keys, file, { vouch: false });
    const temps: string[] = [];
    try {
      const { verified } = copy;
      temps.push(await copyIntoTemp(copy.path, backupDir, file));
      await publishChecksum(file, verified.sha256);
      await tagDump(await writingKeys(), backupDir, file, verified.sha256);
      if (!(await linkIfAbsent(temps[0]!, local))) throw new DumpConflictError(`${file} appeared in ${backupDir} while it was fetched: nothing was replaced; try again`);
      await fsyncDir(backupDir);
      logger.info({ file, encrypted: copy.encrypted }, 'NAS copy adopted into the staging dir');
      return verified;
    } finally {
      await Promise.all(temps.map((t) => rm(t, { force: true })));
      await copy.dispose();
    }
  }

  /** A .sha256 created afresh (never through whatever sits under that name), or refused when one with another checksum is there. */
  async function publishChecksum(file: string, sha256: string): Promise<void> {
    const path = join(backupDir, checksumFileName(file));
    const recorded = await readChecksumFile(path);
    if (recorded === sha256) return;
    if (recorded) throw new ChecksumMismatchError(`${path} records ${recorded}, but the dump hashes to ${sha256}: nothing adopted; move it aside and try again`);
    await writeFile(path, `${sha256}  ${file}\n`, { mode: 0o600, flag: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW });
  }

  /** Why `tables` looks like lost data against the newest earlier dump with authentic row counts. */
  async function shrinkAgainstPrevious(dir: string, file: string, tables: RowCounts, k: TagKeys): Promise<string | undefined> {
    const { dumps } = await authenticDumps(dir, k);
    for (const earlier of dumps.filter((d) => d.file < file).reverse()) {
      const rows = await authenticRows(dir, earlier.file, k);
      if (rows) {
        const why = shrinkOf(rows.tables, tables, config.backup.assetDropAlarm);
        return why ? `against ${earlier.file}: ${why}` : undefined;
      }
    }
    return undefined;
  }

  return store;
}

/** Where private copies are made, for who must find that folder without a store (tests that plant a link there). */
export { privateCopyDir } from './private-copy.js';
