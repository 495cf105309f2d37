import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { cli, spawnCli, workerStarted } from '../helpers/cli.js';
import { makeLibrary, mountTmpfs, treeDigest } from '../helpers/library.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { SCHEDULES } from '../../temporal/schedules.js';

// A remote Temporal behind TLS, for real: a TLS-terminating proxy (node:tls, ALPN h2, a CA made
// here with openssl) in front of the test dev server's plain port. The worker and the CLI reach it
// only through the proxy, with the configured client certificate, CA and server name.

const SERVER_NAME = 'temporal.test';

let pki = '';
const proxies: Array<{ server: Server; address: string; authorized: string[]; refused: string[] }> = [];
let mtls: (typeof proxies)[number];
let tlsOnly: (typeof proxies)[number];

async function openssl(...args: string[]): Promise<void> {
  await execa('openssl', args, { cwd: pki });
}

/** A CA, a server certificate for SERVER_NAME and a client certificate, all signed by the CA (P-256, valid 2 days). */
async function makePki(): Promise<void> {
  pki = await tempDir('tls-pki');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=immich-backup test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  for (const [name, ext] of [['server', `subjectAltName=DNS:${SERVER_NAME}\nextendedKeyUsage=serverAuth\n`], ['client', 'extendedKeyUsage=clientAuth\n']] as const) {
    await writeFile(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}`);
    await openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=immich-backup ${name}`);
    await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  }
}

/** Terminates TLS (h2 only) and pipes the bytes to the dev server's plain port; with `requireClientCert`, a peer without one is refused in the handshake. */
async function startProxy(requireClientCert: boolean): Promise<(typeof proxies)[number]> {
  const [host, port] = stack.temporal.address.split(':') as [string, string];
  const authorized: string[] = [];
  const refused: string[] = [];
  const server = createServer(
    {
      key: readFileSync(join(pki, 'server.key')),
      cert: readFileSync(join(pki, 'server.pem')),
      ca: readFileSync(join(pki, 'ca.pem')),
      requestCert: requireClientCert,
      rejectUnauthorized: requireClientCert,
      ALPNProtocols: ['h2'],
    },
    (socket: TLSSocket) => {
      authorized.push(requireClientCert ? String(socket.getPeerCertificate().subject?.CN) : 'no client certificate asked');
      const upstream: Socket = connect(Number(port), host);
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    },
  );
  server.on('tlsClientError', (err) => refused.push(err.message));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = { server, address: `127.0.0.1:${(server.address() as { port: number }).port}`, authorized, refused };
  proxies.push(proxy);
  stack.defer(() => server.close());
  return proxy;
}

const stack = useStack({}, async () => {
  await makePki();
  mtls = await startProxy(true);
  tlsOnly = await startProxy(false);
});

/** A config for the proxy at `address`: the test's task queue, staging dir and library on a real tmpfs. */
async function tlsConfig(address: string, temporalExtra: Record<string, unknown>, library?: Record<string, unknown>): Promise<string> {
  const dir = await tempDir('tls');
  const raw = rawTestConfig({ backupDir: join(dir, 'dumps'), address, extra: { log: { level: 'info' }, ...(library ? { library } : {}) } });
  raw.temporal = { ...raw.temporal, ...temporalExtra };
  return writeConfigFile(dir, raw);
}

const mutualTls = () => ({ tls: { clientCert: join(pki, 'client.pem'), clientKey: join(pki, 'client.key'), ca: join(pki, 'ca.pem'), serverName: SERVER_NAME } });

describe('a remote Temporal over TLS', () => {
  test('the worker and the CLI connect through a proxy that requires a client certificate, and a workflow runs end to end', async () => {
    const dir = await tempDir('tls-library');
    const source = join(dir, 'library');
    await makeLibrary(source, 5);
    const wd = join(dir, 'wd-backup');
    stack.mounted(await mountTmpfs(wd, '16m'));
    const file = await tlsConfig(mtls.address, mutualTls(), { source, destination: join(wd, 'immich'), mountPoint: wd });
    const worker = spawnCli(['-c', file, 'worker']);
    try {
      await workerStarted(worker);
      const r = await cli(['-c', file, 'backup', 'library', '--json']);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.deepEqual(await treeDigest(join(wd, 'immich')), await treeDigest(source), 'the worker behind TLS mirrored the library');
      assert.match(r.stderr, /started weekly-library-mirror-cli-/);
    } finally {
      worker.process.kill('SIGTERM');
      await worker.process;
    }
    assert.ok(mtls.authorized.length >= 2, `worker and CLI connections: ${mtls.authorized.join(', ')}`);
    assert.ok(mtls.authorized.every((cn) => cn === 'immich-backup client'), 'each with the configured client certificate');
  });

  test('without the client certificate the CLI and the worker fail in one clear line', async () => {
    const file = await tlsConfig(mtls.address, { tls: { ca: join(pki, 'ca.pem'), serverName: SERVER_NAME } });
    const refusedBefore = mtls.refused.length;
    for (const command of [['schedules', 'list'], ['worker']]) {
      const r = await cli(['-c', file, ...command]);
      assert.equal(r.exitCode, 1, `${command.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, `${command.join(' ')}: ${r.stderr}`);
      assert.match(lines[0]!, new RegExp(`^error: (worker )?cannot reach Temporal at ${mtls.address} over TLS \\(.+\\): check temporal\\.address and temporal\\.tls \\(client certificate and key, CA, serverName\\) or temporal\\.apiKey$`), command.join(' '));
    }
    assert.ok(mtls.refused.length > refusedBefore, 'the proxy refused the handshakes');
  });

  test('a server name the certificate is not for is refused too', async () => {
    const file = await tlsConfig(mtls.address, { tls: { ...mutualTls().tls, serverName: 'elsewhere.test' } });
    const r = await cli(['-c', file, 'schedules', 'list']);
    assert.equal(r.exitCode, 1, r.stderr);
    assert.match(r.stderr, /^error: cannot reach Temporal at \S+ over TLS \(.+\): check temporal\.address and temporal\.tls/);
  });

  test('an API key (from IMMICH_BACKUP_TEMPORAL_API_KEY) implies TLS', async () => {
    const file = await tlsConfig(tlsOnly.address, { tls: { ca: join(pki, 'ca.pem'), serverName: SERVER_NAME } });
    const plain = await tlsConfig(tlsOnly.address, {});
    const withKey = await cli(['-c', plain, 'schedules', 'list', '--json'], { IMMICH_BACKUP_TEMPORAL_API_KEY: 'k-test' });
    // No CA configured: the system's roots do not know the test CA, so the handshake (TLS, not plain TCP) fails on the certificate.
    assert.equal(withKey.exitCode, 1, withKey.stderr);
    // (Node adds a deprecation warning above it: with no serverName, the SNI would be the address's IP.)
    assert.match(withKey.stderr.trim().split('\n').at(-1)!, /^error: cannot reach Temporal at \S+ over TLS \(/);
    assert.ok(!withKey.stderr.includes('k-test'));
    const r = await cli(['-c', file, 'schedules', 'list', '--json'], { IMMICH_BACKUP_TEMPORAL_API_KEY: 'k-test' });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as unknown[]).length, SCHEDULES.length);
  });

  test('a missing PEM file is a config error naming its key (exit 2), before connecting', async () => {
    const file = await tlsConfig(mtls.address, { tls: { ...mutualTls().tls, clientKey: join(pki, 'no-such.key') } });
    const connections = mtls.authorized.length + mtls.refused.length;
    for (const command of [['schedules', 'list'], ['worker']]) {
      const r = await cli(['-c', file, ...command]);
      assert.equal(r.exitCode, 2, r.stderr);
      assert.equal(r.stderr, `error: temporal.tls.clientKey: cannot read ${join(pki, 'no-such.key')}: ENOENT\n`);
    }
    assert.equal(mtls.authorized.length + mtls.refused.length, connections);
    const half = await tlsConfig(mtls.address, { tls: { clientCert: join(pki, 'client.pem') } });
    const r = await cli(['-c', half, 'config']);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /^error: invalid config \(.*\): temporal\.tls\.clientKey: clientCert and clientKey come as a pair/);
  });
});
