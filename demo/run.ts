// `npm run demo`: the whole project on throwaway parts, for a newcomer. A PostgreSQL with sample
// Immich-like data, a NAS (sshd on loopback), a photo library and a USB drive (a tmpfs), then
// `immich-backup start` (the embedded Temporal dev server, its Web UI and the worker) and the
// operator's commands against it: backup, offsite sync, mirror, restore drill, a database
// restore, status. Prints what happened and the Web UI's address; removes everything on exit:
// on a terminal after Enter (or Ctrl-C), with --keep after Ctrl-C or SIGTERM, else (no terminal,
// as in CI) right after the steps, saying so.
//
// Immich itself cannot run here (no container engine), so the Docker CLI is the test fixture
// (test/fixtures/docker, a test double that runs "in-container" tools on this host) and Immich's
// ping endpoint a small local HTTP server.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { cli, spawnCli, workerStarted } from '../test/helpers/cli.js';
import { makeLibrary, mountTmpfs } from '../test/helpers/library.js';
import { freePorts, waitFor } from '../test/helpers/net.js';
import { startPingServer } from '../test/helpers/ping.js';
import { loadImmichLike, rowCounts, startPostgres } from '../test/helpers/postgres.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../test/helpers/setup.js';
import { startSshd } from '../test/helpers/sshd.js';

const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const say = (text: string) => process.stdout.write(`\n${bold(`== ${text}`)}\n`);
const cleanups: Array<() => Promise<unknown>> = [];
const keep = process.argv.includes('--keep');
let exitCode = 0;

async function step(title: string, args: string[], env: Record<string, string>): Promise<string> {
  say(`${title}: immich-backup ${args.filter((a) => a !== '-c' && !a.endsWith('.yml')).join(' ')}`);
  const t = performance.now();
  const r = await cli(args, env);
  const seconds = ((performance.now() - t) / 1000).toFixed(1);
  process.stdout.write(String(r.stdout));
  const notes = String(r.stderr).split('\n').filter((l) => l.startsWith('started ') || l.startsWith('error'));
  process.stdout.write(`  (${[...notes, `the command took ${seconds} s`].join('; ')})\n`);
  if (r.exitCode !== 0 && !(args.includes('status') && r.exitCode === 1)) throw new Error(`${title} failed (exit ${r.exitCode}): ${String(r.stderr).trim().split('\n').at(-1)}`);
  return String(r.stdout);
}

try {
  if (process.getuid?.() !== 0) throw new Error('the demo mounts a tmpfs as the USB drive and runs PostgreSQL as the postgres user: run it as root');
  say('setting up throwaway parts');
  const root = await tempDir('demo');
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const [pg, sshd, ping] = await Promise.all([startPostgres(), startSshd(), startPingServer()]);
  cleanups.push(() => pg.stop(), () => sshd.stop(), () => ping.stop());
  await loadImmichLike(pg, 3000);
  const before = await rowCounts(pg);
  process.stdout.write(`PostgreSQL on ${pg.host}:${pg.port} with Immich-like data: ${Object.entries(before).map(([t, n]) => `${t} ${n}`).join(', ')}\n`);
  process.stdout.write(`NAS: sshd on 127.0.0.1:${sshd.port}, keys made for this run\n`);
  const library = join(root, 'library');
  const bytes = await makeLibrary(library, 200);
  const drive = join(root, 'wd-backup');
  const mounted = await mountTmpfs(drive);
  cleanups.unshift(() => mounted.unmount());
  process.stdout.write(`library: 200 photos (${(bytes / 1e6).toFixed(1)} MB) in ${library}; USB drive: a tmpfs mounted at ${drive}\n`);

  const [port, uiPort] = (await freePorts(2)) as [number, number];
  const raw = rawTestConfig({
    backupDir: join(root, 'dumps'),
    extra: {
      temporal: { devServer: { dataDir: join(root, 'temporal'), port, uiPort } },
      offsite: { ...sshd.offsite, remoteDir: join(root, 'nas', 'backups', 'immich', 'postgres') },
      library: { source: library, destination: join(drive, 'immich'), mountPoint: drive },
      immich: { composeDir: root, pingUrl: ping.url, healthTimeoutSeconds: 30 },
      // The worker's log (info: "worker started") is read by the demo, not printed.
      log: { level: 'info' },
    },
  });
  const configFile = await writeConfigFile(root, raw);
  const env = fixtureEnv(pg);

  say('immich-backup start: the embedded Temporal dev server, its Web UI, the schedules and the worker');
  const started = spawnCli(['-c', configFile, 'start'], env);
  cleanups.unshift(async () => {
    started.process.kill('SIGTERM');
    await started.process;
  });
  const uiUrl = await waitFor('the Web UI address', () => /Temporal Web UI: (http:\/\/\S+)/.exec(started.stderr())?.[1], 90_000);
  await workerStarted(started);
  process.stdout.write(`Temporal Web UI: ${uiUrl}\n`);

  await step('the nightly database backup', ['-c', configFile, 'backup', 'db'], env);
  await step('the offsite copy to the NAS', ['-c', configFile, 'backup', 'offsite'], env);
  await step('the weekly library mirror to the USB drive', ['-c', configFile, 'backup', 'library'], env);
  await step('the restore drill (the newest dump into a throwaway PostgreSQL)', ['-c', configFile, 'drill'], env);

  say('someone deletes 100 assets by mistake');
  await pg.psql('DELETE FROM asset_faces WHERE "assetId" IN (SELECT id FROM assets ORDER BY id LIMIT 100); DELETE FROM exif WHERE "assetId" IN (SELECT id FROM assets ORDER BY id LIMIT 100); DELETE FROM smart_search WHERE "assetId" IN (SELECT id FROM assets ORDER BY id LIMIT 100); DELETE FROM assets WHERE id IN (SELECT id FROM assets ORDER BY id LIMIT 100);', 'immich');
  process.stdout.write(`assets now: ${(await rowCounts(pg)).assets}\n`);
  await step('what a restore can load: local dumps, NAS copies, restore points', ['-c', configFile, 'dumps'], env);
  await step('restore the database from the newest dump (approved with --yes)', ['-c', configFile, 'restore', 'db', '--yes'], env);
  const afterRestore = await rowCounts(pg);
  process.stdout.write(`assets after the restore: ${afterRestore.assets} (before the mistake: ${before.assets})\n`);
  if (JSON.stringify(afterRestore) !== JSON.stringify(before)) throw new Error('the restored row counts differ from the original ones');

  await step('status: everything at a glance', ['-c', configFile, 'status'], env);

  say('what happened');
  process.stdout.write(
    [
      'Every run above is a Temporal workflow, recorded with its inputs, activities, retries and report.',
      `Open ${uiUrl}/namespaces/default/workflows to see them, and ${uiUrl}/namespaces/default/schedules for the schedules`,
      'that replace cron. Filter runs with: BackupKind="nightly-db-backup" AND BackupOutcome="success".',
      '',
    ].join('\n'),
  );
  if (keep || process.stdin.isTTY) {
    process.stdout.write(keep ? `Everything stays up (--keep) until Ctrl-C or SIGTERM: ${uiUrl}\n` : 'Press Enter (or Ctrl-C) to stop the demo and remove everything. ');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve).once('SIGTERM', resolve);
      if (!keep) createInterface({ input: process.stdin }).once('line', () => resolve());
    });
  } else {
    process.stdout.write('No terminal to wait on (stdin is not a TTY): removing everything now, the Web UI with it. To look around first: npm run demo -- --keep (stops on Ctrl-C or SIGTERM).\n');
  }
} catch (err) {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  exitCode = 1;
} finally {
  say('cleaning up');
  for (const cleanup of cleanups) await cleanup().catch((err: Error) => process.stderr.write(`cleanup: ${err.message}\n`));
  process.stdout.write('removed the throwaway PostgreSQL, NAS, drive, dev server and files\n');
}
process.exit(exitCode);
