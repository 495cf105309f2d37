import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checksumFileName, dumpFileName, dumpFormat, formatStamp, immichVersionOfBackupName, isDumpName, isImmichBackupName, isRestorePointName, parseDumpName, partialFileName, restorePointFileName, salvageFileName, stampOfName } from '../../core/dump-names.js';

describe('dump names', () => {
  test('a stamp is the UTC time and round-trips through the file name', () => {
    const at = new Date(Date.UTC(2026, 10, 26, 3, 0, 7));
    assert.equal(formatStamp(at), '20261126_030007');
    assert.equal(dumpFileName('20261126_030007'), 'immich_20261126_030007.sql.gz');
    assert.deepEqual(parseDumpName('immich_20261126_030007.sql.gz'), at);
    assert.equal(dumpFileName('20261126_030007', 'zstd'), 'immich_20261126_030007.sql.zst');
    assert.deepEqual(parseDumpName('immich_20261126_030007.sql.zst'), at);
    assert.equal(dumpFormat('immich_20261126_030007.sql.zst'), 'zstd');
    assert.equal(dumpFormat('immich_20261126_030007.sql.gz'), 'gzip');
  });

  test('only our exact names count as dumps', () => {
    for (const name of ['immich_20261126_030007.sql.gz.sha256', 'immich-db-backup-20261126.sql.gz', 'immich_20261399_030007.sql.gz', '../immich_20261126_030007.sql.gz', 'immich_20261126_030007.sql.gz\n', '.immich_20261126_030007.sql.gz.partial', 'immich_20261126_030007.sql.zstd', 'immich_20261126_030007.sql.zst.sha256', 'immich_20261126_030007.sql']) {
      assert.equal(isDumpName(name), false, JSON.stringify(name));
    }
  });

  test('temporary and checksum names never look like a dump', () => {
    const name = 'immich_20261126_030007.sql.gz';
    assert.equal(isDumpName(partialFileName(name)), false);
    assert.equal(isDumpName(checksumFileName(name)), false);
    assert.throws(() => dumpFileName('2026; rm -rf /'), /not a dump stamp/);
  });

  test('restore points have a name of their own that no reader of backups takes for a dump', () => {
    const name = restorePointFileName('20261126_030007');
    assert.equal(name, 'restore-point_20261126_030007.sql.gz');
    assert.equal(restorePointFileName('20261126_030007', 'zstd'), 'restore-point_20261126_030007.sql.zst');
    assert.ok(isRestorePointName(name));
    assert.ok(!isDumpName(name), 'never a backup');
    assert.ok(!isRestorePointName('immich_20261126_030007.sql.gz'));
    for (const bad of ['restore-point_20261399_030007.sql.gz', '../restore-point_20261126_030007.sql.gz', 'restore-point_20261126_030007.sql.gz.sha256']) assert.ok(!isRestorePointName(bad), bad);
    assert.deepEqual(stampOfName(name), new Date(Date.UTC(2026, 10, 26, 3, 0, 7)));
    const salvage = salvageFileName('immich', '20261126T030007');
    assert.ok(!isDumpName(salvage) && !isRestorePointName(salvage) && !isImmichBackupName(salvage), 'a salvage is never restorable as a backup');
  });

  test("Immich's own backups restore under every name Immich gives them, and say their version", () => {
    for (const name of ['immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz', 'uploaded-immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz', 'restore-point-immich-db-backup-20261126T020000-v2.3.1-pg15.18.sql.gz']) {
      assert.ok(isImmichBackupName(name), name);
      assert.equal(immichVersionOfBackupName(name), '2.3.1');
      assert.deepEqual(stampOfName(name), new Date(Date.UTC(2026, 10, 26, 2, 0, 0)));
    }
    for (const bad of ['other-immich-db-backup-20261126T020000.sql.gz', '../immich-db-backup-x.sql.gz', 'immich-db-backup-a..b.sql.gz', 'uploaded-immich-db-backup-x.sql']) assert.ok(!isImmichBackupName(bad), bad);
  });
});
