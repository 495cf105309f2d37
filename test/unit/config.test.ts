import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { configDigest, loadConfig, parseConfig, redactConfig } from '../../config/config.js';
import { temporalAddress } from '../../temporal/client.js';
import { cronProblem } from '../../core/cron.js';
import { ConfigError } from '../../core/errors.js';
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

  test('the digest the worker publishes ignores secrets (set or not), log and status settings, and changes with what a run does', () => {
    const raw = { backup: { dir: '/srv/dumps' } };
    const base = configDigest(parseConfig(raw, { env: {} }));
    assert.equal(configDigest(parseConfig(raw, { env: { IMMICH_BACKUP_PG_PASSWORD: 'pw' } })), base);
    assert.equal(configDigest(parseConfig({ ...raw, log: { level: 'debug' }, status: { rowTimeoutSeconds: 5 } }, { env: {} })), base);
    assert.notEqual(configDigest(parseConfig({ backup: { dir: '/srv/other' } }, { env: {} })), base);
  });

  test('the dev server address puts an IPv6 literal in brackets', () => {
    assert.equal(temporalAddress(parseConfig({ temporal: { devServer: { ip: '::1' } } }, { env: {} })), '[::1]:7233');
    assert.equal(temporalAddress(parseConfig({}, { env: {} })), '127.0.0.1:7233');
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
    assert.deepEqual(config.status, { dbStaleHours: 26, offsiteStaleHours: 26, mirrorStaleDays: 8, drillStaleDays: 8, auditStaleDays: 35, rowTimeoutSeconds: 20 });
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

  test('a library mirror that would write to the root filesystem, outside the drive, or over the library is refused', () => {
    const refused = (library: Record<string, unknown>, key: string, reason: RegExp) =>
      assert.throws(() => parseConfig({ library }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.doesNotMatch(err.message, /\n/);
        assert.match(err.message, new RegExp(`library\\.${key}: ${reason.source}`));
        return true;
      });
    refused({ mountPoint: '/', destination: '/immich' }, 'mountPoint', /must not be \//);
    refused({ mountPoint: '//', destination: '/srv/immich' }, 'mountPoint', /must not be \//);
    refused({ mountPoint: '/mnt/wd-backup', destination: '/mnt/other/immich' }, 'destination', /must be a directory inside library\.mountPoint \(\/mnt\/wd-backup\)/);
    refused({ mountPoint: '/mnt/wd-backup', destination: '/mnt/wd-backup-2/immich' }, 'destination', /must be a directory inside library\.mountPoint/);
    refused({ mountPoint: '/mnt/wd-backup', destination: '/mnt/wd-backup/' }, 'destination', /must be a directory inside library\.mountPoint/);
    refused({ source: '/mnt/wd/immich/', destination: '/mnt/wd/immich', mountPoint: '/mnt/wd' }, 'destination', /must not be library\.source/);
    refused({ source: '/mnt/wd/immich/library', destination: '/mnt/wd/immich/', mountPoint: '/mnt/wd' }, 'destination', /must not be library\.source/);
    refused({ source: '/mnt/wd', destination: '/mnt/wd/mirror', mountPoint: '/mnt/wd' }, 'destination', /must not be library\.source/);
    const ok = parseConfig({ library: { source: '/mnt/immich/library/', destination: '/mnt/wd/immich/', mountPoint: '/mnt/wd/' } }).library;
    assert.deepEqual([ok.source, ok.destination, ok.mountPoint], ['/mnt/immich/library', '/mnt/wd/immich', '/mnt/wd']);
  });

  test('immich.pingUrl must be http(s); the dev server listens on loopback only', () => {
    for (const url of ['file:///etc/passwd', 'javascript:alert(1)', 'ftp://nas/ping']) {
      assert.throws(() => parseConfig({ immich: { pingUrl: url } }), /^ConfigError: invalid config \(config\): immich\.pingUrl: an http\(s\) URL$/, url);
    }
    assert.equal(parseConfig({ immich: { pingUrl: 'https://photos.lan/api/server/ping' } }).immich.pingUrl, 'https://photos.lan/api/server/ping');
    for (const ip of ['0.0.0.0', '192.168.1.10', '::', 'example.com']) {
      assert.throws(() => parseConfig({ temporal: { devServer: { ip } } }), /temporal\.devServer\.ip: must be a loopback address .*no authentication/, ip);
    }
    for (const ip of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) assert.equal(parseConfig({ temporal: { devServer: { ip } } }).temporal.devServer.ip, ip);
  });

  test('a cron line Temporal would refuse is refused here, naming the schedule and the field', () => {
    const refused = (line: string, reason: string) =>
      assert.throws(() => parseConfig({ schedules: { nightlyDbBackup: line } }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.ok(err.message.includes(`schedules.nightlyDbBackup: ${reason}`), `${line}: ${err.message}`);
        return true;
      });
    refused('99 3 * * *', 'minute field "99" out of range 0-59');
    refused('a b c d e', 'minute field "a" is not a number (0-59)');
    refused('0 24 * * *', 'hour field "24" out of range 0-23');
    refused('0 3 0 * *', 'day-of-month field "0" out of range 1-31');
    refused('0 3 * 13 *', 'month field "13" out of range 1-12');
    refused('0 3 * * 8', 'day-of-week field "8" out of range 0-7');
    refused('0 3 * * FOO', 'day-of-week field "FOO" is not a number or a name (0-7)');
    refused('*/0 3 * * *', 'minute field "*/0": the step must be a whole number of 1 or more');
    refused('0 5-2 * * *', 'hour field "5-2": the range ends before it starts');
    refused('0 3 * *', 'expected 5 fields');
    refused('0 3 * * * 2030', 'expected 5 fields');
    refused('@reboot', 'unknown shorthand "@reboot"');
    refused('0,,5 3 * * *', 'minute field "" is not a number');
    for (const line of ['0 3 * * *', '*/15 * * * *', '0 9-17/2 * * MON-FRI', '30 4 1,15 * *', '0 0 1 JAN,jul *', '0 5 * * SUN', '0 5 * * 7', '5/10 * * * *', '0 0 * DEC sat', '@hourly', '@daily', '@weekly', '@monthly', '@yearly']) {
      assert.equal(cronProblem(line), undefined, line);
      assert.equal(parseConfig({ schedules: { weeklyLibraryMirror: line } }).schedules.weeklyLibraryMirror, line);
    }
  });

  test('a ping URL with credentials is printed without them', () => {
    const config = parseConfig({ immich: { pingUrl: 'http://admin:s3cret-ping@photos.lan:2283/api/server/ping' } });
    const printed = JSON.stringify(redactConfig(config));
    assert.ok(!printed.includes('s3cret-ping'));
    assert.equal(redactConfig(config).immich.pingUrl, 'http://[redacted]@photos.lan:2283/api/server/ping');
  });

  test('TLS and an API key need a remote temporal.address; a client certificate needs its key', () => {
    assert.throws(() => parseConfig({ temporal: { tls: { ca: '/etc/ca.pem' } } }), /temporal\.tls: TLS is for a remote Temporal: set temporal\.address too/);
    assert.throws(() => parseConfig({}, { env: { IMMICH_BACKUP_TEMPORAL_API_KEY: 'k-9' } }), (err: unknown) => {
      assert.match(String(err), /temporal\.apiKey: an API key is for a remote Temporal/);
      assert.ok(!String(err).includes('k-9'), 'the key is not echoed');
      return true;
    });
    assert.throws(() => parseConfig({ temporal: { address: 't:7233', tls: { clientCert: '/c.pem' } } }), /temporal\.tls\.clientKey: clientCert and clientKey come as a pair/);
    const config = parseConfig({ temporal: { address: 't.example:7233' } }, { env: { IMMICH_BACKUP_TEMPORAL_API_KEY: 'k-9' } });
    assert.equal(config.temporal.apiKey, 'k-9');
    assert.equal(redactConfig(config).temporal.apiKey, '[redacted]');
  });
});
