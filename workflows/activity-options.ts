import { ActivityCancellationType, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ChecksumMismatchError, ContainerNotFoundError, DumpIncompleteError, StalledError, NasUnreachableError, NON_RETRYABLE, nonRetryableExcept } from '../core/errors.js';

// One proxy per timeout class. Failures that need a person (wrong container pattern, missing
// tool, full disk, a bad dump) are non-retryable: retrying would only delay the alarm. Which
// those are is declared once, in NON_RETRYABLE (core/errors.ts); a group that retries one of them
// says why.
const needsOperator = [...NON_RETRYABLE];

/** `docker ps` answers in seconds; a few spaced retries ride out a Docker daemon restart. */
export const discovery = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '5s',
    backoffCoefficient: 2,
    maximumAttempts: 5,
    nonRetryableErrorTypes: needsOperator,
  },
});

/**
 * A ~1 GB pg_dumpall takes minutes; 2 h bounds a stuck one. Heartbeats each second, so a dead
 * worker is noticed after 20 s and the retry (10 s, then 30 s, 90 s) starts on another. The
 * workflow waits for a cancelled dump to clean up its temporary file before it ends.
 */
export const dumping = proxyActivities<Activities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '20s',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  // A dump cut short (pg_dumpall killed mid-COPY), one that stalled, or a container gone while it
  // restarted is taken again.
  retry: { initialInterval: '10s', backoffCoefficient: 3, maximumAttempts: 4, nonRetryableErrorTypes: nonRetryableExcept(DumpIncompleteError, StalledError, ContainerNotFoundError) },
});

/** Decompressing a ~1 GB dump takes seconds to a minute; a bad dump will not improve on retry. */
export const validation = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '30s',
  retry: {
    initialInterval: '5s',
    maximumAttempts: 3,
    nonRetryableErrorTypes: needsOperator,
  },
});

/** Listing and deleting a handful of files. */
export const housekeeping = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: needsOperator },
});

/** Settings read from the worker's config: instant, recorded in history so replays agree. */
export const settings = proxyLocalActivities<Activities>({ startToCloseTimeout: '10 seconds' });

/**
 * Talking to the NAS. A 1 GB upload over a slow link may take an hour. An unreachable NAS, or an
 * upload that stalled (offsite.stallSeconds without a byte), is not retried here: the workflow
 * retries it with backoff for offsite.retryWindowMinutes and then fails with the last reason. A
 * full NAS (NasFullError, in needsOperator) fails at once. A checksum mismatch is retried (the bad
 * copy is removed first).
 */
export const nas = proxyActivities<Activities>({
  startToCloseTimeout: '2 hours',
  // Heartbeats every second: a lost worker is noticed in 30 s and the upload starts again elsewhere.
  heartbeatTimeout: '30s',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: {
    initialInterval: '10s',
    backoffCoefficient: 2,
    maximumAttempts: 5,
    // A copy whose checksum did not match was removed: the retry uploads it again.
    nonRetryableErrorTypes: nonRetryableExcept(ChecksumMismatchError),
  },
});

/** Before a library restore: a mirror that is missing or empty needs a person. */
export const mirrorChecks = proxyActivities<Activities>({
  startToCloseTimeout: '15 minutes',
  retry: { initialInterval: '10s', maximumAttempts: 3, nonRetryableErrorTypes: needsOperator },
});

/**
 * rsync of ~3 TB takes hours the first time. Heartbeats every second, so a lost worker is noticed
 * in 30 s; the retry resumes where rsync left off. A drive that vanished will not come back by
 * retrying; an empty library or a deletion risk needs a person. Neither does a stalled copy
 * (library.stallSeconds without progress: a frozen or dying drive), whose rsync may still be stuck
 * in the kernel: a retry would only pile another one on top.
 */
export const mirroring = proxyActivities<Activities>({
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '30s',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: {
    initialInterval: '10s',
    backoffCoefficient: 2,
    maximumAttempts: 5,
    nonRetryableErrorTypes: needsOperator,
  },
});

/** Finding, fetching (from the NAS) and verifying the dump to restore: a bad or missing dump will not get better. */
export const restorePrep = proxyActivities<Activities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '1 minute',
  // A cancelled fetch removes its temporary files before the run goes on.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: {
    initialInterval: '10s',
    maximumAttempts: 3,
    // A fetch from the NAS that stalled is tried again (its partial copy is removed first).
    nonRetryableErrorTypes: nonRetryableExcept(StalledError),
  },
});

/**
 * The restore drill: a throwaway cluster, a full load of the dump and a count of every table. A
 * dump that fails its checks, or a host without PostgreSQL binaries, will not improve by retrying.
 */
export const drilling = proxyActivities<Activities>({
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '30s', maximumAttempts: 2, nonRetryableErrorTypes: needsOperator },
});

/**
 * The drill of the newest NAS copy: a fetch and decryption, then the same load as the local drill.
 * A copy that cannot be fetched, decrypted or verified is a verdict in its result, not an error. A
 * cancelled run waits for the activity to remove the decrypted copy and the throwaway.
 */
export const offsiteDrilling = proxyActivities<Activities>({
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '1 minute',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '30s', maximumAttempts: 2, nonRetryableErrorTypes: needsOperator },
});

/** status's checks: local files, one ssh round trip to the NAS, a few Temporal queries. */
export const checks = proxyActivities<Activities>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '10s', maximumAttempts: 3 },
});

/** docker stop / compose up: seconds; a few retries ride out a busy daemon. */
export const immichControl = proxyActivities<Activities>({
  startToCloseTimeout: '5 minutes',
  // A cancelled `docker stop` must be over before the compensation's `compose up` runs.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: needsOperator },
});

/** The health wait has its own deadline (immich.healthTimeoutSeconds, at most an hour). */
export const health = proxyActivities<Activities>({ startToCloseTimeout: '65 minutes', heartbeatTimeout: '1 minute', retry: { maximumAttempts: 1 } });

/**
 * Loading a dump into psql: never retried blindly. A failure (or a worker lost mid-load) goes to
 * the workflow, which puts the restore point back.
 */
export const loading = proxyActivities<Activities>({
  startToCloseTimeout: '6 hours',
  // A lost worker is noticed within 30 s, and the restore point goes back in.
  heartbeatTimeout: '30s',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { maximumAttempts: 1 },
});

/**
 * Loading the restore point back: a --clean --if-exists dump reloads safely from the start, so a
 * worker lost mid-rollback is retried rather than leaving the database in an unknown state.
 */
export const rollingBack = proxyActivities<Activities>({
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumAttempts: 3 },
});

/**
 * Notifications, as a local activity: no server round trip, so a run with nothing to notify pays
 * nothing for it. The activity retries each target itself (5 tries over about 30 s, each request
 * within notifications.timeoutSeconds) and reports what it could not deliver.
 */
export const notifying = proxyLocalActivities<Activities>({ startToCloseTimeout: '5 minutes', retry: { maximumAttempts: 1 } });

/** The lock's bookkeeping through the worker's client: one short server call each. */
export const locking = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 10 },
});

/** A destructive run's authorization: a key read and one file; a refusal is final. */
export const authorize = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '2s', maximumAttempts: 3, nonRetryableErrorTypes: needsOperator },
});

/**
 * The library's copy on the NAS: a first upload of ~3 TB takes days over a home uplink; a retry
 * resumes where rsync left off. A NAS that is unreachable, full or refuses the login needs a person.
 */
export const libraryOffsite = proxyActivities<Activities>({
  startToCloseTimeout: '7 days',
  heartbeatTimeout: '1 minute',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: {
    initialInterval: '1 minute',
    backoffCoefficient: 2,
    maximumAttempts: 3,
    // An emptied library (or one far below the NAS copy) needs a person, as on the drive; a NAS
    // that dropped off the network is tried again a minute later.
    nonRetryableErrorTypes: nonRetryableExcept(NasUnreachableError),
  },
});

/**
 * LibraryAudit: a whole pass over ~3 TB at idle I/O priority may take a day. Heartbeats each
 * second (20 s: a lost worker is noticed soon and the retry resumes from the last heartbeat's
 * position); a library that is not there needs a person.
 */
export const auditing = proxyActivities<Activities>({
  startToCloseTimeout: '48 hours',
  heartbeatTimeout: '20s',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumAttempts: 5, nonRetryableErrorTypes: needsOperator },
});
