import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { cli, cliEnv } from '../helpers/cli.js';
import { freePort } from '../helpers/net.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { operatorWorld, useRestoreStack } from '../helpers/restore-stack.js';
import { SCHEDULES } from '../../temporal/schedules.js';

// Issue 16's operator surface, through the real CLI: errors that say what was and was not checked,
// no `mkdir` on the NAS from a read, a reader closing the pipe, usage errors (exit 2, nothing
// started), --json failures as JSON, and what the CLI prints: steps, ages, zones, reruns, dry runs, config.

const stack = useRestoreStack(200);

const startedId = (stderr: string) => /^started (\S+)$/m.exec(stderr)?.[1];
const lastLine = (text: string) => text.trim().split('\n').at(-1) ?? '';
const runsOf = async (type: string) => (await stack.client.workflow.count(`WorkflowType = "${type}"`)).count;

/** Runs the CLI with its stdout a real pipe into `head -n 1`, which exits after the first line. */
function intoHead(args: string[]): Promise<{ exitCode: number | null; stderr: string; first: string }> {
  const head = spawn('head', ['-n', '1'], { stdio: ['pipe', 'pipe', 'ignore'] });
  const child = spawn(cliPath, args, { env: cliEnv(), stdio: ['ignore', head.stdin, 'pipe'] });
  head.stdin.destroy(); // the CLI holds the pipe's only write end now
  let stderr = '';
  let first = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  head.stdout.on('data', (d: Buffer) => (first += d.toString()));
  return new Promise((resolve) => child.on('close', (exitCode) => resolve({ exitCode, stderr, first })));
}

describe('the CLI says what it checked, and refuses what it can judge', () => {
  test('with the NAS unreachable, a restore says the NAS could not be reached and what was and was not checked (plain and --json)', async () => {
    const w = await operatorWorld(stack, {}, { offsite: { port: await freePort() } });
    try {
      const latest = await cli(['-c', w.configFile, 'restore', 'db', '--dry-run']);
      assert.equal(latest.exitCode, 1, latest.stderr);
      const said = lastLine(latest.stderr);
      assert.match(said, new RegExp(`^error: workflow failed: DumpNotFoundError: no dump of ours found: none in ${w.backupDir}; the NAS copies were not checked \\(the NAS \\S+ is unreachable: .*Connection refused`));
      assert.doesNotMatch(said, /none on the NAS|nor on the NAS|mkdir/);

      const named = await cli(['-c', w.configFile, 'restore', 'db', '--dump', 'immich_20200101_000000.sql.gz', '--dry-run', '--json']);
      assert.equal(named.exitCode, 1, named.stderr);
      const { ok, error } = JSON.parse(named.stdout) as { ok: boolean; error: { type: string; message: string } };
      assert.equal(ok, false);
      assert.equal(error.type, 'DumpNotFoundError');
      assert.match(error.message, new RegExp(`immich_20200101_000000\\.sql\\.gz is missing locally \\(not in ${w.backupDir}\\); whether the NAS has it is unknown: the NAS was not checked \\(the NAS \\S+ is unreachable: .*Connection refused`));
      assert.doesNotMatch(error.message, /mkdir/);
    } finally {
      await w.stop();
    }
  });

  test('a dump missing locally is said to be missing locally and absent from the NAS; listing, status and restores create nothing on the NAS', async () => {
    const w = await operatorWorld(stack, {});
    try {
      const nas = w.config.offsite.remoteDir;
      assert.ok(!existsSync(nas));
      const named = await cli(['-c', w.configFile, 'restore', 'db', '--dump', 'immich_20200101_000000.sql.gz', '--dry-run']);
      assert.equal(named.exitCode, 1, named.stderr);
      assert.equal(lastLine(named.stderr), `error: workflow failed: DumpNotFoundError: immich_20200101_000000.sql.gz is missing locally (not in ${w.backupDir}) and the NAS ${w.config.offsite.user}@127.0.0.1:${w.config.offsite.port}:${nas} has no copy either; nothing was changed`);
      const dumps = await cli(['-c', w.configFile, 'dumps', '--json']);
      assert.deepEqual((JSON.parse(dumps.stdout) as { problems: string[] }).problems, [], 'a NAS folder not made yet is no problem to list');
      const status = await cli(['-c', w.configFile, 'status', '--json']);
      const row = (JSON.parse(status.stdout) as { rows: Array<{ id: string; state: string; summary: string }> }).rows.find((r) => r.id === 'nas-copy');
      assert.equal(row?.state, 'missing', row?.summary);
      assert.ok(!existsSync(nas), 'no read made the NAS folder');
    } finally {
      await w.stop();
    }
  });

  test('a reader that closes the pipe after the first line ends every printing command quietly', async () => {
    const w = await operatorWorld(stack);
    const loud: string[] = [];
    for (const [args, times] of [[['-c', w.configFile, 'schedules', 'list'], 10], [['-c', w.configFile, 'config'], 5], [['--help'], 5]] as const) {
      for (let i = 0; i < times; i++) {
        const r = await intoHead([...args]);
        assert.notEqual(r.first, '', `${args.join(' ')}: head read a line`);
        if (r.stderr !== '' || r.exitCode !== 0) loud.push(`${args.at(-1)} run ${i + 1}: exit ${r.exitCode}: ${r.stderr.split('\n')[0]}`);
      }
    }
    assert.deepEqual(loud, [], 'no EPIPE, no stack trace, exit 0');
  });

  test("--version prints package.json's version", async () => {
    const r = await cli(['--version']);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, `${(JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version}\n`);
  });

  test('usage errors exit 2 with the error first: unknown command or option, missing argument, bad option value, unknown schedule', async () => {
    const w = await operatorWorld(stack);
    for (const args of [
      ['frobnicate'],
      ['status', '--colour'],
      ['follow'],
      ['-c', w.configFile, 'restore', 'db', '--from', 'nowhere'],
      ['-c', w.configFile, 'schedules', 'pause', 'nightly-db-backpu'],
      ['-c', w.configFile, 'backup', 'library', '--accept-rewrites', 'all'],
      ['-c', w.configFile, 'restore', 'approve', 'restore-database-cli-x', '--sha256', 'abc'],
    ]) {
      const r = await cli(args);
      assert.equal(r.exitCode, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^error: [^\n]+\n(\(--help shows the usage\)\n)?$/, `one line, then at most a pointer to --help: ${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
    }
  });

  test('--dump ../etc/passwd is refused before anything starts: exit 2, one line (JSON with --json), no run in the history', async () => {
    const w = await operatorWorld(stack, {});
    try {
      const before = await runsOf('RestoreDatabase');
      const r = await cli(['-c', w.configFile, 'restore', 'db', '--dump', '../etc/passwd']);
      assert.equal(r.exitCode, 2, r.stderr);
      assert.match(r.stderr, /^error: option '--dump <name>' argument '\.\.\/etc\/passwd' is invalid\. give latest, .*not a path; nothing was started\n/);
      assert.equal(startedId(r.stderr), undefined);
      const json = await cli(['-c', w.configFile, 'restore', 'db', '--dump', '../etc/passwd', '--json']);
      assert.equal(json.exitCode, 2);
      const printed = JSON.parse(json.stdout) as { ok: boolean; error: { type: string; message: string } };
      assert.deepEqual([printed.ok, printed.error.type], [false, 'UsageError']);
      assert.match(printed.error.message, /^option '--dump <name>' argument '\.\.\/etc\/passwd' is invalid/);
      assert.equal(await runsOf('RestoreDatabase'), before, 'no RestoreDatabase run was started');
    } finally {
      await w.stop();
    }
  });

  test('with --json a failure before any run prints one JSON object too, and keeps its exit code', async () => {
    const r = await cli(['-c', join(repoRoot, 'no-such-config.yml'), 'status', '--json']);
    assert.equal(r.exitCode, 2);
    const printed = JSON.parse(r.stdout) as { ok: boolean; error: { type: string; message: string } };
    assert.deepEqual([printed.ok, printed.error.type], [false, 'ConfigError']);
    assert.match(printed.error.message, /^cannot read config file /);
  });
});

describe('what the CLI prints', () => {
  test('progress shows each step once and byte counts only in their human form; status and dumps say ages in words; rerun prints the report its command prints', async () => {
    const w = await operatorWorld(stack, {});
    try {
      const backup = await cli(['-c', w.configFile, 'backup', 'db']);
      assert.equal(backup.exitCode, 0, backup.stderr);
      assert.doesNotMatch(backup.stderr, /bytesWritten=|\bbytes=\d/);
      const restored = await cli(['-c', w.configFile, 'restore', 'db', '--yes']);
      assert.equal(restored.exitCode, 0, restored.stderr);
      // Once at most: a small restore can pass the step between two polls of the run's progress.
      assert.ok(restored.stderr.split('\n').filter((l) => l === '… restoring').length <= 1, restored.stderr);
      assert.doesNotMatch(restored.stderr, /step[=:]/);

      const status = await cli(['-c', w.configFile, 'status']);
      assert.match(status.stdout, /^ {2}ok +last-run:nightly-db-backup +COMPLETED (just now|\d+ min ago) \(nightly-db-backup-cli-/m);
      assert.match(status.stdout, /local-dump +immich_\d{8}_\d{6}\.sql\.gz: (under a minute|\d+ min) old, /);
      assert.doesNotMatch(status.stdout, /\d\.\d h /);

      const rerun = await cli(['-c', w.configFile, 'rerun', startedId(backup.stderr)!]);
      assert.equal(rerun.exitCode, 0, rerun.stderr);
      assert.match(rerun.stdout, /^backup written: .*immich_\d{8}_\d{6}\.sql\.gz\n {2}[\d.]+ KiB, sha256 [0-9a-f]{64}\n {2}from immich_postgres in \d+\.\d s; row counts of 6 tables recorded \(\d+ rows\)\n {2}pruned 0 old dump\(s\)\n$/);
    } finally {
      await w.stop();
    }
  });

  test('a dry-run restore is set apart from a real one: its ID, its summary in the Web UI, its row in status', async () => {
    const w = await operatorWorld(stack, {});
    try {
      assert.equal((await cli(['-c', w.configFile, 'backup', 'db'])).exitCode, 0);
      const dry = await cli(['-c', w.configFile, 'restore', 'db', '--dry-run']);
      assert.equal(dry.exitCode, 0, dry.stderr);
      const id = startedId(dry.stderr)!;
      assert.match(id, /^restore-database-dry-run-cli-\d{8}T\d{6}Z$/);
      assert.match((await (await stack.client.workflow.getHandle(id).describe()).staticSummary()) ?? '', /^DRY RUN of RestoreDatabase: /);
      const status = await cli(['-c', w.configFile, 'status']);
      assert.match(status.stdout, new RegExp(`last-run:restore-database +COMPLETED (just now|\\d+ min ago) \\(${id}\\): dry run, nothing was changed$`, 'm'));
    } finally {
      await w.stop();
    }
  });

  test("schedules list shows the next runs in the schedule's time zone, and a paused schedule with none", async () => {
    const w = await operatorWorld(stack, undefined, { schedules: { timeZone: 'Europe/Berlin' } });
    try {
      assert.equal((await cli(['-c', w.configFile, 'schedules', 'apply'])).exitCode, 0);
      assert.equal((await cli(['-c', w.configFile, 'schedules', 'pause', 'offsite-sync'])).exitCode, 0);
      const list = await cli(['-c', w.configFile, 'schedules', 'list']);
      assert.equal(list.exitCode, 0, list.stderr);
      const day = '(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \\d{4}-\\d\\d-\\d\\d';
      assert.match(list.stdout, new RegExp(`^nightly-db-backup: 0 3 \\* \\* \\* \\(Europe/Berlin\\)\\n {2}next: ${day} 03:00 CES?T, ${day} 03:00 CES?T, ${day} 03:00 CES?T\\n`, 'm'));
      assert.match(list.stdout, /^offsite-sync: 30 4 \* \* \* \(Europe\/Berlin\) PAUSED: paused with immich-backup\n {2}next: none \(paused\)\n/m);
      const rows = JSON.parse((await cli(['-c', w.configFile, 'schedules', 'list', '--json'])).stdout) as Array<{ id: string; nextRuns: string[] }>;
      assert.deepEqual(rows.find((r) => r.id === 'offsite-sync')?.nextRuns, []);
      const status = await cli(['-c', w.configFile, 'status']);
      assert.match(status.stdout, /schedule:offsite-sync +30 4 \* \* \* \(Europe\/Berlin\), PAUSED: paused with immich-backup; no next run$/m);
      assert.match(status.stdout, /schedule:nightly-db-backup +0 3 \* \* \* \(Europe\/Berlin\); next \w{3} \d{4}-\d\d-\d\d 03:00 CES?T$/m);
    } finally {
      for (const s of SCHEDULES) await stack.client.schedule.getHandle(s.id).delete().catch(() => undefined);
    }
  });

  test('config prints YAML by default, JSON with --json, and says which file was loaded, or that none was', async () => {
    const w = await operatorWorld(stack);
    const r = await cli(['-c', w.configFile, 'config']);
    assert.equal(r.exitCode, 0, r.stderr);
    const [head, ...yaml] = r.stdout.split('\n');
    assert.equal(head, `config: ${w.configFile} (valid)`);
    const json = await cli(['-c', w.configFile, 'config', '--json']);
    assert.deepEqual(parseYaml(yaml.join('\n')), JSON.parse(json.stdout));
    assert.equal(json.stderr, `config: ${w.configFile} (valid)\n`);
    const none = await cli(['config']);
    assert.equal(none.exitCode, 0, none.stderr);
    assert.match(none.stdout, /^config: no file, defaults \(and IMMICH_BACKUP_\* variables\)\ntemporal:\n/);
  });
});
