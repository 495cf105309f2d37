import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../src/config.js';
import { checksumFileName, expiredDumps, isDumpName, partialFileName } from '../src/dump-names.js';
import { ChecksumMismatchError, NotOurDumpError } from '../src/errors.js';
import { checksummedDumps, sha256OfFile } from './checksums.js';
import type { ActivityDeps } from './deps.js';
import { runCommand, withHeartbeats } from './run-command.js';
import { runRsync } from './rsync.js';
import { connectionOptions, nasLabel, runRemote, sshCommandString, sshError, sshTarget } from './ssh.js';
import type { CopiedDump, DumpToCopy, OffsitePlan, OffsiteSettings, PruneResult } from './types.js';

/** Our dump names on the NAS that have their .sha256 beside them (written last, after verification). */
export async function remoteDumpNames(offsite: Config['offsite']): Promise<string[]> {
  await runRemote(offsite, ['mkdir', '-p', '--', offsite.remoteDir], { label: 'ssh mkdir' });
  const { stdout } = await runRemote(offsite, ['ls', '-1A', '--', offsite.remoteDir], { label: 'ssh ls' });
  const names = new Set(stdout.split('\n').map((l) => l.trim()));
  return [...names].filter((n) => isDumpName(n) && names.has(checksumFileName(n)));
}

export function createOffsiteActivities({ config, logger }: ActivityDeps) {
  const offsite = config.offsite;
  const remotePath = (name: string) => `${offsite.remoteDir}/${name}`;


  /** Copies a local file to the NAS under `.<name>.partial`: never visible under its final name while incomplete. */
  async function copyToPartial(localPath: string, name: string): Promise<string> {
    const target = remotePath(partialFileName(name));
    try {
      if (offsite.method === 'rsync') {
        const limit = offsite.bwLimitKiB ? [`--bwlimit=${offsite.bwLimitKiB}`] : [];
        await runRsync(['-t', '--chmod=F600', '--partial-dir=.rsync-partial', ...limit, '-e', sshCommandString(offsite), localPath, `${sshTarget(offsite)}:${target}`], { step: `uploading ${name}` });
      } else {
        const started = Date.now();
        await runCommand('scp', ['-q', '-P', String(offsite.port), ...connectionOptions(offsite), localPath, `${sshTarget(offsite)}:${target}`], {
          label: 'scp',
          progress: () => ({ step: `uploading ${name}`, elapsedSeconds: Math.round((Date.now() - started) / 1000) }),
        });
      }
    } catch (err) {
      throw sshError(err, offsite);
    }
    return target;
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

    /** Which validated local dumps (those with a .sha256) the NAS does not have yet. */
    async planOffsiteSync(): Promise<OffsitePlan> {
      const dir = config.backup.dir;
      const local = (await readdir(dir).catch(() => [] as string[])).filter(isDumpName).sort();
      const checksummed = await checksummedDumps(dir);
      for (const file of local) if (!checksummed.some((d) => d.file === file)) logger.warn({ file }, 'local dump has no checksum file: not validated, not copied offsite');
      const present = new Set(await remoteDumpNames(offsite));
      return { toCopy: checksummed.filter((d) => !present.has(d.file)), alreadyOffsite: local.filter((f) => present.has(f)) };
    },

    /**
     * Uploads one dump and its .sha256 under temporary names, checks the sha256 the NAS computes
     * against the local one, and only then renames both into place. A mismatch removes the remote
     * copy and fails the attempt, so the retry uploads it afresh.
     */
    async uploadDump({ file, sha256 }: DumpToCopy): Promise<CopiedDump> {
      if (!isDumpName(file)) throw new NotOurDumpError(`refusing to upload ${JSON.stringify(file)}: not a dump name`);
      const local = join(config.backup.dir, file);
      if ((await withHeartbeats(sha256OfFile(local), () => ({ step: `checking ${file} before upload` }))) !== sha256) {
        throw new ChecksumMismatchError(`local dump ${file} no longer matches its ${checksumFileName(file)}: not uploading a damaged dump`);
      }
      const partialDump = await copyToPartial(local, file);
      const { stdout } = await runRemote(offsite, ['sha256sum', '--', partialDump], { label: 'ssh sha256sum' });
      const remote = stdout.trim().split(/\s+/)[0];
      if (remote !== sha256) {
        await runRemote(offsite, ['rm', '-f', '--', partialDump], { label: 'ssh rm' });
        throw new ChecksumMismatchError(`the NAS copy of ${file} has sha256 ${remote}, expected ${sha256}: removed it; the retry uploads it again`);
      }
      const partialSum = await copyToPartial(join(config.backup.dir, checksumFileName(file)), checksumFileName(file));
      // The dump first, its checksum last: a .sha256 on the NAS means a verified dump beside it.
      await runRemote(offsite, ['mv', '-f', '--', partialDump, remotePath(file)], { label: 'ssh mv' });
      await runRemote(offsite, ['mv', '-f', '--', partialSum, remotePath(checksumFileName(file))], { label: 'ssh mv' });
      const { size } = await stat(local);
      logger.info({ file, bytes: size, destination: nasLabel(offsite) }, 'dump copied offsite and verified');
      return { file, bytes: size };
    },

    /** Deletes NAS dumps older than offsite.retentionDays; never the newest one there. */
    async pruneRemoteDumps({ nowMs }: { nowMs: number }): Promise<PruneResult> {
      const days = offsite.retentionDays;
      const dumps = (await remoteDumpNames(offsite)).sort().reverse();
      if (days === undefined || dumps.length === 0) return { pruned: [], kept: dumps };
      const pruned = expiredDumps(dumps, nowMs, days);
      for (const name of pruned) {
        // Checksum first: a dump without its .sha256 no longer counts as present.
        await runRemote(offsite, ['rm', '-f', '--', remotePath(checksumFileName(name)), remotePath(name)], { label: 'ssh rm' });
      }
      if (pruned.length) logger.info({ pruned, retentionDays: days }, 'old offsite dumps pruned');
      return { pruned, kept: dumps.filter((d) => !pruned.includes(d)) };
    },
  };
}
