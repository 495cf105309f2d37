import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checksumFileName, dumpFileName, dumpFormat, formatStamp, isDumpName, parseDumpName, partialFileName } from '../../src/dump-names.js';

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
});
