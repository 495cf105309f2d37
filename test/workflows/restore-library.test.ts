import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { parseConfig } from '../../src/config.js';
import type { RestoreLibraryReport, WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { startPingServer } from '../helpers/ping.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { startTestTemporal } from '../helpers/temporal.js';

// RestoreLibrary: the mirror on a real tmpfs mount back onto the library with real rsync, on a real
// dev server; a real HTTP server answers Immich's ping; the fixture docker records stops and starts.

let temporal: Awaited<ReturnType<typeof startTestTemporal>>;
let ping: Awaited<ReturnType<typeof startPingServer>>;
let connection: Connection;
let client: Client;
let dockerLog = '';
const mounts: Array<{ unmount(): Promise<void> }> = [];

before(async () => {
  [temporal, ping] = await Promise.all([startTestTemporal(), startPingServer()]);
  dockerLog = join(await tempDir('docker-log'), 'docker.log');
  process.env.FIXTURE_DOCKER_LOG = dockerLog;
  connection = await Connection.connect({ address: temporal.address });
  client = new Client({ connection });
});
after(async () => {
  for (const m of mounts) await m.unmount();
  await connection?.close();
  await Promise.all([temporal?.stop(), ping?.stop()]);
});

const dockerCalls = async () => (existsSync(dockerLog) ? (await readFile(dockerLog, 'utf8')).split('\n').filter((l) => /^(stop|compose-up) /.test(l)).map((l) => l.split(' ')[0]) : []);

/** A library of 80 files, mirrored onto a mounted drive by WeeklyLibraryMirror. */
async function mirrored(mounted = true) {
  const root = await tempDir('restore-lib');
  const library = join(root, 'library');
  const mountPoint = join(root, 'wd-backup');
  await makeLibrary(library, 80);
  if (mounted) mounts.push(await mountTmpfs(mountPoint));
  else await mkdir(mountPoint);
  const raw = rawTestConfig({
    backupDir: join(root, 'dumps'),
    address: temporal.address,
    extra: {
      library: { source: library, destination: join(mountPoint, 'immich'), mountPoint, mountWaitMinutes: 0 },
      immich: { composeDir: root, pingUrl: ping.url, healthTimeoutSeconds: 5 },
      log: { level: 'info' },
    },
  });
  const config = parseConfig(raw);
  if (mounted) assert.equal((await runWorkflow<WeeklyLibraryMirrorReport>(client, temporal.address, config, 'WeeklyLibraryMirror')).error, undefined);
  const restore = (input: Record<string, unknown>) => runWorkflow<RestoreLibraryReport>(client, temporal.address, config, 'RestoreLibrary', undefined, input);
  return { root, library, mirror: join(mountPoint, 'immich'), raw, restore };
}

async function loseFiles(library: string, count: number): Promise<string[]> {
  const paths = Object.keys(await treeDigest(library)).slice(0, count);
  for (const p of paths) await rm(join(library, p));
  return paths;
}

describe('RestoreLibrary', () => {
  test('files deleted from the library come back from the mirror, with Immich stopped meanwhile', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 12);
    await writeFile(join(w.library, 'user0', '2020', '01', 'IMG_000000.jpg'), 'damaged');
    await rm(dockerLog, { force: true });
    const { report, error } = await w.restore({ approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'restored');
    assert.equal(report!.filesTransferred, 13);
    assert.equal(report!.deleted, 0);
    assert.equal(report!.healthy, true);
    assert.match(report!.message, /regenerates thumbnails/);
    assert.deepEqual(await treeDigest(w.library), await treeDigest(w.mirror));
    assert.deepEqual(await dockerCalls(), ['stop', 'compose-up']);
  });

  test('a dry run reports what would change and changes nothing', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 5);
    const before = await treeDigest(w.library);
    await rm(dockerLog, { force: true });
    const { report, error } = await w.restore({ dryRun: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.outcome, 'dry-run');
    assert.equal(report!.filesTransferred, 5);
    assert.match(report!.message, /^dry run: the restore would copy 5 file\(s\) .*nothing was changed$/);
    assert.deepEqual(await treeDigest(w.library), before);
    assert.deepEqual(await dockerCalls(), []);
  });

  test('--delete also removes library files the mirror does not have', async () => {
    const w = await mirrored();
    await writeFile(join(w.library, 'stray.jpg'), 'not in the mirror');
    const { report, error } = await w.restore({ delete: true, approved: true });
    assert.equal(error, undefined, String(error));
    assert.equal(report!.deleted, 1);
    assert.deepEqual(await treeDigest(w.library), await treeDigest(w.mirror));
  });

  test('with the drive not mounted it refuses before stopping anything', async () => {
    const w = await mirrored(false);
    await rm(dockerLog, { force: true });
    const { error } = await w.restore({ approved: true });
    assert.ok(error instanceof WorkflowFailedError);
    const failure = (error.cause as { cause?: unknown }).cause;
    assert.ok(failure instanceof ApplicationFailure);
    assert.equal(failure.type, 'DriveNotMountedError');
    assert.match(failure.message, /^drive not mounted at .*: nothing was restored$/);
    assert.deepEqual(await dockerCalls(), []);
  });

  test('the CLI follows a restore: it shows the step, waits for approval, and `restore approve` lets it proceed', async () => {
    const w = await mirrored();
    await loseFiles(w.library, 3);
    const configFile = await writeConfigFile(w.root, w.raw);
    const worker = spawnCli(['-c', configFile, 'worker']);
    try {
      await workerStarted(worker);
      const operator = spawnCli(['-c', configFile, 'restore', 'library', '--json']);
      const workflowId = await waitFor('the approval prompt', () => /approve with: immich-backup restore approve (\S+)\)/.exec(operator.stderr())?.[1], 60_000);
      const approve = await cli(['-c', configFile, 'restore', 'approve', workflowId]);
      assert.equal(approve.exitCode, 0, approve.stderr);
      const { exitCode } = await operator.process;
      assert.equal(exitCode, 0, operator.stderr());
      const report = JSON.parse(operator.stdout()) as RestoreLibraryReport;
      assert.equal(report.outcome, 'restored');
      assert.equal(report.filesTransferred, 3);
      assert.match(operator.stderr(), /^… step: checking the mirror\n… step: awaiting approval \(approve with: immich-backup restore approve restore-library-cli-/m);
    } finally {
      worker.process.kill('SIGTERM');
      await worker.process;
    }
  });
});
