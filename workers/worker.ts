import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from '../activities/index.js';
import { connectHint, connectionSecurity } from '../temporal/client.js';
import type { Config } from '../config/config.js';
import { TemporalUnreachableError } from '../core/errors.js';
import type { Logger } from '../config/logger.js';
import { registerSearchAttributes } from '../temporal/search-attributes.js';
import { trustedSetup } from '../adapters/dump-store/index.js';
import { configFileLabel, workerIdentity } from '../temporal/worker-identity.js';
import { configDigest } from '../config/config.js';
import { redactingActivityInterceptors } from './redact-interceptor.js';
import { installRuntime } from './runtime.js';

// `npm run build` writes the production bundle here (workers/bundle.ts); without it, or when a
// compiled workflow file is newer than it, the worker bundles workflows/ itself at start (seconds).
const BUNDLE = fileURLToPath(new URL('../workflow-bundle.js', import.meta.url));
const WORKFLOWS_DIR = fileURLToPath(new URL('../workflows/', import.meta.url));
const WORKFLOWS = join(WORKFLOWS_DIR, 'index.js');

function freshBundle(): string | undefined {
  try {
    const built = statSync(BUNDLE).mtimeMs;
    const newest = Math.max(...readdirSync(WORKFLOWS_DIR).filter((f) => f.endsWith('.js')).map((f) => statSync(join(WORKFLOWS_DIR, f)).mtimeMs));
    return newest <= built ? BUNDLE : undefined;
  } catch {
    return undefined;
  }
}

export interface WorkerOptions {
  config: Config;
  logger: Logger;
  address: string;
  /** The config file the worker was started with: refused when others can write it. */
  configFile?: string | undefined;
}

export async function createBackupWorker({ config, logger, address, configFile }: WorkerOptions): Promise<{ worker: Worker; connection: NativeConnection }> {
  // Before anything connects: the key exists (made now on the first start) and nobody else can
  // change the key, the config or the staging dir.
  const { made, recovery } = await trustedSetup(config, configFile);
  if (made) logger.warn({ keyFile: config.security.keyFile }, 'made the worker\'s keys: dumps are tagged with them and what goes to the NAS is encrypted to them from now on');
  // Until the operator holds the code, a lost host loses every offsite copy: said at every start, and by status.
  if (!recovery.confirmed) logger.warn('RECOVERY CODE NOT CONFIRMED: without it, a new host cannot read the NAS copies; run `immich-backup recovery-code` now, write the code down, and type it back');
  installRuntime(logger);
  const bundle = freshBundle();
  const security = connectionSecurity(config);
  const connection = await NativeConnection.connect({ address, ...security }).catch((err: Error) => {
    throw new TemporalUnreachableError(`worker cannot reach Temporal at ${address}${security.tls ? ' over TLS' : ''} (${err.message.split('\n')[0]}): ${connectHint(config)}`);
  });
  // Workflows set BackupKind and BackupOutcome: they must exist before the first task runs.
  const added = await registerSearchAttributes(connection.operatorService, config.temporal.namespace);
  if (added.length) logger.info({ searchAttributes: added }, 'search attributes registered');
  const worker = await Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.taskQueue,
    // The CLI reads which config this worker runs with from here, and warns when its own differs.
    identity: workerIdentity(config, configFile),
    activities: createActivities({ config, logger }),
    interceptors: { activity: [redactingActivityInterceptors] },
    ...(bundle ? { workflowBundle: { codePath: bundle } } : { workflowsPath: WORKFLOWS }),
    // Cancellation reaches an activity with its next heartbeat: keep that within 2 s.
    maxHeartbeatThrottleInterval: '2s',
    // On SIGINT/SIGTERM running activities get this long before they are cancelled,
    shutdownGraceTime: '10s',
    // and a cancelled one this long more to stop its commands and remove its temporary files: an
    // activity that never settles must not make the worker deaf to SIGTERM (a retry on the next
    // worker takes its place, as after a crash).
    shutdownForceTime: '40s',
  });
  return { worker, connection };
}

/** Runs until SIGINT/SIGTERM (the Runtime shuts the worker down), then closes the connection. */
export async function runBackupWorker(options: WorkerOptions): Promise<void> {
  const { worker, connection } = await createBackupWorker(options);
  options.logger.info({ address: options.address, namespace: options.config.temporal.namespace, taskQueue: options.config.temporal.taskQueue, configFile: configFileLabel(options.configFile), configDigest: configDigest(options.config) }, 'worker started');
  try {
    await worker.run();
  } finally {
    await connection.close();
    options.logger.info('worker stopped');
  }
}
