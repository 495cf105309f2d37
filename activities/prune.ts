import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expiredDumps, isDumpName, isRestorePointName, RESTORE_POINTS_DIR } from '../core/dump-names.js';
import { PruneRefusedError } from '../core/errors.js';
import { openDumpStore } from '../adapters/dump-store/index.js';
import type { ActivityDeps } from './deps.js';
import type { PruneDumpsInput, PruneResult } from '../core/types.js';

export function createPruneActivities({ config, logger }: ActivityDeps) {
  const store = openDumpStore(config, logger);
  return {
    /**
     * Deletes our dumps (and their .sha256 and .rows.json) older than backup.retentionDays. Runs only after the
     * new dump validated; never deletes that dump nor the newest one, never a file whose name is
     * not ours.
     */
    async pruneDumps({ keep, nowMs }: PruneDumpsInput): Promise<PruneResult> {
      const dir = config.backup.dir;
      // Regular files only (a directory or symlink named like a dump is left alone, and said so).
      const { dumps: authentic, skipped } = await store.authentic();
      const names = (await readdir(dir)).filter(isDumpName).sort().reverse();
      const dumps: string[] = [];
      for (const name of names) {
        if ((await lstat(join(dir, name)).catch(() => undefined))?.isFile()) dumps.push(name);
        else logger.warn({ file: name, dir }, 'not a regular file, though named like a dump: left alone by pruning');
      }
      if (!authentic.some((d) => d.file === keep)) {
        throw new PruneRefusedError(`refusing to prune: the dump just validated (${keep}) is not in ${dir}, or its provenance tag does not verify`);
      }
      for (const s of skipped.filter((x) => dumps.includes(x.file))) logger.warn({ file: s.file, reason: s.reason }, 'not ours');
      // A flagged newest dump (its tables emptied, its assets dropped) may be the start of a loss:
      // nothing older goes until a dump that looks whole is the newest again.
      const newest = await store.rows(keep, dir);
      if (newest?.shrink) {
        logger.error({ newest: keep, reason: newest.shrink }, 'newest dump flagged: nothing pruned');
        return { pruned: [], kept: dumps };
      }
      // The newest keepMin of ours stay whatever the clock says; junk past retention (unvalidated, forged) goes.
      const protectedNames = new Set(authentic.map((d) => d.file).reverse().slice(0, config.backup.keepMin));
      const pruned = expiredDumps(dumps, nowMs, config.backup.retentionDays, keep).filter((d) => !protectedNames.has(d));
      for (const name of pruned) await store.remove(name, dir);
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
      for (const name of pruned) await store.remove(name, dir);
      if (pruned.length) logger.info({ pruned, keep: config.restore.keepRestorePoints }, 'old restore points pruned');
      return { pruned, kept };
    },
  };
}
