import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDevServer, type DevServer } from '../../temporal/dev-server.js';
import { createLogger } from '../../config/logger.js';
import { freePorts } from './net.js';
import { temporalBinary } from './paths.js';

/** A real Temporal dev server (the official `temporal` binary) on a free loopback port, persisted to a temporary SQLite file; with its Web UI when `ui`. */
export async function startTestTemporal(binary = temporalBinary, { ui = false } = {}): Promise<DevServer & { dataDir: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'immich-backup-temporal-'));
  const [port, uiPort] = (await freePorts(2)) as [number, number];
  const server = await startDevServer({
    binary,
    dataDir,
    ip: '127.0.0.1',
    port,
    uiPort,
    namespace: 'default',
    headless: !ui,
    logger: createLogger({ level: 'error', fd: 2 }),
  });
  return {
    ...server,
    dataDir,
    async stop() {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
