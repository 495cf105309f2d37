import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import {
  AmbiguousContainerError,
  ChecksumMismatchError,
  CommandNotFoundError,
  ContainerNotFoundError,
  DumpCorruptError,
  DumpIncompleteError,
  DumpTooSmallError,
  NoSpaceError,
  NotOurDumpError,
  PruneRefusedError,
} from '../src/errors.js';

// One proxy per timeout class. Failures that need a person (wrong container pattern, missing
// tool, full disk, a bad dump) are non-retryable: retrying would only delay the alarm.
const needsOperator = [CommandNotFoundError.name, NoSpaceError.name, NotOurDumpError.name];

/** `docker ps` answers in seconds; a few spaced retries ride out a Docker daemon restart. */
export const discovery = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '5s',
    backoffCoefficient: 2,
    maximumAttempts: 5,
    nonRetryableErrorTypes: [...needsOperator, ContainerNotFoundError.name, AmbiguousContainerError.name],
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
  retry: { initialInterval: '10s', backoffCoefficient: 3, maximumAttempts: 4, nonRetryableErrorTypes: needsOperator },
});

/** Decompressing a ~1 GB dump takes seconds to a minute; a bad dump will not improve on retry. */
export const validation = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '30s',
  retry: {
    initialInterval: '5s',
    maximumAttempts: 3,
    nonRetryableErrorTypes: [
      ...needsOperator,
      DumpTooSmallError.name,
      DumpCorruptError.name,
      DumpIncompleteError.name,
      ChecksumMismatchError.name,
    ],
  },
});

/** Listing and deleting a handful of files. */
export const housekeeping = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '5s', maximumAttempts: 3, nonRetryableErrorTypes: [...needsOperator, PruneRefusedError.name] },
});
