import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { sha256Text } from '../../core/sha256-text.js';

// The hash an approval's validator computes in the workflow sandbox must be the one the worker's
// authorization step committed to with node:crypto's, byte for byte, for any token text.

describe('sha256Text, the workflow-side SHA-256 of a string', () => {
  test('gives the published SHA-256 of "" and "abc" and of a non-ASCII string, as lowercase hex', () => {
    assert.equal(sha256Text(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal(sha256Text('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    // U+00E9, U+2713 and U+1D11E: two, three and four bytes of UTF-8 (a surrogate pair in the string).
    assert.equal(sha256Text('héllo ✓ 𝄞'), createHash('sha256').update(Buffer.from('héllo ✓ 𝄞', 'utf8')).digest('hex'));
  });

  test('equals node:crypto on every length around a block boundary and on non-ASCII text', () => {
    for (const text of ['', 'abc', 'x'.repeat(55), 'x'.repeat(56), 'x'.repeat(64), 'y'.repeat(1000), 'héllo ✓ 𝄞']) {
      assert.equal(sha256Text(text), createHash('sha256').update(text).digest('hex'), `length ${text.length}`);
    }
    for (let length = 0; length <= 130; length++) {
      const text = 'é'.repeat(length);
      assert.equal(sha256Text(text), createHash('sha256').update(text).digest('hex'), `${length} two-byte characters`);
    }
  });
});
