import { ApplicationFailure, log } from '@temporalio/workflow';
import type { DumpFormat, ResolvedDump } from '../activities/types.js';
import { formatStamp } from '../src/dump-names.js';
import { RestoreFailedError } from '../src/errors.js';
import { innermostMessage } from '../src/failure.js';
import { discovery, dumping, health, immichControl, loading, restorePrep, settings, validation } from './activity-options.js';
import { restoreSteps } from './restore-steps.js';
import { reported } from './reporting.js';

export interface RestoreDatabaseInput {
  /** "latest" (default), one of our dump names, or an immich-db-backup-….sql.gz name. */
  dump?: string;
  /** local (default: the staging dir, else the NAS) or offsite (fetch from the NAS). */
  from?: 'local' | 'offsite';
  dryRun?: boolean;
  /** The operator's "yes": no approval step. */
  approved?: boolean;
  trigger?: string;
}

export interface RestoreDatabaseReport {
  outcome: 'restored' | 'dry-run' | 'not-approved';
  message: string;
  dump: string;
  format: DumpFormat;
  origin: ResolvedDump['origin'];
  sha256: string;
  restorePoint?: string;
  stoppedContainers?: string[];
  healthy?: boolean;
  health?: string;
  durations: Record<string, number>;
}

/**
 * The runbook's database restore, done right: verify before touching anything, wait for an
 * operator's approval, take a restore point, stop only Immich's app containers, load the dump,
 * put the restore point back if the load fails, start Immich and wait until it answers.
 */
export async function RestoreDatabase(input: RestoreDatabaseInput = {}): Promise<RestoreDatabaseReport> {
  return reported('RestoreDatabase', () => body(input), (r) => r.message);
}

async function body(input: RestoreDatabaseInput): Promise<RestoreDatabaseReport> {
  const steps = restoreSteps(input.approved === true);
  const { timed, durations } = steps;

  const config = await settings.restoreSettings();
  const dump = await timed('resolving dump', () => restorePrep.resolveDump({ dump: input.dump ?? 'latest', from: input.from ?? 'local' }));
  const verified = await timed('verifying dump', () => restorePrep.verifyDumpForRestore(dump));
  const base = { dump: dump.file, format: dump.format, origin: dump.origin, sha256: verified.sha256, durations };
  const what = dump.format === 'cluster' ? 'every database and role (pg_dumpall)' : `the ${config.immichDatabase} database (Immich's own backup)`;

  if (input.dryRun) {
    steps.done();
    return { ...base, outcome: 'dry-run', message: `dry run: ${dump.file} verified; a restore would take a restore point, stop Immich's app containers, replace ${what}, start Immich and wait for it` };
  }
  if (!(await steps.approval(config.approvalTimeoutMs))) {
    steps.done();
    return { ...base, outcome: 'not-approved', message: `no approval within ${Math.round(config.approvalTimeoutMs / 60_000)} min: nothing was changed` };
  }

  const target = await timed('finding the database container', () => discovery.discoverPostgresContainer());
  const point = await timed('taking a restore point', async () => {
    const made = await dumping.dumpDatabase({ target, stamp: formatStamp(new Date()) });
    await validation.validateDump({ file: made.file, testedSha256: made.sha256 });
    return made;
  });
  const stopped = await timed('stopping Immich', () => immichControl.stopImmich());
  let failure: string | undefined;
  try {
    await timed('restoring', () => loading.restoreDump({ dump, target }));
  } catch (err) {
    failure = innermostMessage(err);
    log.error('restore failed; restoring the restore point', { reason: failure });
    try {
      await timed('rolling back to the restore point', () => loading.restoreDump({ dump: { file: point.file, path: point.path, format: 'cluster' }, target }));
    } catch (rollbackErr) {
      failure += `; rolling back to ${point.file} failed too: ${innermostMessage(rollbackErr)}`;
    }
  }
  await timed('starting Immich', () => immichControl.startImmich());
  const healthResult = await timed('waiting for Immich', () => health.waitForImmich());
  steps.done();
  if (failure) {
    throw ApplicationFailure.nonRetryable(`restore of ${dump.file} failed (${failure}); the restore point ${point.file} was put back and Immich started (${healthResult.healthy ? 'healthy' : 'not healthy'})`, RestoreFailedError.name);
  }
  return {
    ...base,
    outcome: 'restored',
    message: `restored ${what} from ${dump.file}; Immich ${healthResult.healthy ? 'is healthy' : 'did NOT become healthy'}: ${healthResult.detail}`,
    restorePoint: point.file,
    stoppedContainers: stopped,
    healthy: healthResult.healthy,
    health: healthResult.detail,
  };
}
