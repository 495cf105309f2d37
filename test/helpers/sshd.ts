import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort, waitFor } from './net.js';
import { tempDir } from './setup.js';

// A real OpenSSH server on 127.0.0.1 standing in for the NAS: a random port, host and client
// keys made here, key login only. Its "NAS" directory is a temporary directory on this machine.

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

export async function startSshd(): Promise<TestSshd> {
  const dir = await tempDir('sshd');
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
    ].join('\n') + '\n',
  );
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation directory
  const remoteDir = join(dir, 'nas', 'volume1', 'backups', 'immich', 'postgres');
  const user = userInfo().username;
  const identityFile = join(dir, 'client_key');
  const offsite = { host: '127.0.0.1', port, user, identityFile, knownHostsFile, remoteDir, connectTimeoutSeconds: 5 };
  let server: ResultPromise | undefined;
  const end = async (signal: 'SIGTERM' | 'SIGKILL') => {
    if (server?.pid) await execa('pkill', [`-${signal.slice(3)}`, '-P', String(server.pid)], { reject: false });
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
