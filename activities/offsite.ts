import { readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumFileName, expiredDumps, isDumpName, partialFileName } from '../core/dump-names.js';
import { ChecksumMismatchError, NotOurDumpError } from '../core/errors.js';
import { formatBytes } from '../core/format.js';
import { sha256OfFile } from '../adapters/files/checksums.js';
import { openDumpStore, tagFileName } from '../adapters/dump-store/index.js';
import type { ActivityDeps } from './deps.js';
import { remoteDumpNames } from '../adapters/nas/remote-dumps.js';
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
    const target = remotePath(partialFileName(name));
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

  /** Both files under temporary names, the dump's sha256 checked on the NAS, then both renamed into place. */
  async function copyVerified(local: string, file: string, sha256: string): Promise<void> {
    await runRemote(offsite, ['mkdir', '-p', '--', offsite.remoteDir], { label: 'ssh mkdir' });
    const partialDump = await copyToPartial(local, file);
    const { stdout } = await runRemote(offsite, ['sha256sum', '--', partialDump], { label: 'ssh sha256sum' });
    const remote = stdout.trim().split(/\s+/)[0];
    if (remote !== sha256) {
      throw new ChecksumMismatchError(`the NAS copy of ${file} has sha256 ${remote}, expected ${sha256}: removed it; the retry uploads it again`);
    }
    const partialSum = await copyToPartial(join(config.backup.dir, checksumFileName(file)), checksumFileName(file));
    // Its provenance tag goes along: a restore --from offsite takes the NAS copy only when it verifies.
    const partialTag = await copyToPartial(join(config.backup.dir, tagFileName(file)), tagFileName(file));
    // The dump first, its checksum last: a .sha256 on the NAS means a verified dump beside it.
    await runRemote(offsite, ['mv', '-f', '--', partialDump, remotePath(file)], { label: 'ssh mv' });
    await runRemote(offsite, ['mv', '-f', '--', partialTag, remotePath(tagFileName(file))], { label: 'ssh mv' });
    await runRemote(offsite, ['mv', '-f', '--', partialSum, remotePath(checksumFileName(file))], { label: 'ssh mv' });
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

    /** Which validated local dumps (those with a .sha256) the NAS does not have yet, newest first: the one that matters most goes first. */
    async planOffsiteSync(): Promise<OffsitePlan> {
      const dir = config.backup.dir;
      const local = (await readdir(dir).catch(() => [] as string[])).filter(isDumpName).sort();
      // Only ours: regular files whose provenance tag verifies with the worker's key.
      const { dumps: checksummed, skipped } = await store.authentic();
      for (const s of skipped) logger.error({ file: s.file, reason: s.reason }, 'not copied offsite');
      for (const file of local) if (!checksummed.some((d) => d.file === file) && !skipped.some((s) => s.file === file)) logger.warn({ file }, 'local dump has no checksum file: not validated, not copied offsite');
      const present = new Set(await remoteDumpNames(offsite));
      const toCopy = checksummed.filter((d) => !present.has(d.file)).sort((a, b) => (a.file < b.file ? 1 : a.file > b.file ? -1 : 0));
      return { toCopy, alreadyOffsite: local.filter((f) => present.has(f)) };
    },

    /**
     * Uploads one dump and its .sha256 under temporary names, checks the sha256 the NAS computes
     * against the local one, and only then renames both into place. A mismatch removes the remote
     * copy and fails the attempt, so the retry uploads it afresh. A local dump that no longer
     * matches its own .sha256 is not uploaded: it is moved aside and reported (`rejected`).
     */
    async uploadDump({ file, sha256 }: DumpToCopy): Promise<CopiedDump> {
      if (!isDumpName(file)) throw new NotOurDumpError(`refusing to upload ${JSON.stringify(file)}: not a dump name`);
      const local = join(config.backup.dir, file);
      // Tag first (cheap): a dump that is not ours never leaves; then the bytes against the tagged sha256.
      await store.verify(file, sha256, 'not uploading it', config.backup.dir);
      const actual = await withHeartbeats(sha256OfFile(local), () => ({ step: `checking ${file} before upload` }));
      if (actual !== sha256) return rejectLocal(file, `local dump ${file} has sha256 ${actual}, but its ${checksumFileName(file)} records ${sha256}: damaged after validation, not uploaded`);
      try {
        await copyVerified(local, file, sha256);
      } catch (err) {
        // Nothing half-done stays on the NAS: a full NAS is not left fuller, a reader never sees a part.
        await removeLeftovers([file, checksumFileName(file), tagFileName(file)]);
        throw err;
      }
      const { size } = await stat(local);
      logger.info({ file, bytes: size, destination: nasLabel(offsite) }, 'dump copied offsite and verified');
      return { file, bytes: size };
    },

    /**
     * Deletes NAS dumps older than offsite.retentionDays, never the newest backup.keepMin there:
     * a clock that jumped ahead must not empty the NAS.
     */
    async pruneRemoteDumps({ nowMs }: { nowMs: number }): Promise<PruneResult> {
      const days = offsite.retentionDays;
      const dumps = (await remoteDumpNames(offsite)).sort().reverse();
      if (days === undefined || dumps.length === 0) return { pruned: [], kept: dumps };
      const pruned = expiredDumps(dumps, nowMs, days, undefined, config.backup.keepMin);
      for (const name of pruned) {
        // Checksum first: a dump without its .sha256 no longer counts as present.
        await runRemote(offsite, ['rm', '-f', '--', remotePath(checksumFileName(name)), remotePath(tagFileName(name)), remotePath(name)], { label: 'ssh rm' });
      }
      if (pruned.length) logger.info({ pruned, retentionDays: days }, 'old offsite dumps pruned');
      return { pruned, kept: dumps.filter((d) => !pruned.includes(d)) };
    },
  };
}
