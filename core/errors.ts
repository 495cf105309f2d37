// One class per failure an operator must act on. The class name becomes the Temporal failure
// type; which of them retrying cannot help is declared once, in NON_RETRYABLE at the end.
// Pure module: workflows import it, so it must not touch Node built-ins.

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export class TemporalBinaryNotFoundError extends Error {
  override name = 'TemporalBinaryNotFoundError';
}

export class DevServerError extends Error {
  override name = 'DevServerError';
}

export class CommandNotFoundError extends Error {
  override name = 'CommandNotFoundError';
}

/**
 * A subprocess exited non-zero or was killed; retryable, the message carries its stderr tail. The
 * runner sets `exitCode` (or `signal`), for callers that read what an exit means (rsync's 25, 30).
 */
export class CommandFailedError extends Error {
  override name = 'CommandFailedError';
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;

  constructor(message: string, outcome: { exitCode?: number; signal?: string } = {}) {
    super(message);
    this.exitCode = outcome.exitCode;
    this.signal = outcome.signal;
  }
}

export class ContainerNotFoundError extends Error {
  override name = 'ContainerNotFoundError';
}

export class AmbiguousContainerError extends Error {
  override name = 'AmbiguousContainerError';
}

export class NotOurDumpError extends Error {
  override name = 'NotOurDumpError';
}

export class DumpTooSmallError extends Error {
  override name = 'DumpTooSmallError';
}

export class DumpCorruptError extends Error {
  override name = 'DumpCorruptError';
}

export class DumpIncompleteError extends Error {
  override name = 'DumpIncompleteError';
}

export class ChecksumMismatchError extends Error {
  override name = 'ChecksumMismatchError';
}

export class NoSpaceError extends Error {
  override name = 'NoSpaceError';
}

export class PruneRefusedError extends Error {
  override name = 'PruneRefusedError';
}

/** ssh could not reach the NAS (refused, timed out, no route): retried for offsite.retryWindowMinutes. */
export class NasUnreachableError extends Error {
  override name = 'NasUnreachableError';
}

/** The NAS's host key is unknown or changed: a person must check it. */
export class HostKeyVerificationError extends Error {
  override name = 'HostKeyVerificationError';
}

export class NasAuthError extends Error {
  override name = 'NasAuthError';
}

/** The library's restic repository on the NAS does not open (another keyring's password, no repository, damaged): a person must act. */
export class NasRepositoryError extends Error {
  override name = 'NasRepositoryError';
}

export class DriveNotMountedError extends Error {
  override name = 'DriveNotMountedError';
}

export class SourceEmptyError extends Error {
  override name = 'SourceEmptyError';
}

/** Deletion on the mirror was refused: the library holds far fewer files than its mirror. */
export class MirrorSafetyError extends Error {
  override name = 'MirrorSafetyError';
}

export class DumpNotFoundError extends Error {
  override name = 'DumpNotFoundError';
}

/** The dump holds something that would run a program (\\!, COPY … PROGRAM, a psql meta-command pg_dump never writes). */
export class UnsafeDumpError extends Error {
  override name = 'UnsafeDumpError';
}

/** psql predates restrict mode, where it would run on this host: it is never given a dump. */
export class PsqlTooOldError extends Error {
  override name = 'PsqlTooOldError';
}

export class RestoreFailedError extends Error {
  override name = 'RestoreFailedError';
}

/** A restore drill restored the dump but the row counts differ from those recorded at dump time. */
export class DrillFailedError extends Error {
  override name = 'DrillFailedError';
}

/** pg_dump could not read the live database (damaged TOAST or heap pages): retrying reads the same damage. */
export class DatabaseUnreadableError extends Error {
  override name = 'DatabaseUnreadableError';
}

/** RestoreDatabase could not take its restore point: nothing was changed. */
export class RestorePointFailedError extends Error {
  override name = 'RestorePointFailedError';
}

/** A restore was cancelled; its message says which state the database or library was left in. */
export class RestoreCancelledError extends Error {
  override name = 'RestoreCancelledError';
}

/** Another run holds the database or the library, and did not let go within the wait's bound. */
export class ResourceBusyError extends Error {
  override name = 'ResourceBusyError';
}

/** A dump fetched from the NAS differs from the local file of the same name: neither is replaced. */
export class DumpConflictError extends Error {
  override name = 'DumpConflictError';
}

/** The dump was made by another Immich version than the one running, and that was not accepted. */
export class ImmichVersionMismatchError extends Error {
  override name = 'ImmichVersionMismatchError';
}

/** No worker polls the task queue: a run started now would wait silently until one appears. */
export class NoWorkerError extends Error {
  override name = 'NoWorkerError';
}

/** A dump's final name is already taken (another run's file): nothing is ever written over it. */
export class DumpNameTakenError extends Error {
  override name = 'DumpNameTakenError';
}

/** A dump that claims to be ours but whose provenance tag is missing or does not verify with the worker's key. */
export class UnauthenticatedDumpError extends Error {
  override name = 'UnauthenticatedDumpError';
}

/** A recovery code that is malformed, wrong, or does not open a keyring envelope (typed by a person: never retried). */
export class RecoveryCodeError extends Error {
  override name = 'RecoveryCodeError';
}

/** A destructive run started, or a restore approved, without a valid token derived from the worker's key. */
export class UnauthorizedError extends Error {
  override name = 'UnauthorizedError';
}

/** A path the tool trusts (staging dir, key, config) that someone else can write, or the key missing or unreadable. */
export class UnsafePathError extends Error {
  override name = 'UnsafePathError';
}

/** A transfer whose byte count did not move for the configured stall window. */
export class StalledError extends Error {
  override name = 'StalledError';
}

/** The NAS has no room for an upload: retrying cannot help. */
export class NasFullError extends Error {
  override name = 'NasFullError';
}

/** A mirror run found more existing originals rewritten than library.writeOnce allows: nothing was overwritten, until an operator approves that run. */
export class WriteOnceError extends Error {
  override name = 'WriteOnceError';
}

/** LibraryAudit found originals missing from, or damaged on, the library or its mirror. */
export class LibraryDamagedError extends Error {
  override name = 'LibraryDamagedError';
}

/** The table digests a dump's own activity took were gone or altered when its row counts were recorded: no drill can compare its data. */
export class DigestsMissingError extends Error {
  override name = 'DigestsMissingError';
}

/** The throwaway PostgreSQL of a restore drill stopped, or did not accept connections in time. */
export class ThrowawayFailedError extends Error {
  override name = 'ThrowawayFailedError';
}

/** The CLI or worker could not connect to the Temporal server at the configured address. */
export class TemporalUnreachableError extends Error {
  override name = 'TemporalUnreachableError';
}

/** The namespace refused to register the search attributes the workflows set. */
export class SearchAttributesError extends Error {
  override name = 'SearchAttributesError';
}

/** A run the CLI waited on failed; the message is its innermost reason. */
export class RunFailedError extends Error {
  override name = 'RunFailedError';
}

/** Temporal does not know the workflow ID a command named (or could not say). */
export class RunNotFoundError extends Error {
  override name = 'RunNotFoundError';
}

/** The run is not one the command can act on: not running, a lock, not an immich-backup workflow. */
export class RunRefusedError extends Error {
  override name = 'RunRefusedError';
}

/** An approve or reject the restore refused: not waiting, already decided, no valid token. */
export class ApprovalRefusedError extends Error {
  override name = 'ApprovalRefusedError';
}

/** A command-line value the CLI cannot act on (an unknown schedule, a malformed --accept-rewrites). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The audit's sha1 reader or thread stopped or answered out of turn: retried, the pass resumes. */
export class AuditReaderError extends Error {
  override name = 'AuditReaderError';
}

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * Failures that retrying cannot help: a person must act. The one declaration: every activity
 * group's nonRetryableErrorTypes is built from it (workflows/activity-options.ts), and a workflow
 * that fails with one of these fails as non-retryable (workflows/failures.ts).
 */
export const NON_RETRYABLE: readonly string[] = [
  // wrong config, missing tool, full disk, untrusted paths or keys
  ConfigError, CommandNotFoundError, TemporalBinaryNotFoundError, NoSpaceError, NasFullError, UnsafePathError, UnauthorizedError, UsageError, RecoveryCodeError,
  // the database or its container
  ContainerNotFoundError, AmbiguousContainerError, DatabaseUnreadableError, ImmichVersionMismatchError, PsqlTooOldError,
  // a dump that is bad, missing, not ours, or taken
  NotOurDumpError, UnauthenticatedDumpError, UnsafeDumpError, DumpNameTakenError, DumpTooSmallError, DumpCorruptError,
  DumpIncompleteError, ChecksumMismatchError, DigestsMissingError, DumpConflictError, DumpNotFoundError, PruneRefusedError,
  // the NAS: OffsiteSync retries an unreachable or stalled one itself, for offsite.retryWindowMinutes
  NasUnreachableError, HostKeyVerificationError, NasAuthError, NasRepositoryError, StalledError,
  // the library, its drive and its mirror
  DriveNotMountedError, SourceEmptyError, MirrorSafetyError, WriteOnceError, LibraryDamagedError,
  // a workflow's own verdicts
  RestoreFailedError, RestorePointFailedError, RestoreCancelledError, DrillFailedError, ResourceBusyError,
  // what the CLI was asked about a run
  RunFailedError, RunNotFoundError, RunRefusedError, ApprovalRefusedError,
].map((c) => c.name);

/** Failures a retry may get past (a command that failed once, a server not up yet); every class in this file is in exactly one of the two lists. */
export const RETRYABLE: readonly string[] = [
  CommandFailedError, ThrowawayFailedError, AuditReaderError, DevServerError, NoWorkerError, TemporalUnreachableError, SearchAttributesError,
].map((c) => c.name);

export function isRetryable(type: string): boolean {
  return !NON_RETRYABLE.includes(type);
}

/** NON_RETRYABLE less `retried`: for an activity group where a retry gets past one of them (say why there). */
export function nonRetryableExcept(...retried: ErrorClass[]): string[] {
  const names = new Set<string>(retried.map((c) => c.name));
  return NON_RETRYABLE.filter((n) => !names.has(n));
}
