import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { runCommand } from '../../adapters/commands/run-command.js';
import { runRsync } from '../../adapters/commands/rsync.js';
import { CommandFailedError, StalledError } from '../../core/errors.js';
import { tempDir } from '../helpers/setup.js';

// What an exit means, read from the exit code the runner records, never from message text; on a
// real rsync: its --timeout against a "remote" whose shell says nothing (exit 30), and a source
// that does not exist (exit 23).

/** A source behind a remote shell that never answers: rsync's --timeout=1 ends it with exit 30. */
async function stalledSource(): Promise<{ args: string[] }> {
  const dir = await tempDir('rsync-stall');
  await mkdir(join(dir, 'dst'));
  return { args: ['-a', '--timeout=1', '-e', 'sh -c "sleep 3" --', 'nas:/library/', `${join(dir, 'dst')}/`] };
}

describe('exit codes', () => {
  test('CommandFailedError carries the exit code, or the signal, beside its unchanged message', async () => {
    await assert.rejects(runCommand('sh', ['-c', 'echo gone >&2; exit 30'], { label: 'probe' }), (err: unknown) => {
      assert.ok(err instanceof CommandFailedError);
      assert.equal(err.message, 'probe failed (exit code 30): gone');
      assert.equal(err.exitCode, 30);
      assert.equal(err.signal, undefined);
      return true;
    });
    await assert.rejects(runCommand('sh', ['-c', 'kill -TERM $$'], { label: 'probe' }), (err: unknown) => {
      assert.ok(err instanceof CommandFailedError);
      assert.equal(err.message, 'probe failed (killed by SIGTERM)');
      assert.equal(err.signal, 'SIGTERM');
      assert.equal(err.exitCode, undefined);
      return true;
    });
  });

  test("rsync's exit 30 (its --timeout) is the StalledError its caller describes, worded by default or as the caller words it", async () => {
    const { args } = await stalledSource();
    const stall = { what: 'the upload of x.sql.gz to nas', setting: 'offsite.stallSeconds', seconds: 60, advice: 'check the NAS (its disk and its ssh server)' };
    await assert.rejects(runRsync(args, { step: 'uploading', stall }), (err: unknown) => {
      assert.ok(err instanceof StalledError);
      assert.equal(err.message, 'the upload of x.sql.gz to nas stalled: rsync saw no data move for 60 s (offsite.stallSeconds) and stopped: check the NAS (its disk and its ssh server)');
      return true;
    });
    const restore = { ...stall, what: 'the library restore from /mnt/usb', setting: 'library.stallSeconds', timedOut: { what: 'the library restore', ending: '; check the drive (dmesg), then run it again' } };
    await assert.rejects(runRsync(args, { step: 'restoring', stall: restore }), (err: unknown) => {
      assert.ok(err instanceof StalledError);
      assert.equal(err.message, 'the library restore stalled: rsync saw no data move for 60 s (library.stallSeconds); check the drive (dmesg), then run it again');
      return true;
    });
  });

  test('without a stall description, exit 30 stays a CommandFailedError with its exit code', async () => {
    const { args } = await stalledSource();
    await assert.rejects(runRsync(args, { step: 'uploading' }), (err: unknown) => err instanceof CommandFailedError && err.exitCode === 30 && /\(exit code 30\)/.test(err.message));
  });

  test('an exit code the caller counts as done resolves; any other rejects with its code', async () => {
    const dir = await tempDir('rsync-partial');
    await writeFile(join(dir, 'kept'), 'x');
    // A source that does not exist: rsync's exit 23 (partial transfer).
    const args = ['-a', '--', join(dir, 'missing') + '/', join(dir, 'dst') + '/'];
    await assert.rejects(runRsync(args, { step: 'copying' }), (err: unknown) => err instanceof CommandFailedError && err.exitCode === 23);
    const stats = await runRsync(args, { step: 'copying', okExitCodes: [23] });
    assert.equal(stats.filesTransferred, 0);
  });
});
