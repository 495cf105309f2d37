import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { checksumFileName, parseDumpName } from '../src/dump-names.js';
import { PruneRefusedError } from '../src/errors.js';
import type { ActivityDeps } from './deps.js';
import type { PruneDumpsInput, PruneResult } from './types.js';

const DAY_MS = 24 * 60 * 60 * 1000;

export function createPruneActivities({ config, logger }: ActivityDeps) {
  return {
    /**
     * Deletes our dumps (and their .sha256) older than backup.retentionDays. Runs only after the
     * new dump validated; never deletes that dump nor the newest one, never a file whose name is
     * not ours.
     */
    async pruneDumps({ keep, nowMs }: PruneDumpsInput): Promise<PruneResult> {
      const dir = config.backup.dir;
      const dumps = (await readdir(dir))
        .flatMap((name) => {
          const time = parseDumpName(name);
          return time ? [{ name, time: time.getTime() }] : [];
        })
        .sort((a, b) => b.time - a.time);
      if (!dumps.some((d) => d.name === keep)) {
        throw new PruneRefusedError(`refusing to prune: the dump just validated (${keep}) is not in ${dir}`);
      }
      const cutoff = nowMs - config.backup.retentionDays * DAY_MS;
      const newest = dumps[0]!.name;
      const pruned: string[] = [];
      const kept: string[] = [];
      for (const { name, time } of dumps) {
        if (name === keep || name === newest || time >= cutoff) {
          kept.push(name);
          continue;
        }
        await rm(join(dir, checksumFileName(name)), { force: true });
        await rm(join(dir, name), { force: true });
        pruned.push(name);
      }
      if (pruned.length) logger.info({ pruned, retentionDays: config.backup.retentionDays }, 'old dumps pruned');
      return { pruned, kept };
    },
  };
}
