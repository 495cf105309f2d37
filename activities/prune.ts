import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumFileName, expiredDumps, isRestorePointName, RESTORE_POINTS_DIR, rowCountsFileName } from '../src/dump-names.js';
import { PruneRefusedError } from '../src/errors.js';
import { readKey, tagFileName } from '../src/provenance.js';
import { authenticDumps, authenticRows } from './trusted-dumps.js';
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
      const key = await readKey(config.security.keyFile);
      // Only our own: regular files whose tag verifies (a directory or symlink named like a dump is left alone).
      const { dumps: authentic, skipped } = await authenticDumps(dir, key);
      for (const s of skipped) logger.warn({ file: s.file, reason: s.reason }, 'not ours: left alone by pruning');
      const dumps = authentic.map((d) => d.file).reverse();
      if (!dumps.includes(keep)) {
        throw new PruneRefusedError(`refusing to prune: the dump just validated (${keep}) is not in ${dir}`);
      }
      // A flagged newest dump (its tables emptied, its assets dropped) may be the start of a loss:
      // nothing older goes until a dump that looks whole is the newest again.
      const newest = await authenticRows(dir, dumps[0]!, key);
      if (newest?.shrink) {
        logger.error({ newest: dumps[0], reason: newest.shrink }, 'newest dump flagged: nothing pruned');
        return { pruned: [], kept: dumps };
      }
      const pruned = expiredDumps(dumps, nowMs, config.backup.retentionDays, keep, config.backup.keepMin);
      for (const name of pruned) {
        await rm(join(dir, tagFileName(name)), { force: true });
        await rm(join(dir, checksumFileName(name)), { force: true });
        await rm(join(dir, rowCountsFileName(name)), { force: true });
        await rm(join(dir, name), { force: true });
      }
      const kept = dumps.filter((d) => !pruned.includes(d));
      if (pruned.length) logger.info({ pruned, retentionDays: config.backup.retentionDays, keepMin: config.backup.keepMin }, 'old dumps pruned');
      return { pruned, kept };
    },

    /**
     * Keeps the newest restore.keepRestorePoints restore points, and always those in `keep` (the one
     * just taken, the one just restored); deletes the rest.
     */
    async pruneRestorePoints({ keep }: { keep: string[] }): Promise<PruneResult> {
      const dir = join(config.backup.dir, RESTORE_POINTS_DIR);
      const points: string[] = [];
      for (const name of (await readdir(dir)).filter(isRestorePointName).sort().reverse()) if ((await lstat(join(dir, name)).catch(() => undefined))?.isFile()) points.push(name);
      if (!keep.every((k) => points.includes(k))) throw new PruneRefusedError(`refusing to prune restore points: ${keep.join(', ')} not all in ${dir}`);
      const newest = points.filter((p) => !keep.includes(p)).slice(0, Math.max(0, config.restore.keepRestorePoints - keep.length));
      const kept = [...keep, ...newest];
      const pruned = points.filter((p) => !kept.includes(p));
      for (const name of pruned) {
        await rm(join(dir, tagFileName(name)), { force: true });
        await rm(join(dir, checksumFileName(name)), { force: true });
        await rm(join(dir, rowCountsFileName(name)), { force: true });
        await rm(join(dir, name), { force: true });
      }
      if (pruned.length) logger.info({ pruned, keep: config.restore.keepRestorePoints }, 'old restore points pruned');
      return { pruned, kept };
    },
  };
}
