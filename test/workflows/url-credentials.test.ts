import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { execa } from 'execa';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { DefaultLogger } from '@temporalio/worker';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities/index.js';
import type { HealthResult } from '../../core/types.js';
import { parseConfig } from '../../config/config.js';
import { createLogger } from '../../config/logger.js';
import { redactSecrets } from '../../core/redact.js';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { freePort } from '../helpers/net.js';
import { repoRoot } from '../helpers/paths.js';
import { testWorkflowId } from '../helpers/run-workflow.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// Credentials written into a URL (user:pass@) never leave the worker: not in its log, not in
// workflow history (results, failures, heartbeats), not in `config`. A real worker process, a real
// dev server, a real HTTP receiver; one credentialed URL that works and one that cannot connect.

const SECRET = 'Sekr3t-in-url-9f4e';
const basic = (user: string) => `Basic ${Buffer.from(`${user}:${SECRET}`).toString('base64')}`;

let closed = 0;

const stack = useStack({ receiver: true }, async () => {
  closed = await freePort();
});

/** History as text with every payload decoded: the client hands payload data over as base64 (or bytes). */
function historyText(history: unknown): string {
  const text = JSON.stringify(history, function (this: Record<string, unknown>, key, value: unknown) {
    const original = this[key];
    return original instanceof Uint8Array ? Buffer.from(original).toString('base64') : value;
  });
  return text.replace(/"data":"([A-Za-z0-9+/=]+)"/g, (_, b64: string) => `"data":${JSON.stringify(Buffer.from(b64, 'base64').toString('utf8'))}`);
}

const withCredentials = (url: string, user: string) => url.replace('http://', `http://${user}:${SECRET}@`);

describe('URL credentials are redacted at every exit', () => {
  test('redactSecrets replaces the userinfo of every URL in a text, and only that', () => {
    assert.equal(redactSecrets(`fetch failed: http://u:${SECRET}@h:1/x and https://a@b/c`), 'fetch failed: http://[redacted]@h:1/x and https://[redacted]@b/c');
    assert.equal(redactSecrets(`{"url":"http://u:p@ss@h/x","a":"x@y"}`), '{"url":"http://[redacted]@h/x","a":"x@y"}');
    assert.equal(redactSecrets('{"u":"http://host/p","m":"mail me@x"}'), '{"u":"http://host/p","m":"mail me@x"}', 'never across two JSON strings');
    assert.equal(redactSecrets('see http://host:2283/api/server/ping'), 'see http://host:2283/api/server/ping');
  });

  test('the log redacts URL credentials in every field: message, nested fields, err.message and err.stack', async () => {
    const logger = join(repoRoot, 'dist', 'config', 'logger.js');
    const script = `const { createLogger } = await import(${JSON.stringify(logger)});
      const url = 'http://u:${SECRET}@nas.lan/hook';
      createLogger().error({ err: new Error('fetch failed: ' + url), target: { url }, list: [url] }, 'posting to ' + url);`;
    const { stdout } = await execa('node', ['--input-type=module', '-e', script]);
    const line = JSON.parse(stdout) as { msg: string; err: { message: string; stack: string }; target: { url: string } };
    assert.equal(line.msg, 'posting to http://[redacted]@nas.lan/hook');
    assert.equal(line.err.message, 'fetch failed: http://[redacted]@nas.lan/hook');
    assert.match(line.err.stack, /^Error: fetch failed: http:\/\/\[redacted\]@nas\.lan\/hook\n/);
    assert.equal(line.target.url, 'http://[redacted]@nas.lan/hook');
    assert.ok(!stdout.includes(SECRET));
  });

  test('a notification to a credentialed URL is delivered with basic auth, a dead one fails; neither the worker log nor the history holds the secret', async () => {
    const dir = await tempDir('url-secrets');
    const notMounted = join(dir, 'wd-backup');
    await mkdir(notMounted);
    const raw = rawTestConfig({
      backupDir: join(dir, 'dumps'),
      address: stack.temporal.address,
      extra: {
        log: { level: 'info' },
        // Quick, certain problems so BackupHealth alarms: no dumps, a NAS that refuses, no drive.
        offsite: { host: '127.0.0.1', port: closed, connectTimeoutSeconds: 2 },
        library: { mountPoint: notMounted, destination: join(notMounted, 'immich'), mountWaitMinutes: 0 },
        immich: { pingUrl: withCredentials(`http://127.0.0.1:${closed}/api/server/ping`, 'immich') },
        notifications: {
          webhooks: [withCredentials(`${stack.receiver.url}/hook`, 'hookuser')],
          pings: { backupHealth: withCredentials(`http://127.0.0.1:${closed}/ping`, 'pinguser') },
          timeoutSeconds: 2,
        },
      },
    });
    const file = await writeConfigFile(dir, raw);
    const worker = spawnCli(['-c', file, 'worker']);
    try {
      await workerStarted(worker);
      const workflowId = testWorkflowId('BackupHealth');
      const handle = await stack.client.workflow.start('BackupHealth', { taskQueue: raw.temporal!.taskQueue as string, workflowId, args: [{ trigger: 'test' }] });
      const report = (await handle.result()) as { ok: boolean };
      assert.equal(report.ok, false, 'the alarm went out');

      const hooks = stack.receiver.delivered('/hook');
      assert.equal(hooks.length, 1, 'the credentialed webhook was delivered');
      assert.equal(hooks[0]!.headers.authorization, basic('hookuser'), 'its credentials as basic auth');
      assert.equal(stack.receiver.requests.filter((r) => r.path.includes(SECRET)).length, 0);

      const history = historyText(await handle.fetchHistory());
      assert.match(history, /ping:start http:\/\/127\.0\.0\.1:\d+\/\[redacted\]: /, 'the dead ping is reported undelivered in the history');
      assert.ok(!history.includes(SECRET), 'the secret is nowhere in workflow history');
      worker.process.kill('SIGTERM');
      await worker.process;
      assert.match(worker.stdout(), /notification not delivered; giving up/);
      for (const text of [worker.stdout(), worker.stderr()]) assert.ok(!text.includes(SECRET), 'the secret is in no worker log line');
    } finally {
      worker.process.kill('SIGKILL');
    }

    const printed = await cli(['-c', file, 'config', '--json']);
    assert.equal(printed.exitCode, 0, printed.stderr);
    assert.ok(!printed.stdout.includes(SECRET), '`config` prints no URL credentials');
    assert.match(printed.stdout, /"pingUrl": "http:\/\/\[redacted\]@127\.0\.0\.1:\d+\/api\/server\/ping"/);
  });

  test('waiting for Immich at a credentialed ping URL: basic auth sent, and no secret in heartbeats or the result', async () => {
    const logger = createLogger({ level: 'fatal', fd: 2 });
    const wait = async (pingUrl: string) => {
      const config = parseConfig({ immich: { pingUrl, healthTimeoutSeconds: 2 } });
      const beats: unknown[] = [];
      const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR', () => undefined) });
      env.on('heartbeat', (d: unknown) => beats.push(d));
      const result = (await env.run(() => createActivities({ config, logger }).waitForImmich())) as HealthResult;
      return { result, beats };
    };
    const down = await wait(withCredentials(`http://127.0.0.1:${closed}/api/server/ping`, 'immich'));
    assert.equal(down.result.healthy, false);
    assert.match(down.result.detail, /http:\/\/\[redacted\]@127\.0\.0\.1:\d+\/api\/server\/ping/);
    assert.ok(down.beats.length > 0);
    assert.ok(!JSON.stringify(down).includes(SECRET), 'no secret in the result or the heartbeats');

    const up = await wait(withCredentials(`${stack.receiver.url}/api/server/ping`, 'immich'));
    assert.equal(up.result.healthy, true, up.result.detail);
    assert.equal(stack.receiver.delivered('/api/server/ping').at(-1)!.headers.authorization, basic('immich'));
    assert.ok(!JSON.stringify(up).includes(SECRET));
  });
});
