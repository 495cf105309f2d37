import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { awaitCommand, probeCommand, runCommand, startCommand, startPipedPair, stopCommand } from '../../adapters/commands/run-command.js';
import { CommandFailedError, CommandNotFoundError } from '../../core/errors.js';
import { waitFor } from '../helpers/net.js';
import { ownProcessesNamed } from '../helpers/processes.js';
import { inTmpdir, tempDir } from '../helpers/setup.js';

// The subprocess runner, on real subprocesses. MockActivityEnvironment is the SDK's own activity
// context outside a worker: it gives the runner a real cancellation signal and records heartbeats.

describe('runCommand', () => {
  test('arguments reach the child literally: shell metacharacters run nothing', async () => {
    const dir = await tempDir('run');
    const evil = [`$(touch ${join(dir, 'pwned1')})`, `; touch ${join(dir, 'pwned2')}`, `a b\nc`, '`id`', "'\"", '*'];
    const { stdout } = await runCommand('printf', ['%s\\0', ...evil], { label: 'printf' });
    assert.deepEqual(stdout.split('\0').slice(0, -1), evil);
    assert.equal(existsSync(join(dir, 'pwned1')) || existsSync(join(dir, 'pwned2')), false);
  });

  test('a failing command becomes CommandFailedError with the exit code and its stderr tail on one line', async () => {
    await assert.rejects(runCommand('sh', ['-c', 'echo first >&2; echo "connection refused" >&2; exit 3'], { label: 'probe' }), (err: unknown) => {
      assert.ok(err instanceof CommandFailedError);
      assert.equal(err.message, 'probe failed (exit code 3): first | connection refused');
      return true;
    });
  });

  test('a missing executable becomes CommandNotFoundError', async () => {
    await assert.rejects(runCommand('/nonexistent/pigz', ['-c'], { label: 'pigz' }), CommandNotFoundError);
  });

  test('secrets travel in the environment, not in argv', async () => {
    const { stdout } = await runCommand('sh', ['-c', 'printf %s "$PGPASSWORD"'], { label: 'env', env: { PGPASSWORD: 'hunter2' } });
    assert.equal(stdout, 'hunter2');
  });

  test('inside an activity it heartbeats while the child runs', async () => {
    const env = new MockActivityEnvironment();
    const beats: unknown[] = [];
    env.on('heartbeat', (d: unknown) => beats.push(d));
    await env.run(() => runCommand('sleep', ['1.5'], { label: 'sleep' }));
    assert.ok(beats.length >= 2, `heartbeats: ${beats.length}`);
    assert.deepEqual(Object.keys(beats[0] as object), ['step', 'runningSeconds']);
  });

  test('cancelling the activity kills the child and its children, and rejects with the cancellation', async () => {
    const env = new MockActivityEnvironment();
    const marker = `immich-backup-test-${process.pid}`;
    const count = async () => (await ownProcessesNamed({ cmdline: new RegExp(marker) })).length;
    // A background grandchild and the child itself, both named by the marker.
    const running = env.run(() => runCommand('bash', ['-c', `(exec -a ${marker}-grandchild sleep 300) & exec -a ${marker}-child sleep 301`], { label: 'sleepers' }));
    await waitFor('both sleepers', async () => ((await count()) === 2 ? true : undefined));
    env.cancel();
    await assert.rejects(running, CancelledFailure);
    await waitFor('every sleeper to exit', async () => ((await count()) === 0 ? true : undefined), 5000);
  });
});

describe('startPipedPair', () => {
  test('producer | consumer through an OS pipe: every byte arrives, none passes through this process, no FIFO is left', async () => {
    // The FIFO's directory goes to a temporary directory of this test's own: another file's dump running at the same time makes one too.
    const tmp = await tempDir('fifo-test');
    // What this process's own threads read and wrote through system calls (/proc/self/task/*/io:
    // rchar, wchar; the process-wide /proc/self/io also counts its reaped children), not its CPU
    // time, which other test files running at once on the same cores make noisy.
    const io = () =>
      readdirSync('/proc/self/task').reduce((sum, tid) => {
        const fields = Object.fromEntries(readFileSync(`/proc/self/task/${tid}/io`, 'utf8').trim().split('\n').map((l) => l.split(': ')));
        return sum + Number(fields.rchar) + Number(fields.wchar);
      }, 0);
    const before = io();
    const { producer: dump, consumer: compress } = await inTmpdir(tmp, () => startPipedPair({ file: 'head', args: ['-c', '300000000', '/dev/zero'], label: 'head' }, { file: 'wc', args: ['-c'], label: 'wc' }));
    let out = '';
    compress.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await Promise.all([awaitCommand(dump, 'head'), awaitCommand(compress, 'wc')]);
    assert.equal(out.trim(), '300000000');
    const moved = io() - before;
    // 300 MB through this process would be 600 MB read and written; wc's answer is 10 bytes.
    assert.ok(moved < 4 << 20, `this process read and wrote ${moved} bytes`);
    assert.deepEqual(await readdir(tmp), []);
  });

  test('a failing producer is reported as itself; the consumer sees the end of its input', async () => {
    const { producer: dump, consumer: compress } = await startPipedPair({ file: 'sh', args: ['-c', 'printf partial; echo "pg_dump: error: connection lost" >&2; exit 1'], label: 'pg_dumpall' }, { file: 'wc', args: ['-c'], label: 'wc' });
    let out = '';
    compress.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const [dumped, counted] = await Promise.allSettled([awaitCommand(dump, 'pg_dumpall'), awaitCommand(compress, 'wc')]);
    assert.equal(dumped.status, 'rejected');
    assert.equal((dumped as PromiseRejectedResult).reason.message, 'pg_dumpall failed (exit code 1): pg_dump: error: connection lost');
    assert.equal(counted.status, 'fulfilled');
    assert.equal(out.trim(), '7');
  });
});

/** A process's group id, from /proc (field 5 of stat, after the command name in parentheses). */
const processGroup = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[2]);

describe('servers, probes and other users', () => {
  test('a server stays in this process group, its exit is an answer, and stopCommand stops it by its own pid', async () => {
    const server = startCommand('sleep', ['300'], { label: 'sleep (server)', server: true });
    assert.equal(processGroup(server.pid!), processGroup(process.pid));
    stopCommand(server);
    const result = await server;
    assert.equal(result.signal, 'SIGTERM');
    const failed = await startCommand('sh', ['-c', 'echo "FATAL: data directory has wrong ownership" >&2; exit 1'], { label: 'postgres', server: true });
    assert.equal(failed.exitCode, 1);
    assert.equal(failed.stderr, 'FATAL: data directory has wrong ownership');
  });

  test('any other command leads a process group of its own', async () => {
    const child = startCommand('sleep', ['300'], { label: 'sleep' });
    assert.equal(processGroup(child.pid!), child.pid);
    stopCommand(child);
    await assert.rejects(awaitCommand(child, 'sleep'), /killed by SIGTERM/);
  });

  test('a probe answers with the exit code, also for a command that is missing', async () => {
    assert.equal((await probeCommand('sh', ['-c', 'exit 2'], { label: 'pg_isready' })).exitCode, 2);
    assert.equal((await probeCommand('sh', ['-c', 'echo true'], { label: 'docker inspect' })).stdout, 'true');
    assert.equal((await probeCommand('/nonexistent/pg_isready', [], { label: 'pg_isready' })).exitCode, undefined);
  });

  test('a cancelled activity stops a probe and rejects with the cancellation', async () => {
    const env = new MockActivityEnvironment();
    const probing = env.run(() => probeCommand('sleep', ['300'], { label: 'pg_isready' }));
    setTimeout(() => env.cancel(), 200);
    await assert.rejects(probing, CancelledFailure);
  });

  // The suite runs as root (the drill's throwaway runs as drill.runAs only then).
  test('uid and gid run the command as that user', async () => {
    const [uid, gid] = await Promise.all(['-u', '-g'].map(async (flag) => Number((await runCommand('id', [flag, 'nobody'], { label: 'id' })).stdout)));
    const { stdout } = await runCommand('id', ['-u'], { label: 'id', uid, gid, progress: false });
    assert.equal(Number(stdout), uid);
    assert.equal(Number((await runCommand('id', ['-g'], { label: 'id', uid, gid })).stdout), gid);
  });
});
