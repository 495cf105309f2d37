import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort, waitFor } from './net.js';
import { tempDir } from './setup.js';

// A real OpenSSH server on 127.0.0.1 standing in for the NAS: a random port, host and client
// keys made here, key login only. Its "NAS" directory is a temporary directory on this machine.
// `forceCommand` makes it a sick NAS: a script sshd runs instead of whatever was asked (the
// request is in $SSH_ORIGINAL_COMMAND), e.g. `exec sleep 3600`: it takes the login, then nothing.

export interface SshdOptions {
  /** Body of a /bin/sh script run as the ForceCommand of every session. */
  forceCommand?: string;
}

/** Every process below pid (children, theirs, ...), deepest last. */
export async function descendants(pid: number): Promise<number[]> {
  const { stdout } = await execa('ps', ['-e', '-o', 'pid=,ppid=']);
  const children = new Map<number, number[]>();
  for (const line of stdout.split('\n')) {
    const [child, parent] = line.trim().split(/\s+/).map(Number) as [number, number];
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  const out: number[] = [];
  for (let queue = [pid]; queue.length; ) {
    const next = children.get(queue.shift()!) ?? [];
    out.push(...next);
    queue.push(...next);
  }
  return out;
}

/** Resolves once something on 127.0.0.1:port greets like an ssh server. */
function sshBanner(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(1000, () => (socket.destroy(), resolve(undefined)));
    socket.once('data', (d) => (socket.destroy(), resolve(d.toString().startsWith('SSH-') ? true : undefined)));
    socket.once('error', () => resolve(undefined));
  });
}

export interface TestSshd {
  port: number;
  user: string;
  identityFile: string;
  knownHostsFile: string;
  remoteDir: string;
  /** The offsite config section that points at this server. */
  offsite: Record<string, unknown>;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** SIGKILL to the listener and every session it serves: the NAS vanishing mid-transfer. */
  kill(): Promise<void>;
}

export async function startSshd(options: SshdOptions = {}): Promise<TestSshd> {
  const dir = await tempDir('sshd');
  const forceScript = join(dir, 'force-command');
  if (options.forceCommand) {
    await writeFile(forceScript, `#!/bin/sh\n${options.forceCommand}\n`);
    await chmod(forceScript, 0o755);
  }
  const key = (name: string) => execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(dir, name)]);
  await Promise.all([key('host_key'), key('client_key')]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'client_key.pub')));
  const port = await freePort();
  const [type, hostKey] = (await readFile(join(dir, 'host_key.pub'), 'utf8')).split(' ');
  const knownHostsFile = join(dir, 'known_hosts');
  await writeFile(knownHostsFile, `[127.0.0.1]:${port} ${type} ${hostKey}\n`);
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      'Subsystem sftp internal-sftp',
      'LogLevel ERROR',
      ...(options.forceCommand ? [`ForceCommand ${forceScript}`] : []),
    ].join('\n') + '\n',
  );
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation directory
  const remoteDir = join(dir, 'nas', 'volume1', 'backups', 'immich', 'postgres');
  const user = userInfo().username;
  const identityFile = join(dir, 'client_key');
  const offsite = { host: '127.0.0.1', port, user, identityFile, knownHostsFile, remoteDir, connectTimeoutSeconds: 5 };
  let server: ResultPromise | undefined;
  const end = async (signal: 'SIGTERM' | 'SIGKILL') => {
    // Sessions and what they run (a ForceCommand's sleep, a stopped rsync): SIGKILL reaches stopped ones too.
    if (server?.pid) for (const pid of await descendants(server.pid)) {
      try {
        process.kill(pid, options.forceCommand ? 'SIGKILL' : signal);
      } catch {
        // already gone
      }
    }
    server?.kill(signal);
    await server;
    server = undefined;
  };

  const sshd: TestSshd = {
    port,
    user,
    identityFile,
    knownHostsFile,
    remoteDir,
    offsite,
    async start() {
      if (server) return;
      server = execa('/usr/sbin/sshd', ['-D', '-e', '-f', config], { reject: false, stdin: 'ignore' });
      await waitFor('sshd to accept a login', async () => {
        // A sick NAS may never answer a command: its greeting is enough.
        if (options.forceCommand) return sshBanner(port);
        const r = await execa('ssh', ['-p', String(port), '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHostsFile}`, '-o', 'StrictHostKeyChecking=yes', '-i', identityFile, `${user}@127.0.0.1`, 'true'], { reject: false });
        return r.exitCode === 0 ? true : undefined;
      });
    },
    // Sessions inherit sshd's stderr: they are ended too, or the listener's exit would wait for them.
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
  };
  await sshd.start();
  return sshd;
}
