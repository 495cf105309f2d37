import assert from 'node:assert/strict';
import { chmod, copyFile, open, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { execa } from 'execa';
import { collectStatus } from '../../status/status.js';
import { auditStatePath, type AuditState } from '../../adapters/mirror/audit-state.js';
import type { LibraryAuditReport } from '../../workflows/index.js';
import { makeImmichLibrary, mountTmpfs, type ImmichAssetFixture } from '../helpers/library.js';
import { waitFor } from '../helpers/net.js';
import { ownProcessesNamed } from '../helpers/processes.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// LibraryAudit against a real PostgreSQL holding Immich's asset table (real SHA-1s of generated
// files), the library mirrored with real rsync -a onto a real tmpfs standing in for the drive,
// on a real Temporal dev server with the real worker and activities.

const stack = useStack({ postgres: true, dockerEnv: true, receiver: true });

/** A fresh Immich: its asset table holds exactly this library's rows; the library mirrored onto a mounted tmpfs (or not). */
async function setup(count: number, options: { externalCount?: number; mounted?: boolean; audit?: Record<string, unknown> } = {}) {
  const root = await tempDir('audit');
  const source = join(root, 'upload');
  await stack.pg.psql('DROP TABLE IF EXISTS asset', 'immich').catch(() => undefined);
  const assets = await makeImmichLibrary(stack.pg, source, count, { externalCount: options.externalCount ?? 0 });
  const mountPoint = join(root, 'wd-backup');
  const destination = join(mountPoint, 'immich');
  if (options.mounted !== false) {
    stack.mounted(await mountTmpfs(mountPoint));
    await execa('rsync', ['-a', `${source}/`, `${destination}/`]);
  } else await execa('mkdir', ['-p', mountPoint]);
  const hook = `/hook-${Math.random().toString(36).slice(2)}`;
  const config = testConfig({
    backupDir: join(root, 'dumps'),
    extra: {
      library: { source, destination, mountPoint, audit: { reportNames: 3, ...options.audit } },
      notifications: { webhooks: [`${stack.receiver.url}${hook}`] },
    },
  });
  const run = (input: Record<string, unknown> = {}, during?: (workflowId: string) => Promise<void>) => runWorkflow<LibraryAuditReport>(stack.client, stack.temporal.address, config, 'LibraryAudit', during, input);
  const alarms = () => stack.receiver.delivered(hook).map((r) => JSON.parse(r.body) as { kind: string; event: string; message: string });
  return { root, source, destination, mountPoint, assets, config, run, alarms };
}

/** The report a failed audit carries in its failure's details. */
function damaged(error: unknown): { failure: ApplicationFailure; report: LibraryAuditReport } {
  assert.ok(error instanceof WorkflowFailedError, `a failed run, got ${String(error)}`);
  const failure = error.cause;
  assert.ok(failure instanceof ApplicationFailure);
  assert.equal(failure.type, 'LibraryDamagedError');
  return { failure, report: failure.details?.[0] as LibraryAuditReport };
}

/** Flips one bit in the middle of a file, keeping its size and mtime (bit rot rsync -a never sees). */
async function flipBit(path: string): Promise<void> {
  const ref = `${path}.ref`;
  await execa('touch', ['-r', path, ref]);
  const fh = await open(path, 'r+');
  const { size } = await fh.stat();
  const byte = Buffer.alloc(1);
  await fh.read(byte, 0, 1, Math.floor(size / 2));
  byte[0] = byte[0]! ^ 0x10;
  await fh.write(byte, 0, 1, Math.floor(size / 2));
  await fh.close();
  await execa('touch', ['-r', ref, path]);
  await rm(ref);
}

const sum = (s: { ok: number; missing: number; mismatched: number; notChecked: number }) => s.ok + s.missing + s.mismatched + s.notChecked;

describe('LibraryAudit', () => {
  test('a clean library and mirror: every asset ok on both sides, sha1-path rows of an external library counted as skipped', async () => {
    const { run, config } = await setup(40, { externalCount: 7 });
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    const p = report!.pass;
    assert.equal(report!.totalAssets, 47);
    assert.equal(p.completed, true);
    assert.equal(p.covered, 47);
    assert.deepEqual([p.library.ok, p.library.missing, p.library.mismatched, p.library.notChecked], [40, 0, 0, 0]);
    assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched, p.mirror.notChecked], [40, 0, 0, 0]);
    assert.deepEqual(p.skipped, { notContent: 7, outsideLibrary: 0 });
    assert.match(report!.message, /^pass 1 complete \(47 assets\): library 40 ok, 0 missing, 0 mismatched; mirror 40 ok, 0 missing, 0 mismatched; skipped 7 without a content SHA-1/);
    // The state file: owner-only, beside the key, never in backup.dir.
    const file = auditStatePath(config);
    assert.equal(file, join(config.security.keyFile, '..', 'library-audit.json'));
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  test('one flipped bit on the mirror (same size and mtime) is named as mismatched on the mirror, the library side ok; the run fails and alarms', async () => {
    const { run, destination, assets, alarms } = await setup(30);
    const victim = assets[17]!;
    await flipBit(join(destination, victim.relativePath));
    const { error } = await run();
    const { failure, report } = damaged(error);
    const p = report.pass;
    assert.deepEqual([p.library.ok, p.library.missing, p.library.mismatched], [30, 0, 0]);
    assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched], [29, 0, 1]);
    assert.deepEqual(p.mirror.names, { missing: [], mismatched: [victim.relativePath] });
    assert.match(failure.message, new RegExp(`damaged on the mirror \\(SHA-1 differs from Immich's\\): ${victim.relativePath.replace(/\./g, '\\.')}`));
    assert.match(failure.message, /delete the damaged copies from the drive, then run immich-backup backup library/);
    const alarm = alarms().find((a) => a.event === 'failure');
    assert.ok(alarm, 'a failure notification was sent');
    assert.equal(alarm.kind, 'library-audit');
    assert.ok(alarm.message.includes(victim.relativePath), alarm.message);
  });

  test('a mirror directory that is a symlink to the live library counts its files as mismatched on the mirror, not ok: they are not on the drive', async () => {
    const { run, source, destination, assets } = await setup(24);
    // The drive's immich/library/user1 replaced by a symlink into the live library: same bytes, no copy on the drive.
    await rm(join(destination, 'library', 'user1'), { recursive: true });
    await symlink(join(source, 'library', 'user1'), join(destination, 'library', 'user1'));
    const offDrive = assets.filter((a) => a.relativePath.startsWith('library/user1/')).map((a) => a.relativePath);
    assert.equal(offDrive.length, 6);
    const { error } = await run();
    const { report } = damaged(error);
    const p = report.pass;
    assert.deepEqual([p.library.ok, p.library.missing, p.library.mismatched], [24, 0, 0]);
    assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched], [18, 0, 6]);
    assert.equal(p.mirror.names.mismatched.length, 3);
    for (const name of p.mirror.names.mismatched) assert.ok(offDrive.includes(name), name);
  });

  test('a library directory that is a symlink out of the library counts its file as mismatched on the library side, never read, even with the checksum Immich holds', async () => {
    const { run, root, source, assets } = await setup(12);
    // Whoever writes the library swaps the victim's directory for a symlink to a directory outside
    // it, holding a file of the victim's name whose SHA-1 is the one Immich's row holds (here the
    // victim's own bytes; an attacker would choose the row's checksum to match a guess of /etc/shadow).
    const victim = assets[5]!;
    const dir = join(source, dirname(victim.relativePath));
    assert.equal(assets.filter((a) => dirname(a.relativePath) === dirname(victim.relativePath)).length, 1);
    const outside = join(root, 'elsewhere');
    await rename(dir, outside);
    await symlink(outside, dir);
    const planted = join(outside, victim.relativePath.split('/').at(-1)!);
    // Whether it is read shows in its access time (relatime: a read after its atime is set back
    // updates it); a copy beside it, read here, shows this filesystem keeps access times.
    const control = `${planted}.control`;
    await copyFile(planted, control);
    await utimes(planted, 0, (await stat(planted)).mtime);
    await utimes(control, 0, (await stat(control)).mtime);
    await readFile(control);
    assert.notEqual((await stat(control)).atimeMs, 0, 'this filesystem records reads in access times');
    const outcome = await run();
    // The counts first, from the report the run returned or failed with: read through, it counts as ok.
    const p = (outcome.error ? damaged(outcome.error).report : outcome.report!).pass;
    assert.deepEqual([p.library.ok, p.library.missing, p.library.mismatched], [11, 0, 1]);
    assert.deepEqual(p.library.names.mismatched, [victim.relativePath]);
    assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched], [12, 0, 0]);
    assert.ok(outcome.error, 'the mismatched library copy fails the run');
    assert.equal((await stat(planted)).atimeMs, 0, 'the file outside the library was read');
  });

  test('each side is read by a process of its own at nice 19 and idle I/O class; a mirror file that is a symlink is not followed', async () => {
    const { destination, source, assets, run } = await setup(1200);
    // The mirror's copy replaced by a symlink to the library's (same bytes): read through, it would pass.
    const linked = assets[7]!.relativePath;
    await rm(join(destination, linked));
    await symlink(join(source, linked), join(destination, linked));
    const readers = new Map<string, string>();
    process.env.FIXTURE_DOCKER_DELAY = 'assets=2'; // each page of assets held back: the readers wait, alive, meanwhile
    let outcome: Awaited<ReturnType<typeof run>>;
    try {
      outcome = await run({}, async () => {
        await waitFor('two readers', async () => {
          const pids = (await ownProcessesNamed({ cmdline: /sha1-reader\.js$/ })).map(String);
          for (const pid of pids) {
            const nice = (await execa('ps', ['-o', 'ni=', '-p', pid], { reject: false })).stdout.trim();
            readers.set(pid, `${nice} ${(await execa('ionice', ['-p', pid], { reject: false })).stdout.trim()}`);
          }
          return readers.size >= 2 ? true : undefined;
        }, 30_000, 50);
      });
    } finally {
      delete process.env.FIXTURE_DOCKER_DELAY;
    }
    assert.equal(outcome.error instanceof WorkflowFailedError, true, 'the symlinked copy fails the run');
    const { report } = damaged(outcome.error);
    assert.deepEqual([...readers.values()], ['19 idle', '19 idle'], `readers: ${JSON.stringify([...readers])}`);
    assert.deepEqual([report.pass.mirror.mismatched, report.pass.mirror.names.mismatched], [1, [linked]]);
    assert.equal(report.pass.library.ok, 1200);
    // Nothing else was lowered: the worker (this process) keeps its priority, and the readers are gone.
    assert.equal((await execa('ps', ['-o', 'ni=', '-p', String(process.pid)])).stdout.trim(), '0');
    assert.deepEqual(await ownProcessesNamed({ cmdline: /sha1-reader\.js$/ }), []);
  });

  test('a long run of assets with nothing to read (an external library of 80000) is audited in bounded batches, every one counted as skipped', async () => {
    const { run } = await setup(20, { externalCount: 80_000 });
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.deepEqual([report!.pass.covered, report!.pass.skipped.notContent, report!.pass.library.ok, report!.pass.mirror.ok], [80_020, 80_000, 20, 20]);
  });

  test('a file missing from the library is named as missing on the library side; the mirror still has it', async () => {
    const { run, source, assets } = await setup(30);
    const gone: ImmichAssetFixture[] = [assets[3]!, assets[25]!];
    for (const a of gone) await rm(join(source, a.relativePath));
    const { error } = await run();
    const { failure, report } = damaged(error);
    const p = report.pass;
    assert.deepEqual([p.library.ok, p.library.missing, p.library.mismatched], [28, 2, 0]);
    assert.deepEqual(p.library.names.missing.sort(), gone.map((a) => a.relativePath).sort());
    assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched], [30, 0, 0]);
    assert.match(failure.message, /restore library --missing/);
  });

  test('names are capped at library.audit.reportNames; the counts are whole', async () => {
    const { run, source, assets } = await setup(20);
    for (const a of assets.slice(0, 8)) await writeFile(join(source, a.relativePath), 'rewritten');
    const { error } = await run();
    const { failure, report } = damaged(error);
    assert.equal(report.pass.library.mismatched, 8);
    assert.equal(report.pass.library.names.mismatched.length, 3);
    assert.match(failure.message, / and 5 more/);
  });

  test('with the drive not mounted the library is still checked and the mirror is reported not checked: drive not mounted', async () => {
    const { run, mountPoint } = await setup(12, { mounted: false });
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    const p = report!.pass;
    assert.equal(p.library.ok, 12);
    assert.deepEqual([p.mirror.ok, p.mirror.missing, p.mirror.mismatched, p.mirror.notChecked], [0, 0, 0, 12]);
    assert.equal(p.mirror.notCheckedReason, `drive not mounted at ${mountPoint}`);
    assert.match(report!.message, new RegExp(`mirror not checked: drive not mounted at ${mountPoint}`));
  });

  test('scheduled runs split a pass by passDays: each covers its share, every asset counted once, then the next run starts over', async () => {
    const { run, config } = await setup(30, { audit: { passDays: 3 } });
    const file = auditStatePath(config);
    const first = await run({ trigger: 'schedule' });
    assert.equal(first.error, undefined, String(first.error));
    // The first run has no interval to go by: a whole pass.
    assert.equal(first.report!.pass.completed, true);
    assert.equal(first.report!.run.covered, 30);
    // A day passes between scheduled runs: the next pass (3 days) is spread over three runs.
    const passDay = async () => {
      const state = JSON.parse(await readFile(file, 'utf8')) as AuditState;
      const back = (iso: string | undefined) => iso && new Date(Date.parse(iso) - 86_400_000).toISOString();
      if (state.pass) state.pass.startedAt = back(state.pass.startedAt)!;
      state.lastScheduledRunAt = back(state.lastScheduledRunAt);
      await writeFile(file, JSON.stringify(state));
    };
    const covered: number[] = [];
    let last: LibraryAuditReport | undefined;
    for (let day = 1; day <= 3; day++) {
      await passDay();
      const r = await run({ trigger: 'schedule' });
      assert.equal(r.error, undefined, String(r.error));
      last = r.report!;
      covered.push(last.run.covered);
      assert.equal(last.pass.number, 2);
      assert.equal(last.pass.completed, day === 3, `day ${day}: ${last.message}`);
      assert.equal(last.pass.covered, covered.reduce((a, b) => a + b, 0));
    }
    assert.deepEqual(covered, [10, 10, 10]);
    assert.equal(sum(last!.pass.library), 30);
    assert.equal(last!.pass.library.ok, 30);
    assert.equal(last!.pass.mirror.ok, 30);
    // The pass is done: the next scheduled run starts pass 3 from the first asset.
    await passDay();
    const next = await run({ trigger: 'schedule' });
    assert.equal(next.error, undefined, String(next.error));
    assert.equal(next.report!.pass.number, 3);
    assert.equal(next.report!.pass.covered, next.report!.run.covered);
    assert.ok(next.report!.run.covered > 0 && next.report!.run.covered < 30, next.report!.message);
  });

  test('a pass whose remaining assets were deleted from Immich completes at the next run instead of waiting forever', async () => {
    const { run, config } = await setup(30, { audit: { passDays: 3 } });
    const file = auditStatePath(config);
    const backdate = async () => {
      const state = JSON.parse(await readFile(file, 'utf8')) as AuditState;
      state.lastScheduledRunAt = new Date(Date.parse(state.lastScheduledRunAt!) - 86_400_000).toISOString();
      await writeFile(file, JSON.stringify(state));
      return state;
    };
    await run({ trigger: 'schedule' });
    await backdate();
    const slice = await run({ trigger: 'schedule' });
    assert.equal(slice.report!.run.covered, 10);
    const { pass } = await backdate();
    await stack.pg.psql(`DELETE FROM asset WHERE id > '${pass!.after}'::uuid`, 'immich');
    const last = await run({ trigger: 'schedule' });
    assert.equal(last.error, undefined, String(last.error));
    assert.equal(last.report!.pass.completed, true);
    assert.equal(last.report!.pass.covered, 10);
    assert.equal(last.report!.run.covered, 0);
  });

  test('a run the operator starts finishes the pass under way; --full starts a new whole pass', async () => {
    const { run, config } = await setup(30, { audit: { passDays: 3 } });
    const file = auditStatePath(config);
    await run({ trigger: 'schedule' });
    const state = JSON.parse(await readFile(file, 'utf8')) as AuditState;
    state.lastScheduledRunAt = new Date(Date.parse(state.lastScheduledRunAt!) - 86_400_000).toISOString();
    await writeFile(file, JSON.stringify(state));
    const slice = await run({ trigger: 'schedule' });
    assert.equal(slice.report!.run.covered, 10);
    const rest = await run({ trigger: 'cli' });
    assert.equal(rest.report!.run.covered, 20);
    assert.equal(rest.report!.pass.completed, true);
    assert.equal(rest.report!.pass.number, 2);
    const full = await run({ trigger: 'cli', full: true });
    assert.deepEqual([full.report!.pass.number, full.report!.run.covered, full.report!.pass.completed], [3, 30, true]);
  });

  test('a state file that is not valid is not trusted: a new pass starts, and the report says why', async () => {
    const { run, config } = await setup(10);
    await writeFile(auditStatePath(config), JSON.stringify({ version: 1, pass: { number: 1, startedAt: 'yesterday', covered: -5 } }), { mode: 0o600 });
    const { report, error } = await run();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.pass.covered, 10);
    assert.equal(report!.pass.completed, true);
    assert.match(report!.message, /the saved audit position was not used \(\S+library-audit\.json: pass\.startedAt: .*\): a new pass started/);
  });

  test('a key directory others can read is refused with a one-line reason, nothing audited', async () => {
    const { run, config } = await setup(5);
    const dir = join(config.security.keyFile, '..');
    await chmod(dir, 0o755);
    try {
      const { error } = await run();
      assert.ok(error instanceof WorkflowFailedError);
      let cause: unknown = error.cause;
      while (!(cause instanceof ApplicationFailure) && cause instanceof Error && cause.cause) cause = cause.cause;
      assert.ok(cause instanceof ApplicationFailure);
      assert.equal(cause.type, 'UnsafePathError');
      assert.match(cause.message, /is not owner-only \(mode 755, owner 0\): chmod 700 it$/);
    } finally {
      await chmod(dir, 0o700);
    }
  });

  test('status shows the last audit: when, what it found, the pass; a damaged file makes the row failed', async () => {
    const { run, config, destination, assets } = await setup(15);
    const clean = await run();
    assert.equal(clean.error, undefined, String(clean.error));
    let row = (await collectStatus(config, undefined)).rows.find((r) => r.id === 'library-audit')!;
    assert.equal(row.state, 'ok', row.summary);
    assert.match(row.summary, new RegExp(`^last audit just now \\(${clean.workflowId}, 15 assets\\); last complete pass just now: pass 1 complete \\(15 assets\\): library 15 ok, 0 missing, 0 mismatched; mirror 15 ok`));

    await flipBit(join(destination, assets[2]!.relativePath));
    await run({ full: true });
    row = (await collectStatus(config, undefined)).rows.find((r) => r.id === 'library-audit')!;
    assert.equal(row.state, 'failed');
    assert.equal(row.problem, true);
    assert.match(row.summary, /^originals missing or damaged: .*pass 2 complete \(15 assets\): library 15 ok, 0 missing, 0 mismatched; mirror 14 ok, 0 missing, 1 mismatched/);

    // Stale: no complete pass within status.auditStaleDays.
    const file = auditStatePath(config);
    const state = JSON.parse(await readFile(file, 'utf8')) as AuditState;
    const old = new Date(Date.now() - 40 * 86_400_000).toISOString();
    state.lastPass = { ...state.lastPass!, completedAt: old, mirror: { ...state.lastPass!.mirror, ok: 15, mismatched: 0, names: { missing: [], mismatched: [] } } };
    await writeFile(file, JSON.stringify(state));
    row = (await collectStatus(config, undefined)).rows.find((r) => r.id === 'library-audit')!;
    assert.equal(row.state, 'stale', row.summary);
    assert.match(row.summary, /\(stale: no complete pass for 35 days\)$/);
  });
});
