import { mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import type { VerifiedDump } from '../../core/types.js';
import { checksumFileName, encryptedChecksumFileName, encryptedFileName, encryptedRowsFileName, isDumpName, rowCountsFileName } from '../../core/dump-names.js';
import { ChecksumMismatchError, DumpNotFoundError, NotOurDumpError, UnauthenticatedDumpError } from '../../core/errors.js';
import { runRsync } from '../commands/rsync.js';
import { withHeartbeats } from '../commands/run-command.js';
import { sha256OfFile } from '../files/checksums.js';
import { ownDir, readRegular } from '../files/fs-safe.js';
import { remoteDumps, type RemoteDump } from '../nas/remote-dumps.js';
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

/** Fetches `names` from the NAS into `dir` in one rsync; a name it could not fetch is simply absent there. */
async function fetchFiles(offsite: Config['offsite'], names: readonly string[], dir: string, file: string): Promise<void> {
  const sources = names.map((n) => `${sshTarget(offsite)}:${offsite.remoteDir}/${n}`);
  try {
    await runRsync(['-t', '--chmod=F600', '-e', sshCommandString(offsite), ...sources, `${dir}/`], { step: `fetching ${file} from the NAS` });
  } catch (err) {
    throw sshError(err, offsite);
  }
}

/**
 * The NAS copy of `file`, fetched, decrypted and verified (see the top of this file). The copy's
 * folder is removed on any failure; on success the caller disposes of it.
 */
export async function fetchNasCopy(config: Config, keys: () => Promise<Keyring>, file: string, { vouch = true }: FetchOptions = {}): Promise<NasCopy> {
  if (!isDumpName(file)) throw new NotOurDumpError(`refusing to fetch ${JSON.stringify(file)} from the NAS: not a dump name`);
  const offsite = config.offsite;
  const ring = await keys();
  const remote = (await remoteDumps(offsite)).find((d) => d.file === file);
  if (!remote) throw new DumpNotFoundError(`the NAS ${nasLabel(offsite)} has no copy of ${file} (neither ${encryptedFileName(file)} with its ${encryptedChecksumFileName(file)} nor a plain one); nothing was changed`);
  const work = await mkdtemp(join(await ownDir(privateCopyDir(config.security.keyFile)), 'nas-'));
  try {
    return await verifiedCopy(config, ring, remote, work, vouch);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}

async function verifiedCopy(config: Config, ring: Keyring, remote: RemoteDump, work: string, vouch: boolean): Promise<NasCopy> {
  const { file } = remote;
  const where = `on the NAS ${nasLabel(config.offsite)}`;
  const at = (name: string) => join(work, name);
  const encrypted = remote.encrypted;
  const names = encrypted
    ? [encryptedFileName(file), encryptedChecksumFileName(file), ...(remote.tagged ? [tagFileName(file)] : []), ...(remote.rows ? [encryptedRowsFileName(file)] : [])]
    : [file, checksumFileName(file), ...(remote.tagged ? [tagFileName(file)] : [])];
  await fetchFiles(config.offsite, names, work, file);
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

/** The newest encrypted copy on the NAS by name, never one stamped in the future (a clock that ran ahead). */
export async function newestNasCopy(config: Config, nowMs = Date.now()): Promise<string | undefined> {
  return (await remoteDumps(config.offsite))
    .filter((d) => d.encrypted && !futureStamped(d.file, nowMs, config.backup.maxFutureMinutes))
    .map((d) => d.file)
    .at(-1);
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
