import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { startDevServer, type DevServer } from '../../temporal/dev-server.js';
import { registerSearchAttributes } from '../../temporal/search-attributes.js';
import { createLogger } from '../../config/logger.js';
import { freePorts, waitFor } from './net.js';
import { temporalBinary } from './paths.js';

/** The address of the dev server scripts/test.sh starts for the whole run (test/helpers/run-services.ts); unset when a file runs alone. */
export const SHARED_TEMPORAL_ENV = 'IMMICH_BACKUP_TEST_TEMPORAL';

export type TestTemporal = DevServer & { dataDir: string; namespace: string };

/**
 * A real Temporal dev server (the official `temporal` binary). Under scripts/test.sh, the run's
 * shared one, in a namespace of this file's own; otherwise (a file run alone, a custom binary, a
 * Web UI, or `own`) one of its own on a free loopback port, persisted to a temporary SQLite file.
 */
export async function startTestTemporal(binary = temporalBinary, { ui = false, own = false } = {}): Promise<TestTemporal> {
  const shared = process.env[SHARED_TEMPORAL_ENV];
  if (shared && binary === temporalBinary && !ui && !own) return joinSharedTemporal(shared);
  return startOwnTemporal(binary, ui, 'default');
}

export async function startOwnTemporal(binary: string, ui: boolean, namespace: string): Promise<TestTemporal> {
  const dataDir = await mkdtemp(join(tmpdir(), 'immich-backup-temporal-'));
  const [port, uiPort] = (await freePorts(2)) as [number, number];
  const server = await startDevServer({
    binary,
    dataDir,
    ip: '127.0.0.1',
    port,
    uiPort,
    namespace,
    headless: !ui,
    logger: createLogger({ level: 'error', fd: 2 }),
  });
  return {
    ...server,
    dataDir,
    namespace,
    async stop() {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Registers a namespace of this file's own on the shared server, with the search attributes the
 * workflows set, and points everything the file configures at it: rawTestConfig and the CLI
 * processes it starts read temporal.namespace from IMMICH_BACKUP_TEMPORAL_NAMESPACE. Schedules,
 * workflow IDs and lists stay the file's own, as on a server of its own.
 */
async function joinSharedTemporal(address: string): Promise<TestTemporal> {
  const namespace = `test-${process.pid}-${Date.now()}`;
  const connection = await Connection.connect({ address });
  try {
    await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: proto.google.protobuf.Duration.fromObject({ seconds: 86_400 }) });
    await waitFor(`namespace ${namespace}`, async () => ((await connection.workflowService.describeNamespace({ namespace }).then(() => true, () => undefined))));
    await waitFor(`search attributes in ${namespace}`, async () => ((await registerSearchAttributes(connection.operatorService, namespace).then(() => true, () => undefined))));
  } finally {
    await connection.close();
  }
  process.env.IMMICH_BACKUP_TEMPORAL_NAMESPACE = namespace;
  return {
    address,
    uiUrl: undefined,
    dbFile: '',
    dataDir: '',
    namespace,
    // The server is the run's: scripts/test.sh stops it.
    async stop() {
      delete process.env.IMMICH_BACKUP_TEMPORAL_NAMESPACE;
    },
  };
}
