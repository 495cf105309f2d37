import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumFileName, expiredDumps, isDumpName, isRestorePointName, RESTORE_POINTS_DIR, rowCountsFileName } from '../src/dump-names.js';
import { PruneRefusedError } from '../src/errors.js';
import type { ActivityDeps } from './deps.js';
import type { PruneDumpsInput, PruneResult } from './types.js';

export function createPruneActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * Deletes our dumps (and their .sha256 and .rows.json) older than backup.retentionDays. Runs only after the
     * new dump validated; never deletes that dump nor the newest one, never a file whose name is
     * not ours.
     */
    async pruneDumps({ keep, nowMs }: PruneDumpsInput): Promise<PruneResult> {
      const dir = config.backup.dir;
      const dumps = (await readdir(dir)).filter(isDumpName).sort().reverse();
      if (!dumps.includes(keep)) {
        throw new PruneRefusedError(`refusing to prune: the dump just validated (${keep}) is not in ${dir}`);
      }
      const pruned = expiredDumps(dumps, nowMs, config.backup.retentionDays, keep);
      for (const name of pruned) {
        await rm(join(dir, checksumFileName(name)), { force: true });
        await rm(join(dir, rowCountsFileName(name)), { force: true });
        await rm(join(dir, name), { force: true });
      }
      const kept = dumps.filter((d) => !pruned.includes(d));
      if (pruned.length) logger.info({ pruned, retentionDays: config.backup.retentionDays }, 'old dumps pruned');
      return { pruned, kept };
    },

    /**
     * Keeps the newest restore.keepRestorePoints restore points, and always those in `keep` (the one
     * just taken, the one just restored); deletes the rest.
     */
    async pruneRestorePoints({ keep }: { keep: string[] }): Promise<PruneResult> {
      const dir = join(config.backup.dir, RESTORE_POINTS_DIR);
      const points = (await readdir(dir)).filter(isRestorePointName).sort().reverse();
      if (!keep.every((k) => points.includes(k))) throw new PruneRefusedError(`refusing to prune restore points: ${keep.join(', ')} not all in ${dir}`);
      const newest = points.filter((p) => !keep.includes(p)).slice(0, Math.max(0, config.restore.keepRestorePoints - keep.length));
      const kept = [...keep, ...newest];
      const pruned = points.filter((p) => !kept.includes(p));
      for (const name of pruned) {
        await rm(join(dir, checksumFileName(name)), { force: true });
        await rm(join(dir, rowCountsFileName(name)), { force: true });
        await rm(join(dir, name), { force: true });
      }
      if (pruned.length) logger.info({ pruned, keep: config.restore.keepRestorePoints }, 'old restore points pruned');
      return { pruned, kept };
    },
  };
}
