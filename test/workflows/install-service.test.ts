import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { cli, workerStarted } from '../helpers/cli.js';
import { freePorts } from '../helpers/net.js';
import { cliPath, temporalBinary } from '../helpers/paths.js';
import { rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { serviceUnit } from '../../cli/service-unit.js';
import { writeFile } from 'node:fs/promises';

// Problem 9 of issue 16: `install-service` writes a systemd unit; `systemd-analyze verify` checks
// it, and its ExecStart line runs as systemd would run it (argv, the unit's environment only).
// systemctl is never run.

/** A folder with a space in its name: the unit must quote the config's path. */
let dir = '';

const stack = useStack({}, async () => {
  dir = await tempDir('install service');
});

/** The words of a unit line's value as systemd splits them: double quotes, backslash escapes, %% and (Exec lines) $$. */
function unitWords(value: string, exec: boolean): string[] {
  const words: string[] = [];
  for (const m of value.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) {
    const word = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!;
    words.push(exec ? word.replace(/%%/g, '%').replace(/\$\$/g, '$') : word.replace(/%%/g, '%'));
  }
  return words;
}

/** ExecStart's argv, the environment from Environment= lines, and WorkingDirectory, as the unit says. */
function parseUnit(unit: string): { argv: string[]; env: Record<string, string>; cwd: string } {
  const values = (key: string) => unit.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
  const env = Object.fromEntries(values('Environment').flatMap((v) => unitWords(v, false)).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const [execStart] = values('ExecStart');
  return { argv: unitWords(execStart!, true), env, cwd: values('WorkingDirectory')[0]!.replace(/%%/g, '%') };
}

async function writeUnit(name: string, raw: Record<string, Record<string, unknown>>, args: string[] = []): Promise<{ configFile: string; unitFile: string; unit: string }> {
  const configDir = join(dir, name);
  await mkdir(configDir);
  const configFile = await writeConfigFile(configDir, raw);
  const unitDir = join(configDir, 'units');
  await mkdir(unitDir);
  const r = await cli(['-c', configFile, 'install-service', '--unit-dir', unitDir, ...args]);
  assert.equal(r.exitCode, 0, r.stderr);
  const unitFile = join(unitDir, 'immich-backup.service');
  assert.match(r.stdout, new RegExp(`^wrote ${unitFile} `));
  return { configFile, unitFile, unit: await readFile(unitFile, 'utf8') };
}

async function verify(unitFile: string): Promise<void> {
  const r = await execa('systemd-analyze', ['verify', unitFile], { reject: false });
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(r.stderr, '', 'no warning about the unit');
}

/** Runs ExecStart as an argv array (no shell) with only the unit's environment, waits for the worker, stops it with SIGTERM as systemd does. */
async function runExecStart(unit: string): Promise<{ stdout: string; stderr: string }> {
  const { argv, env, cwd } = parseUnit(unit);
  const child = execa(argv[0]!, argv.slice(1), { env, extendEnv: false, cwd, reject: false, buffer: false, stdin: 'ignore' });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    await workerStarted({ stdout: () => stdout });
  } finally {
    child.kill('SIGTERM');
  }
  const { exitCode } = await child;
  assert.equal(exitCode, 0, `stopped cleanly on SIGTERM: ${stderr}`);
  return { stdout, stderr };
}

describe('install-service writes a systemd unit that verifies and runs', () => {
  test('with temporal.address set, the unit runs `worker` as root with the absolute config, node and cli paths, restart policy and hardening', async () => {
    const raw = rawTestConfig({ backupDir: join(dir, 'worker-mode', 'dumps'), address: stack.temporal.address, extra: { log: { level: 'info' } } });
    const { configFile, unitFile, unit } = await writeUnit('worker-mode', raw);
    await verify(unitFile);
    const { argv, env } = parseUnit(unit);
    assert.deepEqual(argv, [process.execPath, '--max-semi-space-size=1', cliPath, '--config', configFile, 'worker']);
    assert.ok(env.PATH!.split(':').includes(join(process.execPath, '..')), 'node\'s folder is on the service\'s PATH');
    for (const line of ['Restart=on-failure', 'RestartSec=15s', 'RestartPreventExitStatus=2', 'Wants=network-online.target', 'After=network-online.target docker.service podman.service', 'KillMode=mixed', 'NoNewPrivileges=yes', 'ProtectSystem=full', 'PrivateTmp=yes', 'WantedBy=multi-user.target']) {
      assert.ok(unit.split('\n').includes(line), line);
    }
    assert.doesNotMatch(unit, /^User=/m, 'a root service');
    const { stdout } = await runExecStart(unit);
    assert.match(stdout, new RegExp(`"address":"${stack.temporal.address}".*"msg":"worker started"`));
  });

  test('without temporal.address, the unit runs `start`: the temporal binary is found through the unit\'s PATH and the dev server comes up', async () => {
    const [port, uiPort] = (await freePorts(2)) as [number, number];
    const raw = rawTestConfig({ backupDir: join(dir, 'start-mode', 'dumps'), extra: { log: { level: 'info' }, schedules: { applyOnStart: false } } });
    raw.temporal = { ...raw.temporal, devServer: { dataDir: join(dir, 'start-mode', 'temporal'), port, uiPort } };
    const { unitFile, unit } = await writeUnit('start-mode', raw);
    await verify(unitFile);
    const { argv, env } = parseUnit(unit);
    assert.equal(argv.at(-1), 'start');
    assert.ok(env.PATH!.split(':').includes(join(temporalBinary, '..')), 'the temporal binary\'s folder is on the service\'s PATH');
    const { stderr } = await runExecStart(unit);
    assert.match(stderr, new RegExp(`Temporal Web UI: http://127\\.0\\.0\\.1:${uiPort} `));
  });

  test('a checkout in a folder with a space verifies quietly (the README URL escaped); the unit starts after the container engine', async () => {
    const unitDir = join(dir, 'space in checkout');
    await mkdir(unitDir);
    const unit = serviceUnit({ mode: 'worker', node: process.execPath, cli: cliPath, configFile: join(dir, 'x.yml'), workingDirectory: dir, pathDirs: [], documentation: 'file:///opt/immich%20backup/README.md' });
    assert.match(unit, /^Documentation=file:\/\/\/opt\/immich%%20backup\/README\.md$/m);
    assert.match(unit, /^After=network-online\.target docker\.service podman\.service$/m);
    await writeFile(join(unitDir, 'immich-backup.service'), unit);
    await verify(join(unitDir, 'immich-backup.service'));
  });

  test('a config under /tmp, which the service does not see (PrivateTmp), is warned about', async () => {
    const configFile = await writeConfigFile(dir, rawTestConfig({ backupDir: join(dir, 'dumps') }));
    const r = await cli(['-c', configFile, 'install-service', '--dry-run']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^warning: the config ${configFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is under /tmp, which the service does not see \\(PrivateTmp=yes\\)`, 'm'));
  });

  test('--dry-run prints the unit and writes nothing; --mode overrides the default', async () => {
    const configDir = join(dir, 'dry-run');
    await mkdir(configDir);
    const configFile = await writeConfigFile(configDir, rawTestConfig({ backupDir: join(configDir, 'dumps') }));
    const r = await cli(['-c', configFile, 'install-service', '--unit-dir', configDir, '--mode', 'worker', '--dry-run']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^# Written by `immich-backup install-service` \(worker: /);
    assert.equal(parseUnit(r.stdout).argv.at(-1), 'worker');
    assert.ok(!existsSync(join(configDir, 'immich-backup.service')));
  });

  test('without a config file, or into a folder that does not exist, it refuses in one line and writes nothing', async () => {
    const missing = join(dir, 'no-such-dir');
    const noConfig = await cli(['install-service', '--unit-dir', dir], { IMMICH_BACKUP_CONFIG: '' });
    assert.equal(noConfig.exitCode, 2);
    assert.equal(noConfig.stderr, 'error: install-service needs the config the service will run with: immich-backup -c /etc/immich-backup.yml install-service\n');
    const configFile = await writeConfigFile(dir, rawTestConfig({ backupDir: join(dir, 'dumps') }));
    const noDir = await cli(['-c', configFile, 'install-service', '--unit-dir', missing]);
    assert.equal(noDir.exitCode, 2);
    assert.equal(noDir.stderr, `error: --unit-dir ${missing} is not a directory: nothing was written\n`);
    assert.ok(!existsSync(join(dir, 'immich-backup.service')));
  });
});
