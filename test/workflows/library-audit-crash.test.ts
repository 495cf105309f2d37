import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { defaultPayloadConverter } from '@temporalio/common';
import { execa } from 'execa';
import type { AuditState } from '../../adapters/mirror/audit-state.js';
import type { LibraryAuditReport } from '../../workflows/index.js';
import { spawnCli, workerStarted } from '../helpers/cli.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { makeImmichLibrary, mountTmpfs } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { activityAttempts } from '../helpers/run-workflow.js';
import { useStack } from '../helpers/stack.js';

// A worker process killed with SIGKILL in the middle of a LibraryAudit pass: Temporal notices the
// missing heartbeats, retries the audit on a new worker process, and the retry goes on from the
// position in the last heartbeat. Every asset is counted exactly once. The fixture docker holds
// each page of Immich's assets back (FIXTURE_DOCKER_DELAY assets=N) so the kill lands mid-pass.


const stack = useStack({ postgres: true });

describe('a worker killed mid-audit', () => {
  test('a new worker resumes the pass from the last heartbeat and completes it with exactly one count per asset', async () => {
    const root = await tempDir('audit-crash');
    const source = join(root, 'upload');
    const assets = await makeImmichLibrary(stack.pg, source, 2500, { externalCount: 30 });
    const mountPoint = join(root, 'wd-backup');
    const destination = join(mountPoint, 'immich');
    stack.mounted(await mountTmpfs(mountPoint));
    await execa('rsync', ['-a', `${source}/`, `${destination}/`]);
    const configFile = await writeConfigFile(root, rawTestConfig({ backupDir: join(root, 'dumps'), address: stack.temporal.address, extra: { library: { source, destination, mountPoint }, log: { level: 'info' } } }));

    // Each page of 1000 assets waits 12 s: the second heartbeat the server records (16 s in) falls
    // after the first page and before the second.
    const first = spawnCli(['-c', configFile, 'worker'], fixtureEnv(stack.pg, { FIXTURE_DOCKER_DELAY: 'assets=12' }));
    await workerStarted(first);
    const operator = spawnCli(['-c', configFile, 'audit', 'library', '--json']);
    let second: ReturnType<typeof spawnCli> | undefined;
    try {
      const workflowId = await waitFor('the run to start', () => /^started (\S+)$/m.exec(operator.stderr())?.[1]);
      const handle = stack.client.workflow.getHandle(workflowId);
      const position = await waitFor(
        'a heartbeat after the first page',
        async () => {
          const audit = (await handle.describe()).raw.pendingActivities?.find((a) => a.activityType?.name === 'auditLibrary');
          const payload = audit?.heartbeatDetails?.payloads?.[0];
          const details = payload ? defaultPayloadConverter.fromPayload<{ state?: AuditState }>(payload) : undefined;
          const covered = details?.state?.pass?.covered ?? 0;
          return covered > 0 ? details!.state!.pass! : undefined;
        },
        60_000,
        200,
      );
      assert.ok(position.covered < 2530, `killed mid-pass: ${position.covered} covered`);
      first.process.kill('SIGKILL');
      await first.process;

      second = spawnCli(['-c', configFile, 'worker'], fixtureEnv(stack.pg));
      const { exitCode } = await operator.process;
      assert.equal(exitCode, 0, operator.stderr());
      const report = JSON.parse(operator.stdout()) as LibraryAuditReport;
      const p = report.pass;
      assert.equal(p.completed, true);
      assert.equal(p.covered, 2530);
      assert.deepEqual([p.library.ok, p.library.missing, p.library.mismatched, p.library.notChecked], [2500, 0, 0, 0]);
      assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched, p.mirror.notChecked], [2500, 0, 0, 0]);
      assert.deepEqual(p.skipped, { notContent: 30, outsideLibrary: 0 });
      // The retry went on from the heartbeat's position, not from the start.
      assert.equal(report.run.resumedFrom, `attempt 1's last heartbeat (after ${position.covered} assets of the pass)`);
      assert.equal(report.run.covered, 2530);
      const bytes = assets.reduce((n, a, i) => n + 1000 + ((i * 7919) % 9000), 0) * 2;
      assert.equal(p.bytes, bytes);
      // The operator followed it in words: progress, then the retry after the crash.
      assert.match(operator.stderr(), /^… auditLibrary checked=\d+ of 2530 assets \(pass 1; this run \d+ of the rest\) bytes=\S+ \S+ rate=\S+ \S+\/s current=\S* mirror=checked$/m);
      assert.match(operator.stderr(), /^… auditLibrary: attempt 1 of 5 failed: .*Heartbeat timeout.*$/m);

      const attempts = await activityAttempts(stack.client, workflowId);
      assert.ok(attempts.includes(2), `the audit was retried: attempts ${attempts.join(',')}`);
      await recordFault('worker killed (SIGKILL) mid-audit', `a new worker resumed LibraryAudit from the heartbeat after ${position.covered} assets; the pass completed with each of 2530 assets counted once`);
    } finally {
      first.process.kill('SIGKILL');
      operator.process.kill('SIGKILL');
      second?.process.kill('SIGTERM');
      await second?.process;
    }
  });
});
