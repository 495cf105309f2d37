import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cli } from '../helpers/cli.js';
import { listDir, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';

// Dangerous settings are refused by the CLI as it reads the config: exit 2, one line naming the
// key, and nothing started. "Nothing" is checked for real: temporal.address points at a TCP
// listener that counts every connection, and `start` would create the dev server's data dir.

let listener: Server;
let connections = 0;
let address = '';

before(async () => {
  listener = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  address = `127.0.0.1:${(listener.address() as { port: number }).port}`;
});

after(() => new Promise<void>((resolve) => listener.close(() => resolve())));

const CASES: Array<{ what: string; key: string; extra: Record<string, Record<string, unknown>> }> = [
  { what: 'a mirror on the root filesystem', key: 'library.mountPoint', extra: { library: { mountPoint: '/', destination: '/immich-mirror' } } },
  { what: 'a mirror outside the drive', key: 'library.destination', extra: { library: { mountPoint: '/mnt/wd-backup', destination: '/srv/immich-mirror' } } },
  { what: 'a mirror over the library', key: 'library.destination', extra: { library: { source: '/mnt/wd-backup/immich/', destination: '/mnt/wd-backup/immich', mountPoint: '/mnt/wd-backup' } } },
  { what: 'a ping URL that is not http(s)', key: 'immich.pingUrl', extra: { immich: { pingUrl: 'file:///etc/passwd' } } },
  { what: 'a dev server on every interface', key: 'temporal.devServer.ip', extra: { temporal: { devServer: { ip: '0.0.0.0' } } } },
  { what: 'a cron minute out of range', key: 'schedules.nightlyDbBackup', extra: { schedules: { nightlyDbBackup: '99 3 * * *' } } },
  { what: 'a cron line of words', key: 'schedules.offsiteSync', extra: { schedules: { offsiteSync: 'a b c d e' } } },
];

describe('dangerous config is refused before anything starts', () => {
  for (const { what, key, extra } of CASES) {
    test(`${what}: config, status, backup db, worker and start exit 2 naming ${key}, connecting to nothing`, async () => {
      const dir = await tempDir('refuse');
      const raw = rawTestConfig({ backupDir: join(dir, 'dumps'), extra });
      const dataDir = join(dir, 'temporal');
      // `start` with no address would start a dev server here; the others connect to the listener.
      const withAddress = await writeConfigFile(dir, { ...raw, temporal: { ...raw.temporal, address, ...(extra.temporal ?? {}) } });
      const noAddress = await writeConfigFile(await tempDir('refuse-start'), { ...raw, temporal: { ...raw.temporal, ...(extra.temporal ?? {}), devServer: { dataDir, ...((extra.temporal?.devServer as object) ?? {}) } } });
      const before = connections;
      for (const [file, command] of [[withAddress, ['config']], [withAddress, ['status']], [withAddress, ['backup', 'db']], [withAddress, ['worker']], [noAddress, ['start']]] as const) {
        const r = await cli(['-c', file, ...command]);
        assert.equal(r.exitCode, 2, `${command.join(' ')}: ${r.stderr}`);
        assert.equal(r.stdout, '', command.join(' '));
        const lines = r.stderr.split('\n').filter(Boolean);
        assert.equal(lines.length, 1, `${command.join(' ')}: one line: ${r.stderr}`);
        assert.match(lines[0]!, new RegExp(`^error: invalid config \\(${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\): ${key.replace(/\./g, '\\.')}: `), command.join(' '));
      }
      assert.equal(connections, before, 'no command connected to temporal.address');
      assert.ok(!(await listDir(dir)).includes('temporal'), 'start began no dev server');
      assert.ok(!(await listDir(dir)).includes('dumps'), 'nothing was written to the staging dir');
    });
  }
});
