import type { Config } from '../src/config.js';
import { CommandFailedError, HostKeyVerificationError, NasAuthError, NasUnreachableError } from '../src/errors.js';
import { runCommand, type CommandOptions } from './run-command.js';

// How every connection to the NAS is made: batch mode (ssh never prompts), host keys always
// checked, a bounded connect time. Remote commands are argument lists quoted here, once; the
// config only admits safe characters in anything that reaches a remote shell.

type Offsite = Config['offsite'];

/** Options ssh and scp share; the port flag differs (-p / -P) and is added by each. */
export function connectionOptions(offsite: Offsite): string[] {
  return [
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `ConnectTimeout=${offsite.connectTimeoutSeconds}`,
    '-o', 'ServerAliveInterval=15',
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

/** Runs argv on the NAS. Each element is quoted; `&&` and the like are not available on purpose. */
export async function runRemote(offsite: Offsite, argv: readonly string[], options: CommandOptions) {
  try {
    return await runCommand('ssh', [...sshOptions(offsite), sshTarget(offsite), '--', argv.map(shellQuote).join(' ')], options);
  } catch (err) {
    throw sshError(err, offsite);
  }
}

/** Tells an unreachable NAS (retry later) from a host key or login problem (a person must act). */
export function sshError(err: unknown, offsite: Offsite): unknown {
  if (!(err instanceof CommandFailedError)) return err;
  const m = err.message;
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
