// `npm run bench:recover` (never part of `npm test`): the disaster recovery of the database, side by
// side in one run, medians of several runs, each into a fresh PostgreSQL cluster:
//   (x) by hand, with the keys at hand: ssh NAS cat <dump>.age | age -d -i IDENTITIES | gunzip | psql
//   (y) `immich-backup recover --code-file F --yes --library none` on a new host (an empty home; its
//       worker already running): the keys from the NAS with the code (scrypt), the NAS listed, the
//       newest copy fetched, decrypted, verified in full, a restore point of the (empty) live
//       cluster, the restricted load, the health check
// Usage: node dist/bench/recover.js [--size 1] [--runs 3] [--seed 0]
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { ensureRecovery } from '../adapters/dump-store/recovery.js';
import { openKeyring } from '../adapters/dump-store/keyring.js';
import { connectionOptions, sshTarget } from '../adapters/nas/ssh.js';
import { parseConfig } from '../config/config.js';
import type { NightlyDbBackupReport, OffsiteSyncReport } from '../workflows/index.js';
import { cliEnv } from '../test/helpers/cli.js';
import { cliPath } from '../test/helpers/paths.js';
import { startPingServer } from '../test/helpers/ping.js';
import { loadImmichLike, pgBin, startPostgres } from '../test/helpers/postgres.js';
import { runWorkflow, withWorker } from '../test/helpers/run-workflow.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../test/helpers/setup.js';
import { startSshd } from '../test/helpers/sshd.js';
import { startTestTemporal } from '../test/helpers/temporal.js';

const { values: opts } = parseArgs({ options: { size: { type: 'string', default: '1' }, runs: { type: 'string', default: '3' }, seed: { type: 'string', default: '0' } } });
const SIZE = Number(opts.size);
const RUNS = Number(opts.runs);
/** As bench/run.ts: 135k assets with 512-float embeddings make about 1 GB. */
const ASSETS_PER_GB = 135_000;
const DIMS = 512;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const secs = (ms: number) => Math.round(ms) / 1000;
const log = (...parts: unknown[]) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...parts);
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

const [temporal, pg, ping, sshd] = await Promise.all([startTestTemporal(), startPostgres(), startPingServer(), startSshd()]);
const root = await tempDir('bench-recover');
const connection = await Connection.connect({ address: temporal.address });
const client = new Client({ connection, namespace: temporal.namespace });

function hostConfig(name: string) {
  return rawTestConfig({
    backupDir: join(root, name, 'dumps'),
    address: temporal.address,
    taskQueue: `bench-recover-${name}`,
    extra: {
      security: { keyFile: join(root, name, 'home', 'key') },
      offsite: { ...sshd.offsite, remoteDir: join(root, 'nas') },
      immich: { composeDir: root, pingUrl: ping.url, healthTimeoutSeconds: 30 },
      library: { source: join(root, 'library'), destination: join(root, 'drive', 'immich'), mountPoint: join(root, 'drive') },
    },
  });
}

try {
  const t0 = performance.now();
  await loadImmichLike(pg, Math.round(ASSETS_PER_GB * SIZE), DIMS, Number(opts.seed));
  await pg.psql('VACUUM ANALYZE', 'immich');
  const dbBytes = Number(await pg.psql("SELECT pg_database_size('immich')"));
  log(`database: ${Math.round(dbBytes / 2 ** 20)} MiB on disk, generated in ${secs(performance.now() - t0)} s`);
  Object.assign(process.env, fixtureEnv(pg));
  const old = parseConfig(hostConfig('old'));
  const backup = await runWorkflow<NightlyDbBackupReport>(client, temporal.address, old, 'NightlyDbBackup');
  if (backup.error) throw backup.error;
  const offsite = await runWorkflow<OffsiteSyncReport>(client, temporal.address, old, 'OffsiteSync');
  if (offsite.error) throw offsite.error;
  const file = backup.report!.file;
  const { code } = await ensureRecovery(old.security.keyFile);
  const codeFile = join(root, 'code.txt');
  await writeFile(codeFile, `${code}\n`);
  const identities = (await openKeyring(old.security.keyFile)).identitiesFile;
  log(`dump ${file}: ${Math.round(backup.report!.bytes / 2 ** 20)} MiB, on the NAS encrypted`);

  const x: number[] = [];
  const y: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    // (x) by hand, into a fresh cluster.
    const byHand = await startPostgres();
    x.push(await timed(() => execa('sh', ['-c', 'ssh "$@" | age -d -i "$IDS" | gunzip | "$PSQL" -X -q -d postgres >/dev/null', 'sh', '-p', String(sshd.port), ...connectionOptions(old.offsite), sshTarget(old.offsite), 'cat', join(root, 'nas', `${file}.age`)], { env: { ...process.env, ...byHand.env, IDS: identities, PSQL: join(pgBin, 'psql') } })));
    await byHand.stop();
    // (y) recover on a new host: an empty home, a fresh cluster, its worker already running.
    const fresh = await startPostgres();
    Object.assign(process.env, fixtureEnv(fresh));
    const raw = hostConfig(`new-${i}`);
    await mkdir(join(root, `new-${i}`), { recursive: true });
    const configFile = await writeConfigFile(join(root, `new-${i}`), raw);
    await withWorker(temporal.address, parseConfig(raw), async () => {
      y.push(await timed(async () => {
        const r = await execa(cliPath, ['-c', configFile, 'recover', '--code-file', codeFile, '--yes', '--library', 'none'], { env: cliEnv(), extendEnv: false, reject: false, stdin: 'ignore' });
        if (r.exitCode !== 0) throw new Error(`recover failed: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      }));
    });
    await fresh.stop();
    log(`round ${i + 1}/${RUNS}: (x) by hand ${secs(x.at(-1)!)} s, (y) recover ${secs(y.at(-1)!)} s`);
  }
  const [mx, my] = [median(x), median(y)];
  console.log(`recover of a ${SIZE} GB database from the NAS, medians of ${RUNS} runs side by side (${cpus().length} cores, ${process.version}):`);
  console.log(`(x) ssh cat | age -d | gunzip | psql, by hand   ${secs(mx)} s   1.00 x (x)`);
  console.log(`(y) immich-backup recover --yes --library none  ${secs(my)} s   ${(my / mx).toFixed(2)} x (x)   target <= 1.2 x`);
} finally {
  await connection.close();
  await Promise.allSettled([temporal.stop(), pg.stop(), ping.stop(), sshd.stop()]);
}
