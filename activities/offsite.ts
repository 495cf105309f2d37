import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { checksumFileName, encryptedChecksumFileName, encryptedFileName, encryptedRowsFileName, expiredDumps, isDumpName, NAS_KEYRING_DIR, partialFileName } from '../core/dump-names.js';
import { ChecksumMismatchError, NotOurDumpError, UnsafePathError } from '../core/errors.js';
import { formatBytes } from '../core/format.js';
import { sha256OfFile } from '../adapters/files/checksums.js';
import { openDumpStore, tagFileName } from '../adapters/dump-store/index.js';
import { planEnvelopes } from '../adapters/dump-store/recovery.js';
import { remoteEnvelopes } from '../adapters/nas/remote-keyring.js';
import type { ActivityDeps } from './deps.js';
import { remoteDumps, remoteTagKeys } from '../adapters/nas/remote-dumps.js';
import { awaitWithStallGuard, startCommand, withHeartbeats } from '../adapters/commands/run-command.js';
import { runRsync } from '../adapters/commands/rsync.js';
import { connectionOptions, nasLabel, runRemote, sshCommandString, sshError, sshTarget } from '../adapters/nas/ssh.js';
import type { CopiedDump, DumpToCopy, OffsitePlan, OffsiteSettings, PruneResult } from '../core/types.js';

/** rsync's --partial-dir for uploads, inside offsite.remoteDir: what an interrupted upload leaves. */
const RSYNC_PARTIAL_DIR = '.rsync-partial';

/** Bytes a process has read and written (/proc/PID/io): scp's progress, which it prints only to a terminal. */
function ioBytes(pid: number | undefined): number | undefined {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    return Number(/^rchar: (\d+)$/m.exec(io)?.[1] ?? NaN) + Number(/^wchar: (\d+)$/m.exec(io)?.[1] ?? NaN);
  } catch {
    return undefined;
  }
}


export function createOffsiteActivities({ config, logger }: ActivityDeps) {
  const store = openDumpStore(config, logger);
  const offsite = config.offsite;
  const remotePath = (name: string) => `${offsite.remoteDir}/${name}`;


  /**
   * Copies a local file to the NAS under `.<name>.partial`: never visible under its final name while
   * incomplete. An upload whose bytes stop moving for offsite.stallSeconds is stopped (StalledError).
   */
  async function copyToPartial(localPath: string, name: string): Promise<string> {
    // `name` may lie in a folder of remoteDir (keyring/…): the temporary name is beside it there.
    const slash = name.lastIndexOf('/');
    const target = remotePath(slash < 0 ? partialFileName(name) : `${name.slice(0, slash)}/${partialFileName(name.slice(slash + 1))}`);
    const stall = { what: `the upload of ${name} to ${nasLabel(offsite)}`, setting: 'offsite.stallSeconds', seconds: offsite.stallSeconds, advice: 'check the NAS (its disk and its ssh server)' };
    try {
      if (offsite.method === 'rsync') {
        const limit = offsite.bwLimitKiB ? [`--bwlimit=${offsite.bwLimitKiB}`] : [];
        // --timeout: rsync on the NAS gives up too when this side goes quiet, instead of waiting there forever.
        const args = ['-t', '--chmod=F600', `--partial-dir=${RSYNC_PARTIAL_DIR}`, `--timeout=${offsite.stallSeconds}`, ...limit, '-e', sshCommandString(offsite), localPath, `${sshTarget(offsite)}:${target}`];
        await runRsync(args, { step: `uploading ${name}`, stall });
      } else {
        const started = Date.now();
        const child = startCommand('scp', ['-q', '-P', String(offsite.port), ...connectionOptions(offsite), localPath, `${sshTarget(offsite)}:${target}`], { label: 'scp' });
        const guarded = awaitWithStallGuard(child, 'scp', { ...stall, position: () => ioBytes(child.pid) ?? Date.now(), where: () => `${formatBytes(ioBytes(child.pid) ?? 0)} read and written by scp` });
        await withHeartbeats(guarded.done, () => ({ step: `uploading ${name}`, elapsedSeconds: Math.round((Date.now() - started) / 1000), ...(guarded.idleSeconds() >= 5 ? { nothingMovedForSeconds: guarded.idleSeconds() } : {}) }));
      }
    } catch (err) {
      // A stall (rsync's own --timeout included) is already a StalledError, which sshError passes on.
      throw sshError(err, offsite);
    }
    return target;
  }

  /**
   * Removes what uploads of `names` may have left: our `.partial`s, rsync's temporary
   * `<partial>.XXXXXX` beside them, and rsync's partial dir. Best effort: a NAS that is down keeps
   * them until a later try, which replaces them.
   */
  async function removeLeftovers(names: readonly string[]): Promise<void> {
    const partials = names.map(partialFileName);
    // rsync's temporary name is the target's with a dot before (none added to a name that has one) and .XXXXXX after.
    const rsyncTemp = (n: string) => partials.some((p) => [`${p}.`, `.${p}.`].some((prefix) => n.startsWith(prefix) && /^[A-Za-z0-9]{6}$/.test(n.slice(prefix.length))));
    try {
      const { stdout } = await runRemote(offsite, ['ls', '-1A', '--', offsite.remoteDir], { label: 'ssh ls' });
      const leftovers = stdout.split('\n').map((l) => l.trim()).filter((n) => partials.includes(n) || n === RSYNC_PARTIAL_DIR || rsyncTemp(n));
      if (leftovers.length) await runRemote(offsite, ['rm', '-rf', '--', ...leftovers.map(remotePath)], { label: 'ssh rm' });
    } catch (err) {
      logger.warn({ files: names, reason: (err as Error).message }, 'could not remove a failed upload from the NAS; a later run replaces it');
    }
  }

  /**
   * A local dump that no longer matches its .sha256 goes into rejected/ (like a dump that failed
   * validation), with an alarm, and the others are still copied.
   */
  async function rejectLocal(file: string, reason: string): Promise<CopiedDump> {
    const aside = await store.setAside(file, config.backup.dir);
    logger.error({ file, reason, movedTo: aside }, 'local dump damaged: not copied offsite, moved aside');
    return { file, bytes: 0, rejected: `${reason}: moved to ${aside}` };
  }

  /** The sha256 the NAS computes of a file there. */
  async function remoteSha256(path: string): Promise<string> {
    const { stdout } = await runRemote(offsite, ['sha256sum', '--', path], { label: 'ssh sha256sum' });
    return stdout.trim().split(/\s+/)[0] ?? '';
  }

  /**
   * The dump encrypted (to the keyring's current recipient, in a private folder beside the key),
   * uploaded under a temporary name and its sha256 checked on the NAS; its row counts (when they
   * verify) and its tag beside it; then each renamed into place, the .age.sha256 last: on the NAS
   * a .age.sha256 means a verified copy beside it. The plain copy from before encryption, if
   * there is one, goes only then. Returns the ciphertext's size.
   */
  async function copyEncrypted(file: string): Promise<number> {
    const upload = await store.sealedForNas(file, config.backup.dir);
    try {
      await runRemote(offsite, ['mkdir', '-p', '--', offsite.remoteDir], { label: 'ssh mkdir' });
      const partialDump = await copyToPartial(upload.dump.path, upload.dump.name);
      const remote = await remoteSha256(partialDump);
      if (remote !== upload.dump.sha256) {
        throw new ChecksumMismatchError(`the NAS copy of ${file} (${upload.dump.name}) has sha256 ${remote}, expected ${upload.dump.sha256}: removed it; the retry uploads it again`);
      }
      const moves: [string, string][] = [[partialDump, upload.dump.name]];
      for (const f of upload.beside) moves.push([await copyToPartial(f.path, f.name), f.name]);
      for (const [from, to] of moves) await runRemote(offsite, ['mv', '-f', '--', from, remotePath(to)], { label: 'ssh mv' });
      return upload.dump.bytes;
    } finally {
      await upload.dispose();
    }
  }

  /** The plain copy of a dump from before encryption, removed: only once its encrypted copy is verified there. Checksum first. */
  async function removeLegacy(file: string): Promise<void> {
    await runRemote(offsite, ['rm', '-f', '--', remotePath(checksumFileName(file)), remotePath(file)], { label: 'ssh rm' });
    logger.info({ file, destination: nasLabel(offsite) }, 'plain NAS copy from before encryption removed: its encrypted copy is verified there');
  }

  /**
   * The keyring, wrapped by the recovery code (recovery.ts), at `<remoteDir>/keyring/<name>`: this
   * host's envelope goes up when the NAS lacks it as it is (under a temporary name, its sha256
   * checked there, renamed); envelopes this host wrote under an earlier code go only after that,
   * and only those the new one covers. A NAS envelope holding keys this host lacks stops the run
   * (planEnvelopes): nothing may replace the only copy of them.
   */
  async function uploadEnvelope(): Promise<void> {
    const plan = await planEnvelopes(config.security.keyFile, await remoteEnvelopes(offsite));
    if (plan.conflict) throw new UnsafePathError(plan.conflict);
    const dir = `${offsite.remoteDir}/${NAS_KEYRING_DIR}`;
    if (plan.upload) {
      const { name, text } = plan.upload;
      const sha256 = createHash('sha256').update(text).digest('hex');
      const work = await mkdtemp(join(await store.checkCopyDir(), 'keyring-'));
      try {
        await writeFile(join(work, name), text, { mode: 0o600 });
        await runRemote(offsite, ['mkdir', '-p', '--', dir], { label: 'ssh mkdir' });
        const partial = await copyToPartial(join(work, name), `${NAS_KEYRING_DIR}/${name}`);
        const remote = await remoteSha256(partial);
        if (remote !== sha256) throw new ChecksumMismatchError(`the keyring envelope uploaded to the NAS as ${partial} has sha256 ${remote}, expected ${sha256}: the retry uploads it again`);
        await runRemote(offsite, ['mv', '-f', '--', partial, `${dir}/${name}`], { label: 'ssh mv' });
        logger.info({ file: name, destination: nasLabel(offsite) }, 'wrapped keyring uploaded to the NAS');
      } catch (err) {
        await runRemote(offsite, ['rm', '-rf', '--', `${dir}/${partialFileName(name)}`, `${dir}/${RSYNC_PARTIAL_DIR}`], { label: 'ssh rm' }).catch(() => undefined);
        throw err;
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    }
    if (plan.remove.length) {
      await runRemote(offsite, ['rm', '-f', '--', ...plan.remove.map((n) => `${dir}/${n}`)], { label: 'ssh rm' });
      logger.info({ removed: plan.remove, destination: nasLabel(offsite) }, 'keyring envelopes under an earlier recovery code removed from the NAS: the current one covers them');
    }
  }

  return {
    async offsiteSettings(): Promise<OffsiteSettings> {
      return {
        retryWindowMs: offsite.retryWindowMinutes * 60_000,
        pruneRemote: offsite.retentionDays !== undefined,
        method: offsite.method,
        destination: nasLabel(offsite),
      };
    },

    /**
     * Which validated local dumps (those with a .sha256) the NAS does not have encrypted yet, newest
     * first: the one that matters most goes first. On the way: the wrapped keyring goes to the NAS
     * when it lacks it or holds an older one. A dump whose plain copy from before encryption is
     * there is uploaded (again, if an encrypted copy is beside it), and the plain copy goes right
     * after that verified upload; a plain copy without a local dump stays (reported).
     */
    async planOffsiteSync(): Promise<OffsitePlan> {
      const dir = config.backup.dir;
      const local = (await readdir(dir).catch(() => [] as string[])).filter(isDumpName).sort();
      // Only ours: regular files whose provenance tag verifies with the worker's key.
      const { dumps: checksummed, skipped } = await store.authentic();
      for (const s of skipped) logger.error({ file: s.file, reason: s.reason }, 'not copied offsite');
      for (const file of local) if (!checksummed.some((d) => d.file === file) && !skipped.some((s) => s.file === file)) logger.warn({ file }, 'local dump has no checksum file: not validated, not copied offsite');
      await uploadEnvelope();
      const remote = await remoteDumps(offsite);
      const present = new Set(remote.filter((d) => d.encrypted).map((d) => d.file));
      for (const d of remote.filter((r) => r.legacy)) {
        // The plain copy goes only right after this run's own verified upload (uploadDump): an
        // <X>.age beside it is not vouched for by its .age.sha256 (whoever writes the NAS writes
        // both) nor by the tag (it vouches for the plaintext, which the plain copy's tag does too).
        // So the dump is uploaded again, replacing that .age.
        if (checksummed.some((c) => c.file === d.file)) present.delete(d.file);
        else if (!checksummed.some((c) => c.file === d.file)) logger.warn({ file: d.file, destination: nasLabel(offsite) }, 'plain NAS copy from before encryption, with no local dump to encrypt: kept as it is (readable by whoever reads the NAS); it goes when offsite.retentionDays prunes it');
      }
      const toCopy = checksummed.filter((d) => !present.has(d.file)).sort((a, b) => (a.file < b.file ? 1 : a.file > b.file ? -1 : 0));
      return { toCopy, alreadyOffsite: local.filter((f) => present.has(f)) };
    },

    /**
     * Encrypts one dump and uploads it under a temporary name, checks the sha256 the NAS computes
     * against the ciphertext's, and only then renames it into place with its tag, row counts and
     * .age.sha256 (last). A mismatch removes the remote copy and fails the attempt, so the retry
     * uploads it afresh. A local dump that no longer matches its own .sha256 is not uploaded: it
     * is moved aside and reported (`rejected`). A plain copy from before encryption goes once the
     * encrypted one is in place.
     */
    async uploadDump({ file, sha256 }: DumpToCopy): Promise<CopiedDump> {
      if (!isDumpName(file)) throw new NotOurDumpError(`refusing to upload ${JSON.stringify(file)}: not a dump name`);
      const local = join(config.backup.dir, file);
      // Tag first (cheap): a dump that is not ours never leaves; then the bytes against the tagged sha256.
      await store.verify(file, sha256, 'not uploading it', config.backup.dir);
      const actual = await withHeartbeats(sha256OfFile(local), () => ({ step: `checking ${file} before upload` }));
      if (actual !== sha256) return rejectLocal(file, `local dump ${file} has sha256 ${actual}, but its ${checksumFileName(file)} records ${sha256}: damaged after validation, not uploaded`);
      let bytes: number;
      try {
        bytes = await copyEncrypted(file);
      } catch (err) {
        // Nothing half-done stays on the NAS: a full NAS is not left fuller, a reader never sees a part.
        await removeLeftovers([encryptedFileName(file), encryptedRowsFileName(file), encryptedChecksumFileName(file), tagFileName(file)]);
        throw err;
      }
      if ((await remoteDumps(offsite)).some((d) => d.file === file && d.legacy)) await removeLegacy(file);
      logger.info({ file, bytes, destination: nasLabel(offsite) }, 'dump encrypted, copied offsite and verified');
      return { file, bytes };
    },

    /**
     * Deletes NAS dumps older than offsite.retentionDays, never the newest backup.keepMin there:
     * a clock that jumped ahead must not empty the NAS. Only dumps of this host's keys (current or
     * retired; a tag from before key fingerprints counts as ours) are pruned, and keepMin counts
     * among those: on a new host whose keys are not recovered yet, the old host's dumps are the
     * only copies of its data, and its own new dumps must not push them out.
     */
    async pruneRemoteDumps({ nowMs }: { nowMs: number }): Promise<PruneResult> {
      const days = offsite.retentionDays;
      const remote = await remoteDumps(offsite);
      const dumps = remote.map((d) => d.file).sort().reverse();
      if (days === undefined || dumps.length === 0) return { pruned: [], kept: dumps };
      const named = await remoteTagKeys(offsite, remote);
      // Without a readable keyring no key is held: every dump whose tag names one is kept.
      const held = new Set(named.size ? ((await store.keyring().catch(() => undefined))?.all.map((k) => k.id) ?? []) : []);
      const foreign = dumps.filter((d) => named.has(d) && !held.has(named.get(d)!));
      if (foreign.length) {
        const keys = [...new Set(foreign.map((d) => named.get(d)!))];
        logger.warn({ keys, files: foreign.length, destination: nasLabel(offsite) }, `NAS dumps tagged with key(s) ${keys.join(', ')}, which this host does not hold: never pruned here; if they are a former host's, run immich-backup recover (with its recovery code) to take its keys back`);
      }
      const pruned = expiredDumps(dumps.filter((d) => !foreign.includes(d)), nowMs, days, undefined, config.backup.keepMin);
      for (const name of pruned) {
        // Checksums first: a dump without its .age.sha256 (or a plain one without its .sha256) no longer counts as present.
        const files = [encryptedChecksumFileName(name), checksumFileName(name), tagFileName(name), encryptedRowsFileName(name), encryptedFileName(name), name];
        await runRemote(offsite, ['rm', '-f', '--', ...files.map(remotePath)], { label: 'ssh rm' });
      }
      if (pruned.length) logger.info({ pruned, retentionDays: days }, 'old offsite dumps pruned');
      return { pruned, kept: dumps.filter((d) => !pruned.includes(d)) };
    },
  };
}
