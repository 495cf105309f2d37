import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { join } from 'node:path';
import { execa } from 'execa';
import { trustedSetup } from '../../adapters/dump-store/index.js';
import { parseConfig } from '../../config/config.js';
import { collectStatus } from '../../status/status.js';
import { cliEnv } from '../helpers/cli.js';
import { cliPath } from '../helpers/paths.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';

// The operator's side of the recovery code, through the real CLI: shown until typed back, a wrong
// code confirms nothing, `status` says so until it is confirmed, a change asks again; the keys
// listed and rotated. No Temporal is involved: these work on the keyring beside security.keyFile.

const run = (configFile: string, args: string[], input = '') => execa(cliPath, ['-c', configFile, ...args], { env: cliEnv(), extendEnv: false, reject: false, input });
const CODE = /^\s+((?:[0-9A-Z]{4}-){5}[0-9A-Z]{4})$/m;

async function world() {
  const root = await tempDir('recovery-code');
  const raw = rawTestConfig({ backupDir: join(root, 'dumps'), extra: { offsite: { host: '127.0.0.1', port: 9, remoteDir: join(root, 'nas') } } });
  return { config: parseConfig(raw), configFile: await writeConfigFile(root, raw) };
}

const recoveryRow = async (config: ReturnType<typeof parseConfig>) => (await collectStatus(config, undefined)).rows.find((r) => r.id === 'recovery-code')!;

describe('the recovery code at the terminal', () => {
  test('before the first start there is no key: said in one line, nothing made', async () => {
    const { configFile } = await world();
    const r = await run(configFile, ['recovery-code']);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.match(r.stderr, /^error: key file .* does not exist: the worker makes it on its first start/);
  });

  test('shown until typed back; a wrong code confirms nothing; status says "recovery code not confirmed" until the right one is typed', async () => {
    const { config, configFile } = await world();
    const { recovery } = await trustedSetup(config);
    assert.equal(recovery.made, true);
    const unconfirmed = await recoveryRow(config);
    assert.equal(unconfirmed.state, 'missing');
    assert.equal(unconfirmed.problem, true);
    assert.match(unconfirmed.summary, /^recovery code not confirmed/);

    const shown = await run(configFile, ['recovery-code']);
    assert.equal(shown.exitCode, 0, shown.stderr);
    const code = CODE.exec(shown.stdout)?.[1];
    assert.equal(code, recovery.code, shown.stdout);
    assert.match(shown.stdout, /recovery-code confirm/);

    const wrong = await run(configFile, ['recovery-code', 'confirm'], 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA\n');
    assert.equal(wrong.exitCode, 1);
    assert.match(wrong.stderr, /^error: that is not the recovery code: nothing was confirmed/);
    assert.equal((await recoveryRow(config)).state, 'missing');

    const right = await run(configFile, ['recovery-code', 'confirm'], `${code!.toLowerCase()}\n`);
    assert.equal(right.exitCode, 0, right.stderr);
    assert.match(right.stdout, /recovery code confirmed: it is no longer kept on this host/);
    const confirmed = await recoveryRow(config);
    assert.equal(confirmed.state, 'ok');
    assert.equal(confirmed.problem, false);
    const again = await run(configFile, ['recovery-code']);
    assert.doesNotMatch(again.stdout, CODE, 'a confirmed code is never shown again');
    assert.match(again.stdout, /is confirmed .* not kept on this host/);

    const changed = await run(configFile, ['recovery-code', 'change']);
    assert.equal(changed.exitCode, 0, changed.stderr);
    const next = CODE.exec(changed.stdout)?.[1];
    assert.ok(next && next !== code, changed.stdout);
    assert.equal((await recoveryRow(config)).state, 'missing', 'a new code is unconfirmed until typed back');
  });

  test('keys lists the fingerprints; a rotation adds a current key and retires the old one', async () => {
    const { config, configFile } = await world();
    await trustedSetup(config);
    const before = JSON.parse((await run(configFile, ['keys', '--json'])).stdout) as { keys: Array<{ id: string; current: boolean }>; recoveryCode: string };
    assert.equal(before.keys.length, 1);
    assert.equal(before.recoveryCode, 'not confirmed');
    // The NAS of this config does not answer: refused, nothing changed; --without-nas rotates anyway.
    const refused = await run(configFile, ['keys', 'rotate']);
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /^error: cannot list the NAS copies the current key vouches for .*: nothing was changed/m);
    assert.equal((JSON.parse((await run(configFile, ['keys', '--json'])).stdout) as { keys: unknown[] }).keys.length, 1);
    const rotated = await run(configFile, ['keys', 'rotate', '--without-nas']);
    assert.equal(rotated.exitCode, 0, rotated.stderr);
    assert.match(rotated.stdout, new RegExp(`retired key ${before.keys[0]!.id}`));
    assert.match(rotated.stdout, /the recovery code changed too/);
    assert.match(rotated.stdout, CODE, 'the new code is shown');
    const after = JSON.parse((await run(configFile, ['keys', '--json'])).stdout) as { keys: Array<{ id: string; current: boolean; retired?: string }> };
    assert.deepEqual(after.keys.map((k) => [k.id === before.keys[0]!.id, k.current, !!k.retired]), [[true, false, true], [false, true, false]]);
    const text = (await run(configFile, ['keys'])).stdout;
    assert.match(text, /current/);
    assert.match(text, /recovery code: NOT CONFIRMED/);
    assert.equal((await recoveryRow(config)).state, 'missing', 'after a rotation, the new code waits to be typed back');
  });
});
