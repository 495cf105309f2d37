// One class per failure an operator must act on. The class name becomes the Temporal failure
// type, so workflows list these names as non-retryable where retrying cannot help.
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

/** A subprocess exited non-zero or was killed; retryable, the message carries its stderr tail. */
export class CommandFailedError extends Error {
  override name = 'CommandFailedError';
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
