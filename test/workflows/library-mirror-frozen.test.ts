import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { makeLibrary, mountLoopExt4 } from '../helpers/library.js';
import { failureType } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// The versioned mirror writes to the drive outside rsync too (the versions folder, the unchecked
// marker, the pairing): on a frozen drive (fsfreeze on a real loop-mounted ext4) each of those is
// bounded like rsync, instead of waiting in the kernel for ever.

// scripts/test.sh: alone (it freezes a loop-mounted filesystem)

const stack = useStack();

describe('WeeklyLibraryMirror on a frozen drive', () => {
  test('a drive frozen before the run fails it as stalled within library.stallSeconds, in one line, not retried', async () => {
    const root = await tempDir('frozen-versions');
    const source = join(root, 'library');
    await makeLibrary(source, 10);
    const mountPoint = join(root, 'wd-backup');
    const drive = await mountLoopExt4(mountPoint);
    try {
      await drive.freeze();
      const config = testConfig({ backupDir: join(root, 'dumps'), extra: { library: { source, destination: join(mountPoint, 'immich'), mountPoint, stallSeconds: 3 } } });
      const started = Date.now();
      const { error } = await runWorkflow<WeeklyLibraryMirrorReport>(stack.client, stack.temporal.address, config, 'WeeklyLibraryMirror');
      const failure = failureType(error);
      assert.equal(failure.type, 'StalledError', failure.message);
      assert.match(failure.message, /^the library mirror onto \S+ stalled: creating the versions folder did not finish within 3 s \(library\.stallSeconds\); check the drive/);
      assert.doesNotMatch(failure.message, /\n/);
      assert.ok(Date.now() - started < 60_000, `failed in ${Date.now() - started} ms`);
    } finally {
      await drive.thaw();
      await drive.unmount();
    }
  });
});
