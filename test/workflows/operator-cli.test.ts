import assert from 'node:assert/strict';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { cli, cliEnv, spawnCli } from '../helpers/cli.js';
import { cliPath } from '../helpers/paths.js';
import { waitFor } from '../helpers/net.js';
import { rowCounts } from '../helpers/postgres.js';
import { changeData, operatorWorld as sharedOperatorWorld, useRestoreStack } from '../helpers/restore-stack.js';

// The operator at the terminal: no silent waits (a run is only started when a worker will take it;
// retries and waits are printed with their reasons and deadlines), Ctrl-C stops following and says
// how to go on, `follow` and `cancel` act on a run started elsewhere, `dumps` lists what restores.

const stack = useRestoreStack();

const operatorWorld = (workerEnv?: Record<string, string>) => sharedOperatorWorld(stack, workerEnv);

const startedId = (stderr: string) => /^started (\S+)$/m.exec(stderr)?.[1];

describe('the operator at the terminal', () => {
  test('problem 6: with Temporal up but no worker, backup and restore exit at once saying so, and start nothing', async () => {
    const w = await operatorWorld();
    const before = (await stack.client.workflow.count()).count;
    for (const args of [['backup', 'db'], ['restore', 'db', '--yes'], ['drill']]) {
      const r = await cli(['-c', w.configFile, ...args]);
      assert.equal(r.exitCode, 1, args.join(' '));
      assert.equal(
        r.stderr,
        `error: no worker polls task queue ${w.config.temporal.taskQueue} (workflow tasks) at ${stack.temporal.address}: nothing was started; start one with \`immich-backup start\` (or \`worker\`), then try again\n`,
      );
    }
    assert.equal((await stack.client.workflow.count()).count, before, 'no run was started');
  });

  test("problem 6 and 7: a retrying activity's reason and next attempt are printed; Ctrl-C says the run goes on and how to follow or cancel it; cancel ends it", async () => {
    const w = await operatorWorld({ FIXTURE_DOCKER_DOWN: '1' });
    try {
      const backup = spawnCli(['-c', w.configFile, 'backup', 'db']);
      const line = await waitFor('a retry line', () => /^… discoverPostgresContainer: attempt 1 of 5 failed: .*$/m.exec(backup.stderr())?.[0], 60_000);
      assert.match(line, /failed: \S*docker ps failed \(exit code 1\): Cannot connect to the Docker daemon at unix:\/\/\/var\/run\/docker\.sock\. Is the docker daemon running\?; next attempt at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+ s\)$/);
      const id = startedId(backup.stderr())!;
      backup.process.kill('SIGINT');
      const { exitCode } = await backup.process;
      assert.equal(exitCode, 130);
      assert.match(backup.stderr(), new RegExp(`\\nstopped following ${id}; the run goes on\\.\\n  follow it: immich-backup follow ${id}\\n  cancel it: immich-backup cancel ${id}\\n$`));
      assert.equal((await stack.client.workflow.getHandle(id).describe()).status.name, 'RUNNING', 'Ctrl-C did not stop the run');
      const cancelled = await cli(['-c', w.configFile, 'cancel', id]);
      assert.equal(cancelled.exitCode, 0, cancelled.stderr);
      assert.match(cancelled.stdout, new RegExp(`^${id} ended: `));
      assert.equal((await stack.client.workflow.getHandle(id).describe()).status.name, 'CANCELLED');
    } finally {
      await w.stop();
    }
  });

  test('problem 7: Ctrl-C on restore db --yes leaves the restore running; follow shows it; cancel puts the restore point back and prints the state', async () => {
    const w = await operatorWorld({ FIXTURE_DOCKER_DELAY: 'load=10' });
    try {
      await w.backup();
      await changeData(stack.pg);
      const changed = await rowCounts(stack.pg);
      const restore = spawnCli(['-c', w.configFile, 'restore', 'db', '--yes']);
      await waitFor('the load', () => restore.stderr().includes('… restoring\n') || undefined, 60_000);
      const id = startedId(restore.stderr())!;
      restore.process.kill('SIGINT');
      assert.equal((await restore.process).exitCode, 130);
      assert.match(restore.stderr(), new RegExp(`stopped following ${id}; the run goes on\\.\\n  follow it: immich-backup follow ${id}\\n  cancel it: immich-backup cancel ${id}\\n$`));
      // follow picks the run up where it is, and is left with Ctrl-C the same way.
      const following = spawnCli(['-c', w.configFile, 'follow', id]);
      await waitFor('follow to show the step', () => following.stderr().includes('… restoring\n') || undefined, 30_000);
      following.process.kill('SIGINT');
      assert.equal((await following.process).exitCode, 130);
      const cancelled = await cli(['-c', w.configFile, 'cancel', id]);
      assert.equal(cancelled.exitCode, 0, cancelled.stderr);
      assert.match(cancelled.stderr, new RegExp(`^cancellation of ${id} requested; waiting until it has left a known state …$`, 'm'));
      assert.match(cancelled.stdout, new RegExp(`^${id} ended: RestoreCancelledError: restore cancelled while restoring: the restore point \\S+/restore-points/restore-point_\\d{8}_\\d{6}\\.sql\\.gz was put back; Immich started \\(healthy\\)\\n$`));
      assert.deepEqual(await rowCounts(stack.pg), changed, 'the database is as it was before the restore');
      const again = await cli(['-c', w.configFile, 'cancel', id]);
      assert.equal(again.exitCode, 1);
      assert.equal(again.stderr, `error: ${id} is not running (FAILED): nothing to cancel\n`);

      // dumps: what a restore can load, from everywhere.
      const dump = (await w.backup()).file;
      await mkdir(w.config.offsite.remoteDir, { recursive: true });
      // A plain NAS copy from before encryption, with its tag: restorable (one without a tag is offered to adopt, never to restore).
      for (const f of [dump, `${dump}.sha256`, `${dump}.hmac`]) await copyFile(join(w.backupDir, f), join(w.config.offsite.remoteDir, f));
      const immichOwn = 'uploaded-immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz';
      await writeFile(join(w.immichBackups, immichOwn), gzipSync('-- PostgreSQL database dump complete\n'));
      const listed = await cli(['-c', w.configFile, 'dumps', '--json']);
      assert.equal(listed.exitCode, 0, listed.stderr);
      const { entries, problems } = JSON.parse(listed.stdout) as { entries: Array<{ file: string; origin: string; bytes: number; rows?: number; immichVersion?: string; restore: string; verified: string }>; problems: string[] };
      assert.deepEqual(problems, []);
      const origins = entries.map((e) => `${e.origin} ${e.file}`);
      assert.ok(origins.includes(`local ${dump}`) && origins.includes(`offsite ${dump}`) && origins.includes(`immich ${immichOwn}`), origins.join(', '));
      const point = entries.find((e) => e.origin === 'restore-point')!;
      assert.match(point.file, /^restore-point_\d{8}_\d{6}\.sql\.gz$/);
      assert.equal(point.restore, `restore db --dump ${point.file}`);
      const local = entries.find((e) => e.origin === 'local' && e.file === dump)!;
      assert.ok(local.rows! > 0 && local.bytes > 0 && local.immichVersion === '2.3.1' && /^validated and tagged, sha256 [0-9a-f]{12}… recorded$/.test(local.verified));
      assert.equal(entries.find((e) => e.origin === 'offsite')!.restore, `restore db --dump ${dump} --from offsite`);
      const human = await cli(['-c', w.configFile, 'dumps']);
      assert.match(human.stdout, new RegExp(`^${dump}\\n    staging dir; (under a minute|\\d+ min) old; [\\d.]+ KiB; validated and tagged, sha256 [0-9a-f]{12}… recorded; \\d+ rows in 6 tables recorded; Immich 2\\.3\\.1\\n    immich-backup restore db --dump ${dump}$`, 'm'));
    } finally {
      await w.stop();
    }
  });

  test('on a terminal, restore db asks right there: the plan, then yes restores exactly the dump shown', async () => {
    const w = await operatorWorld({});
    try {
      const before = await rowCounts(stack.pg);
      const dump = await w.backup();
      await changeData(stack.pg);
      // A real terminal (script(1) gives the CLI a pty), typed into as a person would.
      const terminal = execa('script', ['-qefc', [cliPath, '-c', w.configFile, 'restore', 'db'].join(' '), '/dev/null'], { env: cliEnv(), extendEnv: false, stdin: 'pipe', reject: false, buffer: false });
      let screen = '';
      terminal.stdout?.on('data', (d: Buffer) => (screen += d.toString()));
      await waitFor('the question', () => screen.includes(`approve restoring ${dump.file} now? yes / no / Enter to leave it waiting: `) || undefined, 60_000);
      assert.match(screen, new RegExp(`dump: +${dump.file}`));
      terminal.stdin!.write('yes\n');
      const { exitCode } = await terminal;
      assert.equal(exitCode, 0, screen);
      assert.match(screen, new RegExp(`approved: ${dump.file} \\(sha256 ${dump.sha256}\\) is restored now`));
      assert.match(screen, new RegExp(`restored ${dump.file} \\(sha256 ${dump.sha256}\\); Immich is healthy`));
      assert.deepEqual(await rowCounts(stack.pg), before);
    } finally {
      await w.stop();
    }
  });
});
