import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { dumpsInListing } from '../../adapters/nas/remote-dumps.js';

describe('what a NAS listing holds', () => {
  test('a dump counts in each layout only with the checksum file written last; which layout is said', () => {
    const a = 'immich_20261120_030000.sql.gz';
    const b = 'immich_20261121_030000.sql.gz';
    const c = 'immich_20261122_030000.sql.zst';
    const d = 'immich_20261123_030000.sql.gz';
    const listing = [
      `${a}.age`, `${a}.age.sha256`, `${a}.hmac`, `${a}.rows.json.age`,
      b, `${b}.sha256`, `${b}.hmac`,
      `${c}.age`, `${c}.age.sha256`, c, `${c}.sha256`,
      // An upload cut short: the ciphertext without its checksum, and a temporary name.
      `${d}.age`, `.${d}.age.partial`, 'notes.txt', 'keyring', 'immich_20261399_030000.sql.gz.age', `${a}.age.age`,
    ];
    assert.deepEqual(dumpsInListing(listing), [
      { file: a, encrypted: true, legacy: false, tagged: true, rows: true },
      { file: b, encrypted: false, legacy: true, tagged: true, rows: false },
      { file: c, encrypted: true, legacy: true, tagged: false, rows: false },
    ]);
  });
});
