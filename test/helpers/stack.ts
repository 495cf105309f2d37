import { join } from 'node:path';
import { after, before } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { startPingServer } from './ping.js';
import { loadImmichLike, startPostgres, type TestPostgres } from './postgres.js';
import { startReceiver, type Receiver } from './receiver.js';
import { fixtureEnv, tempDir } from './setup.js';
import { startSshd, type SshdOptions, type TestSshd } from './sshd.js';
import { startTestTemporal } from './temporal.js';
import { bounded } from './transfer.js';

// The one before/after stack of the test files: the real servers a file asks for, started in its
// `before` and stopped in its `after`, with what the file registered to clean up in between.

export interface StackOptions<Sick extends string = never> {
  /** A Temporal dev server and a client of it (the default); `{ ui: true }`: with its Web UI. */
  temporal?: boolean | { ui: boolean };
  /** A PostgreSQL; a number: loaded with that many Immich-like assets (loadImmichLike). */
  postgres?: boolean | number;
  /** process.env for the fixture docker and host tools, pointing at the stack's PostgreSQL; an object: with these variables too. */
  dockerEnv?: boolean | Record<string, string>;
  /** A file the fixture docker records its stops and starts in (FIXTURE_DOCKER_LOG): `dockerLog`. */
  dockerLog?: boolean;
  /** An sshd standing in for the NAS: `sshd`. */
  sshd?: boolean;
  /** Sick NASes, by name: `sshds[name]`. */
  sickSshds?: Record<Sick, SshdOptions>;
  /** An HTTP server answering Immich's ping: `ping`. */
  ping?: boolean;
  /** An HTTP server receiving webhooks, ntfy messages and pings: `receiver`. */
  receiver?: boolean;
  /** Each cleanup step gives up (saying so) after a bound: for files whose faults can leave a mount or server hanging. */
  boundedCleanup?: boolean;
}

export interface Stack<Sick extends string = never> {
  temporal: Awaited<ReturnType<typeof startTestTemporal>>;
  connection: Connection;
  client: Client;
  pg: TestPostgres;
  sshd: TestSshd;
  sshds: Record<Sick, TestSshd>;
  ping: Awaited<ReturnType<typeof startPingServer>>;
  receiver: Receiver;
  dockerLog: string;
  /** Runs `cleanup` in `after`, before the servers stop; the last registered runs first. */
  defer(cleanup: () => unknown): void;
  /** Unmounts `mount` in `after`; returns it. */
  mounted<T extends { unmount(): Promise<void> }>(mount: T): T;
}

/**
 * Registers the file's before/after hooks; the returned handles are filled in by `before`, which
 * then runs `setup`: what the file itself needs on top (a second top-level `before` would run at
 * the same time as this one, not after it).
 */
export function useStack<Sick extends string = never>(options: StackOptions<Sick> = {}, setup?: () => Promise<void>): Stack<Sick> {
  const cleanups: Array<() => unknown> = [];
  const stack = {
    sshds: {},
    defer: (cleanup) => void cleanups.push(cleanup),
    mounted: (mount) => (cleanups.push(() => mount.unmount()), mount),
  } as Stack<Sick>;
  const temporal = options.temporal ?? true;
  before(async () => {
    // Each handle is set as soon as its server runs, so `after` stops it even when another failed to start.
    await Promise.all([
      temporal && startTestTemporal(undefined, { ui: typeof temporal === 'object' && temporal.ui }).then((t) => (stack.temporal = t)),
      options.postgres && startPostgres().then((pg) => (stack.pg = pg)),
      options.sshd && startSshd().then((s) => (stack.sshd = s)),
      ...(Object.entries(options.sickSshds ?? {}) as Array<[Sick, SshdOptions]>).map(([name, o]) => startSshd(o).then((s) => (stack.sshds[name] = s))),
      options.ping && startPingServer().then((p) => (stack.ping = p)),
      options.receiver && startReceiver().then((r) => (stack.receiver = r)),
    ]);
    if (typeof options.postgres === 'number') await loadImmichLike(stack.pg, options.postgres);
    if (options.dockerEnv) Object.assign(process.env, fixtureEnv(stack.pg, options.dockerEnv === true ? {} : options.dockerEnv));
    if (options.dockerLog) process.env.FIXTURE_DOCKER_LOG = stack.dockerLog = join(await tempDir('docker-log'), 'docker.log');
    if (temporal) {
      stack.connection = await Connection.connect({ address: stack.temporal.address });
      stack.client = new Client({ connection: stack.connection, namespace: stack.temporal.namespace });
    }
    await setup?.();
  });
  after(async () => {
    const step = (what: string, work: () => unknown, ms: number) => (options.boundedCleanup ? bounded(what, Promise.resolve().then(work), ms) : work());
    let failed: { error: unknown } | undefined;
    for (const cleanup of cleanups.reverse()) {
      try {
        await step('cleanup', cleanup, 20_000);
      } catch (error) {
        failed ??= { error };
      }
    }
    await stack.connection?.close();
    const servers = [stack.temporal, stack.pg, stack.sshd, ...Object.values<TestSshd>(stack.sshds), stack.ping];
    await step('stopping the servers', () => Promise.all([...servers.map((s) => s?.stop()), stack.receiver?.close()]), 60_000);
    if (failed) throw failed.error;
  });
  return stack;
}
