import type { Config } from '../../config/config.js';
import { CommandFailedError, HostKeyVerificationError, NasAuthError, NasFullError, NasUnreachableError } from '../../core/errors.js';
import { runCommand, type CommandOptions } from '../commands/run-command.js';

// How every connection to the NAS is made: batch mode (ssh never prompts), host keys always
// checked, a bounded connect time, keep-alives that notice a dead link, and a bound on every
// remote command. Remote commands are argument lists quoted here, once; the config only admits
// safe characters in anything that reaches a remote shell.

// A keep-alive every 15 s, and the connection given up after 4 unanswered (a minute): a NAS that
// went away mid-session fails the command instead of holding it open for the TCP timeout (hours).
const SERVER_ALIVE_INTERVAL_SECONDS = 15;
const SERVER_ALIVE_COUNT_MAX = 4;

type Offsite = Config['offsite'];

/** Options ssh and scp share; the port flag differs (-p / -P) and is added by each. */
export function connectionOptions(offsite: Offsite): string[] {
  return [
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `ConnectTimeout=${offsite.connectTimeoutSeconds}`,
    '-o', `ServerAliveInterval=${SERVER_ALIVE_INTERVAL_SECONDS}`,
    '-o', `ServerAliveCountMax=${SERVER_ALIVE_COUNT_MAX}`,
    ...(offsite.knownHostsFile ? ['-o', `UserKnownHostsFile=${offsite.knownHostsFile}`] : []),
    ...(offsite.identityFile ? ['-i', offsite.identityFile, '-o', 'IdentitiesOnly=yes'] : []),
  ];
}

export function sshOptions(offsite: Offsite): string[] {
  return ['-p', String(offsite.port), ...connectionOptions(offsite)];
}

/** The same options as one string, for rsync's -e (values are from the safe character set). */
export function sshCommandString(offsite: Offsite): string {
  return ['ssh', ...sshOptions(offsite)].join(' ');
}

export function sshTarget(offsite: Offsite): string {
  return offsite.user ? `${offsite.user}@${offsite.host}` : offsite.host;
}

/** Where the NAS copies live, for messages: user@host:port:/dir */
export function nasLabel(offsite: Offsite): string {
  return `${sshTarget(offsite)}:${offsite.port}:${offsite.remoteDir}`;
}

/** POSIX single-quoting: the remote shell sees each argument as one literal word. */
export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * How long a remote command may take: connecting, then offsite.stallSeconds for an answer. A NAS
 * that accepts the connection and then says nothing (hung disk, stuck daemon) would otherwise
 * hold the command, keep-alives answered, forever.
 */
export function remoteCommandBoundSeconds(offsite: Offsite): number {
  return offsite.connectTimeoutSeconds + offsite.stallSeconds;
}

/** Runs argv on the NAS. Each element is quoted; `&&` and the like are not available on purpose. */
export async function runRemote(offsite: Offsite, argv: readonly string[], options: CommandOptions) {
  const seconds = remoteCommandBoundSeconds(offsite);
  try {
    return await runCommand('ssh', [...sshOptions(offsite), sshTarget(offsite), '--', argv.map(shellQuote).join(' ')], { timeoutMs: seconds * 1000, ...options });
  } catch (err) {
    if (err instanceof CommandFailedError && / timed out: stopped it/.test(err.message)) {
      throw new NasUnreachableError(`the NAS ${nasLabel(offsite)} is unreachable: it took the connection but ${options.label} did not answer within ${seconds} s (offsite.connectTimeoutSeconds + offsite.stallSeconds)`);
    }
    throw sshError(err, offsite);
  }
}

/** What rsync, scp and ssh say when the NAS's disk or the user's quota is full. */
export const NAS_FULL = /No space left on device|Disk quota exceeded/i;

/** Tells an unreachable NAS (retry later) from a host key or login problem (a person must act). */
export function sshError(err: unknown, offsite: Offsite): unknown {
  if (!(err instanceof CommandFailedError)) return err;
  const m = err.message;
  const full = NAS_FULL.exec(m);
  if (full) {
    return new NasFullError(`the NAS ${nasLabel(offsite)} is full (${full[0]}): free space there or prune old dumps (offsite.retentionDays), then run OffsiteSync again`);
  }
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known/i.test(m)) {
    return new HostKeyVerificationError(`the NAS ${nasLabel(offsite)} failed host key verification: check its key and offsite.knownHostsFile (${m})`);
  }
  if (/Permission denied/i.test(m)) {
    return new NasAuthError(`the NAS ${nasLabel(offsite)} refused the login: check offsite.user and offsite.identityFile (${m})`);
  }
  if (/Connection refused|Connection timed out|timed out|No route to host|Network is unreachable|Could not resolve hostname|Connection closed|Connection reset|Broken pipe|kex_exchange_identification|lost connection|unexpected end of file|connection unexpectedly closed/i.test(m)) {
    return new NasUnreachableError(`the NAS ${nasLabel(offsite)} is unreachable: ${m}`);
  }
  return err;
}
