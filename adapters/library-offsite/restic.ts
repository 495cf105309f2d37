import { createInterface } from 'node:readline';
import type { Config } from '../../config/config.js';
import { CommandFailedError, NasRepositoryError } from '../../core/errors.js';
import { awaitCommand, awaitWithStallGuard, runCommand, startCommand, withHeartbeats, type StallGuard } from '../commands/run-command.js';
import { openKeyring } from '../dump-store/keyring.js';
import { connectionOptions, nasLabel, sshError, sshTarget } from '../nas/ssh.js';

// The library's encrypted repository on the NAS (library.offsite), through restic: restic encrypts
// and authenticates every file it writes (AES-256-CTR + Poly1305-AES, keys behind the repository
// password) and speaks sftp over the same batch-mode ssh as everything else (sftp.command: restic
// never opens a connection of its own). The password is the keyring's (recoverable from the
// recovery code) and travels in the environment, never in argv.

type Offsite = Config['offsite'];

/** The host name every snapshot records: a rebuilt host (another hostname) finds its parent and stays incremental. */
export const SNAPSHOT_HOST = 'immich-library';
/** The tag every snapshot carries: what forget and latest look at (nothing else in the repository is ours to prune). */
export const SNAPSHOT_TAG = 'immich-library';

/** restic's own top-level entries in a repository; anything else there is not restic's. */
export const REPOSITORY_ENTRIES = ['config', 'data/', 'index/', 'keys/', 'locks/', 'snapshots/'] as const;

export interface ResticRepo {
  /** sftp:user@host:/dir, as restic -r takes it. */
  repository: string;
  /** user@host:port:/dir, for messages. */
  label: string;
  /** The global options: the repository, and ssh as the rest of the tool runs it. */
  globals: string[];
  env: Record<string, string>;
}

/** `ssh … user@host -s sftp` as one string for restic's sftp.command (values are from the config's safe character set). */
export function sftpCommand(offsite: Offsite): string {
  return ['ssh', '-p', String(offsite.port), ...connectionOptions(offsite), sshTarget(offsite), '-s', 'sftp'].join(' ');
}

/**
 * The repository at library.offsite.remoteDir, opened with the keyring's password. `create`: the
 * backup makes the keyring on a first start; a restore never does (a new password opens nothing).
 */
export async function libraryRepo(config: Config, { create = false }: { create?: boolean } = {}): Promise<ResticRepo> {
  const remoteDir = config.library.offsite.remoteDir.replace(/(.)\/+$/, '$1');
  const repository = `sftp:${sshTarget(config.offsite)}:${remoteDir}`;
  const { resticPassword } = await openKeyring(config.security.keyFile, { create });
  return {
    repository,
    label: nasLabel({ ...config.offsite, remoteDir }),
    globals: ['-r', repository, '-o', `sftp.command=${sftpCommand(config.offsite)}`],
    // One status line a second with --json (restic prints none when stdout is not a terminal otherwise).
    env: { RESTIC_PASSWORD: resticPassword, RESTIC_PROGRESS_FPS: '1' },
  };
}

/** restic's failure as the error a person acts on: the ssh ones as ssh's, the repository's as one line. */
export function resticError(err: unknown, repo: ResticRepo, offsite: Offsite, what: string): unknown {
  const mapped = sshError(err, offsite);
  if (mapped !== err || !(err instanceof CommandFailedError)) return mapped;
  const m = err.message;
  if (/wrong password or no key found/i.test(m)) {
    return new NasRepositoryError(
      `the library's repository on the NAS (${repo.label}) does not open with this host's keyring password: it was made with another keyring; ` +
        `recover the keyring with the recovery code (immich-backup recover), or point library.offsite.remoteDir at this host's repository; ${what}`,
    );
  }
  if (/Is there a repository at the following location|unable to open config file/i.test(m)) {
    return new NasRepositoryError(`there is no restic repository at ${repo.label} (no config file there): check library.offsite.remoteDir; ${what}`);
  }
  if (/repository contains errors/i.test(m)) {
    return new NasRepositoryError(`restic check found the library's repository on the NAS (${repo.label}) damaged: ${oneLine(m)}; ${what}`);
  }
  if (/ciphertext verification failed|invalid data returned|config or key .* is damaged|unable to parse/i.test(m)) {
    return new NasRepositoryError(`the library's repository on the NAS (${repo.label}) is damaged or was altered: ${oneLine(m)}; ${what}`);
  }
  return err;
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, ' | ').slice(0, 400);

export interface ResticRunOptions {
  label: string;
  cwd?: string;
  /** What the failure message ends with: what was and was not done. */
  what: string;
  prefix?: readonly string[];
  progress?: () => unknown;
}

/** One restic command to its end, its stdout whole (small answers: snapshots, forget, cat config). */
export async function runRestic(config: Config, repo: ResticRepo, args: readonly string[], options: ResticRunOptions): Promise<string> {
  const [file, ...rest] = [...(options.prefix ?? []), 'restic', ...repo.globals, ...args] as [string, ...string[]];
  try {
    const { stdout } = await runCommand(file, rest, { label: options.label, env: repo.env, ...(options.progress ? { progress: options.progress } : {}) });
    return stdout;
  } catch (err) {
    throw resticError(err, repo, config.offsite, options.what);
  }
}

/**
 * A restic command whose --json stdout is read line by line as it comes (a snapshot's listing
 * runs to one line a file; backup's status lines): nothing is buffered whole. `stall`: killed
 * when its position has not moved for that long.
 */
export async function streamRestic(
  config: Config,
  repo: ResticRepo,
  args: readonly string[],
  options: ResticRunOptions & { onLine: (value: Record<string, unknown>) => void; stall?: Omit<StallGuard, 'position' | 'where'> & { position: () => unknown; where: () => string } },
): Promise<void> {
  const [file, ...rest] = [...(options.prefix ?? []), 'restic', ...repo.globals, ...args] as [string, ...string[]];
  const child = startCommand(file, rest, { label: options.label, env: repo.env, stdout: 'stream', ...(options.cwd ? { cwd: options.cwd } : {}) });
  const reading = (async () => {
    for await (const line of createInterface({ input: child.stdout!, crlfDelay: Infinity })) {
      if (!line.startsWith('{')) continue;
      try {
        options.onLine(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line restic did not finish (killed mid-write): the exit status tells
      }
    }
  })();
  const done = options.stall ? awaitWithStallGuard(child, options.label, options.stall).done : awaitCommand(child, options.label);
  try {
    await withHeartbeats(Promise.all([done, reading]), options.progress ?? (() => ({ step: options.label })));
  } catch (err) {
    child.kill();
    throw resticError(err, repo, config.offsite, options.what);
  }
}
