import { lstat, mkdtemp, rm, stat, statfs, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { VerifiedDump } from '../../core/types.js';
import { checksumFileName, encryptedChecksumFileName, encryptedFileName, encryptedRowsFileName, isDumpName, rowCountsFileName } from '../../core/dump-names.js';
import { ChecksumMismatchError, DumpNotFoundError, NoSpaceError, NotOurDumpError, UnauthenticatedDumpError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { runRsync } from '../commands/rsync.js';
import { withHeartbeats } from '../commands/run-command.js';
import { sha256OfFile } from '../files/checksums.js';
import { ownDir, readRegular } from '../files/fs-safe.js';
import { remoteDumps, remoteDumpsSized, remoteTagKeys, type RemoteDump } from '../nas/remote-dumps.js';
import { nasLabel, sshCommandString, sshError, sshTarget } from '../nas/ssh.js';
import { checkRestorable } from '../postgres/load.js';
import { decryptFile, encryptFile } from './age-files.js';
import { futureStamped, readChecksumFile } from './authentic.js';
import type { Keyring } from './keyring.js';
import { privateCopyDir } from './private-copy.js';
import { authenticRows, type RecordedRows } from './rows.js';
import { fingerprints, parseTags, rowsAuthentic, tagFileName, tagProblem } from './tags.js';

// A dump's copy on the NAS, taken back: fetched into a folder of its own in the private copy folder
// (beside the key, owner-only, never backup.dir, which others may write), the ciphertext checked
// against its .age.sha256, decrypted with the keyring's identities, the plaintext's sha256 checked
// against the dump's tag, and the dump checked in full (stream, completion marker, strict filter).
// Only then is its path handed out. A plain copy from before encryption is read the same way,
// without the decryption.

/** A NAS copy, verified, in a private folder; dispose() removes it. */
export interface NasCopy {
  file: string;
  /** The plaintext dump (compressed SQL), verified in full. */
  path: string;
  /** The plaintext's sha256: what the dump's tag vouches for. */
  sha256: string;
  /** Its row counts and digests, when they were uploaded and their tag verifies. */
  rows?: RecordedRows;
  /** What the full check found (size, databases). */
  verified: VerifiedDump;
  /** Whether the copy on the NAS was the encrypted one (false: a plain copy from before encryption). */
  encrypted: boolean;
  /** The tag file's text as fetched (what an import keeps beside the dump). */
  tagText: string;
  /** The decrypted `<X>.rows.json` bytes, when their tag verifies (what an import keeps beside the dump). */
  rowsPath?: string;
  dispose(): Promise<void>;
}

export interface FetchOptions {
  /**
   * false: the copy need not carry a tag that verifies (`adopt --from offsite`, which vouches for it
   * after the full check); it must still decrypt, match its checksum file and pass the full check.
   */
  vouch?: boolean;
}

const NOTHING_CHANGED = 'not restoring it; nothing was changed';

/** The adopt command a refusal of this NAS copy offers. */
export const adoptFromNas = (file: string) => `immich-backup adopt --from offsite ${file}`;

/** Fetches `names` from the NAS into `dir` in one rsync; a name it could not fetch (or larger than maxBytes) is simply absent there. */
async function fetchFiles(offsite: Config['offsite'], names: readonly string[], dir: string, file: string, maxBytes: number): Promise<void> {
  const sources = names.map((n) => `${sshTarget(offsite)}:${offsite.remoteDir}/${n}`);
  try {
    await runRsync(['-t', '--chmod=F600', `--max-size=${maxBytes}`, '-e', sshCommandString(offsite), ...sources, `${dir}/`], { step: `fetching ${file} from the NAS` });
  } catch (err) {
    throw sshError(err, offsite);
  }
}

/** What is kept free on the filesystem of the private copy folder: 10% of it, at most 1 GiB. */
const keptFree = (total: number) => Math.min(2 ** 30, Math.floor(total / 10));

/**
 * The largest file the copy of `remote` may fetch (rsync's --max-size, for a file that grows while
 * it is fetched), after checking that what it takes fits in the private copy folder's filesystem
 * with room to spare: a file of any size on the NAS (planted, or damaged) must not fill the disk
 * the worker runs on. An encrypted copy takes twice its size while it is decrypted beside itself.
 */
async function roomFor(config: Config, remote: RemoteDump, sizes: ReadonlyMap<string, number>, dir: string): Promise<number> {
  const { file } = remote;
  const name = remote.encrypted ? encryptedFileName(file) : file;
  const size = (n: string) => sizes.get(n) ?? 0;
  const bytes = size(name);
  const beside = [remote.encrypted ? encryptedChecksumFileName(file) : checksumFileName(file), tagFileName(file), ...(remote.encrypted && remote.rows ? [encryptedRowsFileName(file)] : [])].map(size);
  const needed = (remote.encrypted ? 2 * bytes : bytes) + 2 * beside.reduce((a, b) => a + b, 0);
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  const room = free - keptFree(fs.blocks * fs.bsize);
  if (needed > room) {
    throw new NoSpaceError(
      `refusing to fetch the NAS copy of ${file}: ${name} on the NAS ${nasLabel(config.offsite)} is ${formatBytes(bytes)} (${formatBytes(needed)} needed to fetch${remote.encrypted ? ' and decrypt' : ''} it), but the filesystem of ${dir} has ${formatBytes(free)} free and keeps ${formatBytes(free - Math.max(room, 0))} of it: free space there, or check that file on the NAS (one this large may be planted or damaged); nothing was fetched`,
    );
  }
  return Math.max(1, bytes, ...beside);
}

/**
 * The NAS copy of `file`, fetched, decrypted and verified (see the top of this file). The copy's
 * folder is removed on any failure; on success the caller disposes of it.
 */
export async function fetchNasCopy(config: Config, keys: () => Promise<Keyring>, file: string, { vouch = true }: FetchOptions = {}): Promise<NasCopy> {
  if (!isDumpName(file)) throw new NotOurDumpError(`refusing to fetch ${JSON.stringify(file)} from the NAS: not a dump name`);
  const offsite = config.offsite;
  const ring = await keys();
  const { dumps, sizes } = await remoteDumpsSized(offsite);
  const remote = dumps.find((d) => d.file === file);
  if (!remote) throw new DumpNotFoundError(`the NAS ${nasLabel(offsite)} has no copy of ${file} (neither ${encryptedFileName(file)} with its ${encryptedChecksumFileName(file)} nor a plain one); nothing was changed`);
  const dir = await ownDir(privateCopyDir(config.security.keyFile));
  const maxBytes = await roomFor(config, remote, sizes, dir);
  const work = await mkdtemp(join(dir, 'nas-'));
  try {
    return await verifiedCopy(config, ring, remote, work, vouch, maxBytes);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}

async function verifiedCopy(config: Config, ring: Keyring, remote: RemoteDump, work: string, vouch: boolean, maxBytes: number): Promise<NasCopy> {
  const { file } = remote;
  const where = `on the NAS ${nasLabel(config.offsite)}`;
  const at = (name: string) => join(work, name);
  const encrypted = remote.encrypted;
  const names = encrypted
    ? [encryptedFileName(file), encryptedChecksumFileName(file), ...(remote.tagged ? [tagFileName(file)] : []), ...(remote.rows ? [encryptedRowsFileName(file)] : [])]
    : [file, checksumFileName(file), ...(remote.tagged ? [tagFileName(file)] : [])];
  await fetchFiles(config.offsite, names, work, file, maxBytes);
  // rsync skips a file that grew past --max-size since the listing: nothing to read.
  if (!(await lstat(at(names[0]!)).catch(() => undefined))?.isFile()) {
    throw new NoSpaceError(`the NAS copy of ${file} (${names[0]}) was not fetched: it is gone from the NAS or grew past the ${formatBytes(maxBytes)} it had when listed; ${NOTHING_CHANGED}`);
  }
  const tagText = (await readRegular(at(tagFileName(file)), 4096))?.toString('utf8') ?? '';
  const refuse = (problem: string) => new UnauthenticatedDumpError(`${problem}; ${NOTHING_CHANGED}`);
  let sha256: string;
  if (encrypted) {
    const recorded = await readChecksumFile(at(encryptedChecksumFileName(file)));
    // Before anything is decrypted: a tag that names a key this host does not hold says so, with
    // both fingerprints (age could only say that no identity matched).
    const tags = parseTags(tagText);
    if (vouch && (!tags.dump || (tags.key && !ring.all.some((k) => k.id === tags.key)))) throw refuse(tagProblem(ring, file, where, tagText, '', adoptFromNas(file))!);
    const actual = await withHeartbeats(sha256OfFile(at(encryptedFileName(file))), () => ({ step: `checking the NAS copy of ${file}` }));
    if (actual !== recorded) {
      throw new ChecksumMismatchError(`the NAS copy of ${file} (${encryptedFileName(file)}) has sha256 ${actual}, but its ${encryptedChecksumFileName(file)} records ${recorded || 'nothing'}: altered or damaged on the NAS; ${NOTHING_CHANGED}`);
    }
    const noKey = `its tag names key ${tags.key ?? '(none)'}, this host holds ${fingerprints(ring)}; put that key back (security.keyFile) or recover the keys with the recovery code (immich-backup recover)`;
    const plain = await decryptFile(ring.identitiesFile, at(encryptedFileName(file)), at(file), `decrypting the NAS copy of ${file}`, { name: `the NAS copy of ${file}`, noKey, consequence: NOTHING_CHANGED });
    await rm(at(encryptedFileName(file)), { force: true });
    sha256 = plain.sha256;
  } else {
    sha256 = await readChecksumFile(at(checksumFileName(file)));
  }
  // The NAS is someone else's disk: the copy is ours only when its tag vouches for the plaintext.
  if (vouch) {
    const problem = tagProblem(ring, file, where, tagText, sha256, adoptFromNas(file));
    if (problem) throw refuse(problem);
  }
  // A plain copy's .sha256 is checked here against its bytes; an encrypted one's plaintext sha256 was taken while it was written.
  const checked = await checkRestorable({ file, path: at(file), format: 'cluster', ...(/^[0-9a-f]{64}$/.test(sha256) ? { checksum: sha256 } : {}) });
  let rows: RecordedRows | undefined;
  let rowsPath: string | undefined;
  if (encrypted && remote.rows && vouch) {
    // Row counts that do not decrypt or whose tag does not verify are left out, as beside a local dump.
    const decrypted = await decryptFile(ring.identitiesFile, at(encryptedRowsFileName(file)), at(rowCountsFileName(file)), `decrypting the row counts of ${file}`, { name: `the row counts of ${file}`, noKey: '', consequence: 'left out' }).then(
      () => true,
      () => false,
    );
    rows = decrypted ? await authenticRows(work, file, ring) : undefined;
    if (rows) rowsPath = at(rowCountsFileName(file));
  }
  return {
    file,
    path: at(file),
    sha256: checked.sha256,
    verified: checked,
    ...(rows ? { rows } : {}),
    encrypted,
    tagText,
    ...(rowsPath ? { rowsPath } : {}),
    dispose: () => rm(work, { recursive: true, force: true }),
  };
}

/**
 * The newest encrypted copy on the NAS by name, never one stamped in the future (a clock that ran
 * ahead), among those whose tag names a key this host holds: a newer file planted there under
 * another key does not hide the good copies from the drill. With none such, the newest of all (the
 * drill then says why it does not open).
 */
export async function newestNasCopy(config: Config, keys: () => Promise<Keyring>, nowMs = Date.now()): Promise<string | undefined> {
  const candidates = (await remoteDumps(config.offsite)).filter((d) => d.encrypted && !futureStamped(d.file, nowMs, config.backup.maxFutureMinutes));
  if (!candidates.length) return undefined;
  const held = new Set((await keys().catch(() => undefined))?.all.map((k) => k.id) ?? []);
  const named = held.size ? await remoteTagKeys(config.offsite, candidates) : new Map<string, string>();
  return (candidates.filter((d) => held.has(named.get(d.file) ?? '')).at(-1) ?? candidates.at(-1))!.file;
}

/** A dump made ready for the NAS in a private folder (sealedForNas); dispose() removes it. */
export interface NasUpload {
  /** `<X>.age`: the ciphertext, its sha256 (to check against the NAS's) and size. */
  dump: { name: string; path: string; sha256: string; bytes: number };
  /** What goes beside it, in the order they are renamed into place: the row counts (when authentic), the tag, the `<X>.age.sha256` last. */
  beside: { name: string; path: string }[];
  dispose(): Promise<void>;
}

/**
 * What goes to the NAS for the dump at `path` (verified by the caller): the dump encrypted to the
 * keyring's current recipient, its row counts encrypted the same way (only when their tag
 * verifies), its tag as it is, and the ciphertext's sha256, in a folder of the private copy folder.
 */
export async function sealedForNas(config: Config, keys: () => Promise<Keyring>, dir: string, file: string, path: string): Promise<NasUpload> {
  const ring = await keys();
  const work = await mkdtemp(join(await ownDir(privateCopyDir(config.security.keyFile)), 'upload-'));
  const at = (name: string) => join(work, name);
  try {
    const { sha256, bytes } = await encryptFile(ring.entry.ageRecipient, path, at(encryptedFileName(file)), `encrypting ${file}`);
    // The ciphertext carries the dump's time (rsync -t keeps it on the NAS): the NAS shows when each dump was made.
    const { atime, mtime } = await stat(path);
    await utimes(at(encryptedFileName(file)), atime, mtime);
    const beside: NasUpload['beside'] = [];
    // The row counts' bytes are read once, checked, and encrypted from the private copy: what is checked is what leaves.
    const rowsBytes = await readRegular(join(dir, rowCountsFileName(file)));
    if (rowsBytes && (await rowsAuthentic(ring, dir, file, rowsBytes))) {
      await writeFile(at(rowCountsFileName(file)), rowsBytes, { mode: 0o600 });
      await encryptFile(ring.entry.ageRecipient, at(rowCountsFileName(file)), at(encryptedRowsFileName(file)), `encrypting the row counts of ${file}`);
      beside.push({ name: encryptedRowsFileName(file), path: at(encryptedRowsFileName(file)) });
    }
    await writeFile(at(tagFileName(file)), (await readRegular(join(dir, tagFileName(file)), 4096)) ?? '', { mode: 0o600 });
    beside.push({ name: tagFileName(file), path: at(tagFileName(file)) });
    await writeFile(at(encryptedChecksumFileName(file)), `${sha256}  ${encryptedFileName(file)}\n`, { mode: 0o600 });
    beside.push({ name: encryptedChecksumFileName(file), path: at(encryptedChecksumFileName(file)) });
    return { dump: { name: encryptedFileName(file), path: at(encryptedFileName(file)), sha256, bytes }, beside, dispose: () => rm(work, { recursive: true, force: true }) };
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}
