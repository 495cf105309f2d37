import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadConfig, parseConfig, redactConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../helpers/setup.js';

describe('config', () => {
  test('the defaults are the runbook\'s', () => {
    const config = parseConfig({});
    assert.equal(config.postgres.runtime, 'docker');
    assert.equal(config.postgres.containerPattern, 'immich.*postgres');
    assert.equal(config.postgres.user, 'postgres');
    assert.equal(config.docker.command, 'docker');
    assert.equal(config.backup.dir, join(homedir(), 'backups/immich/postgres'));
    assert.equal(config.backup.retentionDays, 7);
    assert.equal(config.backup.minBytes, 1024);
    assert.equal(config.temporal.address, undefined, 'no address: the embedded dev server');
    assert.equal(config.temporal.devServer.uiPort, 8233);
    assert.equal(config.temporal.devServer.dataDir, join(homedir(), '.local/share/immich-backup/temporal'));
  });

  test('the sample config parses and changes no default', async () => {
    const { repoRoot } = await import('../helpers/paths.js');
    assert.deepEqual(loadConfig({ path: join(repoRoot, 'config', 'immich-backup.example.yml'), env: {} }), parseConfig({}));
  });

  test('a YAML file is read from --config, else from IMMICH_BACKUP_CONFIG', async () => {
    const dir = await tempDir('config');
    const file = join(dir, 'c.yml');
    await writeFile(file, 'backup:\n  retentionDays: 14\n  dir: /srv/dumps\npostgres:\n  runtime: none\n');
    for (const config of [loadConfig({ path: file, env: {} }), loadConfig({ env: { IMMICH_BACKUP_CONFIG: file } })]) {
      assert.equal(config.backup.retentionDays, 14);
      assert.equal(config.backup.dir, '/srv/dumps');
      assert.equal(config.postgres.runtime, 'none');
    }
  });

  test('environment variables override connection settings and secrets', () => {
    const config = parseConfig(
      { temporal: { address: 'a:1' } },
      { env: { IMMICH_BACKUP_TEMPORAL_ADDRESS: 'temporal.lan:7233', IMMICH_BACKUP_PG_PASSWORD: 'pw', IMMICH_BACKUP_DOCKER_COMMAND: 'podman' } },
    );
    assert.equal(config.temporal.address, 'temporal.lan:7233');
    assert.equal(config.postgres.password, 'pw');
    assert.equal(config.docker.command, 'podman');
    assert.equal(redactConfig(config).postgres.password, '[redacted]');
  });

  test('every bad field is named by its path in one line', () => {
    assert.throws(
      () =>
        parseConfig({
          backup: { retentionDays: 0, minBytes: 'big', compressor: 'bzip2' },
          postgres: { runtime: 'kubernetes', containerPattern: '(' },
          temporal: { address: 'nope' },
          surprise: true,
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.doesNotMatch(err.message, /\n/);
        for (const path of ['backup.retentionDays', 'backup.minBytes', 'backup.compressor', 'postgres.runtime', 'postgres.containerPattern', 'temporal.address', 'surprise: unknown key']) {
          assert.ok(err.message.includes(path), `${path} in: ${err.message}`);
        }
        return true;
      },
    );
  });

  test('status thresholds, notifications and the drill: defaults, bad values named, URLs redacted when printed', () => {
    const config = parseConfig({});
    assert.deepEqual(config.status, { dbStaleHours: 26, offsiteStaleHours: 26, mirrorStaleDays: 8, drillStaleDays: 8 });
    assert.equal(config.schedules.backupHealth, '15 * * * *');
    assert.equal(config.drill.engine, 'auto');
    assert.throws(
      () => parseConfig({ notifications: { webhooks: ['ftp://x/y'], ntfy: ['not a url'], pings: { nightly: 'https://hc-ping.com/x' } }, drill: { engine: 'vm', image: 'a b' }, status: { dbStaleHours: 0 } }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        for (const path of ['notifications.webhooks.0', 'notifications.ntfy.0', 'notifications.pings.nightly: unknown key', 'drill.engine', 'drill.image', 'status.dbStaleHours']) {
          assert.ok(err.message.includes(path), `${path} in: ${err.message}`);
        }
        return true;
      },
    );
    const secret = parseConfig({ notifications: { webhooks: ['https://hooks.example.net/T0KEN?sig=abc'], ntfy: ['https://ntfy.sh/immich-9f2c'], pings: { nightlyDbBackup: 'https://hc-ping.com/0b7e-uuid' } } });
    const printed = JSON.stringify(redactConfig(secret));
    for (const token of ['T0KEN', 'sig=abc', 'immich-9f2c', '0b7e-uuid']) assert.ok(!printed.includes(token), token);
    assert.deepEqual(redactConfig(secret).notifications.ntfy, ['https://ntfy.sh/[redacted]']);
  });

  test('a compression level the chosen compressor does not accept is refused; zstd writes .sql.zst up to level 19', () => {
    assert.throws(() => parseConfig({ backup: { compressor: 'igzip', compressionLevel: 4 } }), /backup\.compressionLevel: above what the compressor accepts/);
    assert.throws(() => parseConfig({ backup: { compressor: 'pigz', compressionLevel: 12 } }), /backup\.compressionLevel/);
    assert.equal(parseConfig({ backup: { compressor: 'zstd', compressionLevel: 19 } }).backup.compressionLevel, 19);
    assert.throws(() => parseConfig({ backup: { compressor: 'zstd', compressionLevel: 20 } }), /backup\.compressionLevel/);
  });

  test('an environment override is validated like the file', () => {
    assert.throws(() => parseConfig({}, { env: { IMMICH_BACKUP_TEMPORAL_ADDRESS: 'no port' } }), /temporal\.address/);
  });

  test('unreadable, non-YAML and non-mapping files are refused with the reason', async () => {
    const dir = await tempDir('config');
    assert.throws(() => loadConfig({ path: join(dir, 'missing.yml'), env: {} }), /cannot read config file .*missing\.yml/);
    await writeFile(join(dir, 'bad.yml'), 'backup: [unclosed\n');
    assert.throws(() => loadConfig({ path: join(dir, 'bad.yml'), env: {} }), /not valid YAML/);
    await writeFile(join(dir, 'list.yml'), '- a\n- b\n');
    assert.throws(() => loadConfig({ path: join(dir, 'list.yml'), env: {} }), /top level must be a mapping/);
  });
});
