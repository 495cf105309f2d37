import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { formatStamp } from '../../core/dump-names.js';
import { spawnCli, workerStarted } from '../helpers/cli.js';
import { waitFor } from '../helpers/net.js';
import { holdLock, someoneWaitsForLock } from '../helpers/postgres.js';
import { fixtureEnv, listDir, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { activityAttempts } from '../helpers/run-workflow.js';
import { useStack } from '../helpers/stack.js';
import { recordFault } from '../helpers/fault-matrix.js';

// A worker process killed with SIGKILL in the middle of pg_dumpall: Temporal notices the missing
// heartbeats, retries the dump on a new worker, and the backup completes with nothing partial left.

const stack = useStack({ postgres: 2000 });

describe('a worker killed mid-dump', () => {
  test('a new worker completes the backup; no temporary file is left and older dumps are intact', async () => {
    const dir = await tempDir('crash');
    const backupDir = join(dir, 'dumps');
    const raw = rawTestConfig({ backupDir, address: stack.temporal.address, extra: { log: { level: 'info' } } });
    const configFile = await writeConfigFile(dir, raw);
    // Yesterday's dump, inside retention: it must survive untouched.
    const older = `immich_${formatStamp(new Date(Date.now() - 24 * 3600 * 1000))}.sql.gz`;
    await execa('mkdir', ['-p', backupDir]);
    await writeFile(join(backupDir, older), 'yesterday');
    await writeFile(join(backupDir, `${older}.sha256`), 'yesterday-sum');

    const lock = await holdLock(stack.pg, 'assets');
    const first = spawnCli(['-c', configFile, 'worker'], fixtureEnv(stack.pg));
    // The CLI starts nothing before a worker polls: wait for this one.
    await workerStarted(first);
    // The operator's side: `backup db` starts the run and follows it through the crash.
    const operator = spawnCli(['-c', configFile, 'backup', 'db', '--json']);
    let second: ReturnType<typeof spawnCli> | undefined;
    try {
      await waitFor('the dump to be in flight', async () => ((await listDir(backupDir)).some((n) => n.endsWith('.partial')) ? await someoneWaitsForLock(stack.pg) : undefined), 60_000);
      first.process.kill('SIGKILL');
      await first.process;
      await lock.release();

      second = spawnCli(['-c', configFile, 'worker'], fixtureEnv(stack.pg));
      const { exitCode } = await operator.process;
      assert.equal(exitCode, 0, operator.stderr());
      const report = JSON.parse(operator.stdout()) as { file: string; pruned: string[] };
      // While it ran, the CLI showed the heartbeat details, then the retry after the crash.
      assert.match(operator.stderr(), /^… dumping$/m);
      assert.match(operator.stderr(), /^… dumpDatabase file=immich_\d{8}_\d{6}\.sql\.gz written=/m);
      assert.match(operator.stderr(), /^… dumpDatabase: attempt 1 of 4 failed: .*Heartbeat timeout.*; (next attempt at \S+Z \(in \d+ s\)|attempt 2 running)$/m);
      const files = await listDir(backupDir);
      assert.deepEqual(files, [older, `${older}.sha256`, report.file, `${report.file}.hmac`, `${report.file}.sha256`, `${report.file}.rows.json`].sort());
      assert.deepEqual(report.pruned, []);
      await execa('gzip', ['-t', join(backupDir, report.file)]);
      await execa('sha256sum', ['-c', `${report.file}.sha256`], { cwd: backupDir });

      const workflowId = /^started (\S+)$/m.exec(operator.stderr())![1]!;
      const attempts = await activityAttempts(stack.client, workflowId);
      assert.ok(attempts.includes(2), `the dump was retried: attempts ${attempts.join(',')}`);
      await recordFault('worker killed (SIGKILL) mid-dump', `a new worker completed the backup (dump attempt ${Math.max(...attempts)}); no temporary or partial file; yesterday's dump intact; the CLI followed the retry`);
    } finally {
      first.process.kill('SIGKILL');
      operator.process.kill('SIGKILL');
      second?.process.kill('SIGTERM');
      await second?.process;
    }
  });
});
