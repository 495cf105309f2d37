import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { ensureRecovery } from '../../adapters/dump-store/recovery.js';
import { parseConfig, type Config } from '../../config/config.js';
import type { NightlyDbBackupReport, OffsiteSyncReport, WeeklyLibraryMirrorReport } from '../../workflows/index.js';
import { cliEnv } from '../helpers/cli.js';
import { makeImmichLibrary, mountTmpfs } from '../helpers/library.js';
import { cliPath, temporalBinary } from '../helpers/paths.js';
import { loadImmichLike, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { runWorkflow, withWorker } from '../helpers/run-workflow.js';
import { fixtureEnv, rawTestConfig, tempDir, writeConfigFile } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { startOwnTemporal, type TestTemporal } from '../helpers/temporal.js';

// The day the host is gone, played on real parts: one host backs up its database, copies it to the
// NAS (a real sshd) and mirrors the library onto the drive (a real tmpfs); then its key, its staging
// dir, its Temporal server (and history), its database cluster and its library are destroyed. A new
// host with an empty home, the same config, the recovery code, the NAS and the drive runs
// `immich-backup recover` (after a night in which it backed up its own empty database): every table
// comes back equal, and every original's SHA-1 equals the one Immich's restored database holds.

const stack = useStack({ temporal: false, sshd: true, ping: true, dockerLog: true });

const EMAIL = 'rosalind.grandmother@family.example';
const TABLES = ['users', 'assets', 'exif', 'asset_faces', 'smart_search', 'asset'];

/** Each table's content, order-free: the md5 of its rows as text, sorted. */
async function tableDigests(pg: TestPostgres): Promise<Record<string, string>> {
  const out = await pg.psql(TABLES.map((t) => `SELECT '${t}', count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM public.${t} x;`).join('\n'), 'immich');
  return Object.fromEntries(out.split('\n').map((l) => l.split('|')).map(([t, n, md5]) => [t!, `${n} ${md5}`]));
}

/** Every regular file under dir, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** A host: its own home (key, staging dir), its own Temporal server, the shared NAS, drive and library paths. */
async function host(name: string, shared: { root: string; library: string; mountPoint: string }, temporal: TestTemporal) {
  const home = join(shared.root, name);
  const raw = rawTestConfig({
    backupDir: join(home, 'dumps'),
    address: temporal.address,
    extra: {
      temporal: { namespace: temporal.namespace },
      security: { keyFile: join(home, '.config', 'immich-backup', 'key') },
      offsite: { ...stack.sshd.offsite, remoteDir: join(shared.root, 'nas', 'postgres') },
      // The library's third copy: an encrypted restic repository on the NAS.
      library: { source: shared.library, destination: join(shared.mountPoint, 'immich'), mountPoint: shared.mountPoint, mountWaitMinutes: 0, offsite: { enabled: true, remoteDir: join(shared.root, 'nas', 'library') } },
      immich: { composeDir: shared.root, pingUrl: stack.ping.url, healthTimeoutSeconds: 5 },
      restore: { approvalTimeoutMinutes: 5 },
      log: { level: 'info' },
    },
  });
  const config = parseConfig(raw);
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection, namespace: temporal.namespace });
  // The config lives apart from the home (/etc/immich-backup): the new host's home starts empty.
  const etc = join(shared.root, `${name}-etc`);
  await mkdir(etc, { recursive: true });
  return { home, raw, config, client, connection, configFile: await writeConfigFile(etc, raw) };
}

async function run<T>(h: { client: Client; config: Config }, address: string, type: string): Promise<T> {
  const { report, error } = await runWorkflow<T>(h.client, address, h.config, type);
  assert.equal(error, undefined, `${type}: ${String(error)}`);
  return report!;
}

describe('disaster recovery from nothing', () => {
  test('a new host with only the config, the recovery code, the NAS and the drive restores the database exactly and the library by Immich\'s SHA-1', async () => {
    const root = await tempDir('disaster');
    const library = join(root, 'library');
    const mountPoint = join(root, 'wd-backup');
    stack.mounted(await mountTmpfs(mountPoint));
    const shared = { root, library, mountPoint };

    // The old host: Immich's database and library, backed up, copied offsite, mirrored.
    const oldPg = await startPostgres();
    const cluster: { fresh?: TestPostgres } = {};
    stack.defer(() => cluster.fresh?.stop());
    Object.assign(process.env, fixtureEnv(oldPg));
    await loadImmichLike(oldPg, 300);
    await oldPg.psql(`INSERT INTO users VALUES (md5('rosalind')::uuid, '${EMAIL}', 'Rosalind', now())`, 'immich');
    const assets = await makeImmichLibrary(oldPg, library, 40);
    const oldTemporal = await startOwnTemporal(temporalBinary, false, 'default');
    const old = await host('old-host', shared, oldTemporal);
    const backup = await run<NightlyDbBackupReport>(old, oldTemporal.address, 'NightlyDbBackup');
    const offsite = await run<OffsiteSyncReport>(old, oldTemporal.address, 'OffsiteSync');
    assert.deepEqual(offsite.copied, [backup.file]);
    await run<WeeklyLibraryMirrorReport>(old, oldTemporal.address, 'WeeklyLibraryMirror');
    // The operator wrote the code down when the worker made it (shown by `immich-backup recovery-code`).
    const { code } = await ensureRecovery(old.config.security.keyFile);
    const codeFile = join(root, 'code-on-paper.txt');
    await writeFile(codeFile, `${code}\n`);
    const before = await tableDigests(oldPg);

    // The NAS holds no plaintext: no table name, no e-mail address, in any file there (gzip-decoded too).
    const nasFiles = await filesUnder(join(root, 'nas'));
    assert.ok(nasFiles.length >= 4, nasFiles.join(', '));
    for (const file of nasFiles) {
      const bytes = await readFile(file);
      const texts = [bytes.toString('latin1'), ...(bytes[0] === 0x1f && bytes[1] === 0x8b ? [gunzipSync(bytes).toString('latin1')] : [])];
      for (const secret of [EMAIL, 'asset_faces', 'smart_search', 'CREATE TABLE', assets[0]!.relativePath.split('/').at(-1)!]) {
        assert.ok(!texts.some((t) => t.includes(secret)), `${file} holds ${JSON.stringify(secret)} in the clear`);
      }
    }

    // The disaster: the host's key and staging dir, its Temporal server and history, its database cluster, its library.
    await old.connection.close();
    await oldTemporal.stop();
    await oldPg.stop();
    await rm(old.home, { recursive: true, force: true });
    await rm(library, { recursive: true, force: true });
    await assert.rejects(stat(old.config.security.keyFile), { code: 'ENOENT' });

    // The new host: an empty cluster (Immich's containers would make one), a Temporal of its own, an empty home.
    const newPg = (cluster.fresh = await startPostgres());
    Object.assign(process.env, fixtureEnv(newPg));
    const newTemporal = await startOwnTemporal(temporalBinary, false, 'default');
    stack.defer(() => newTemporal.stop());
    const fresh = await host('new-host', shared, newTemporal);
    stack.defer(() => fresh.connection.close());
    await assert.rejects(stat(join(fresh.home, '.config')), { code: 'ENOENT' });
    // The new host ran a night before the operator got to it: its own key, a backup of its empty
    // database on the NAS, newer than every copy the old host made. It must not be what comes back.
    const emptyNight = await run<NightlyDbBackupReport>(fresh, newTemporal.address, 'NightlyDbBackup');
    assert.deepEqual((await run<OffsiteSyncReport>(fresh, newTemporal.address, 'OffsiteSync')).copied, [emptyNight.file]);
    assert.ok(emptyNight.file > backup.file);

    const recovered = await withWorker(newTemporal.address, fresh.config, () =>
      execa(cliPath, ['-c', fresh.configFile, 'recover', '--code-file', codeFile, '--yes'], { env: cliEnv(), extendEnv: false, reject: false, stdin: 'ignore', timeout: 300_000 }),
    );
    assert.equal(recovered.exitCode, 0, `${recovered.stderr}\n${recovered.stdout}`);
    assert.match(recovered.stderr, /recovered 1 key\(s\) from keyring-[0-9a-f]{16}-[0-9a-f]{8}\.json/);
    assert.match(recovered.stderr, /this host's own earlier key\(s\) kept, retired: [0-9a-f]{16}/);
    assert.match(recovered.stdout, new RegExp(`^recovered: database from ${backup.file.replace(/\./g, '\\.')} \\(sha256 ${backup.sha256}, from the NAS\\); library from the drive`, 'm'));

    // Every table equal; every original's SHA-1 the one Immich's restored database holds.
    const sha1s = async (libraryRoot: string) => {
      const rows = (await newPg.psql(`SELECT "originalPath", encode(checksum, 'hex') FROM asset ORDER BY 1`, 'immich')).split('\n').map((l) => l.split('|') as [string, string]);
      assert.equal(rows.length, assets.length);
      for (const [originalPath, sha1] of rows) {
        const bytes = await readFile(join(libraryRoot, originalPath.replace(/^\/data\//, '')));
        assert.equal(createHash('sha1').update(bytes).digest('hex'), sha1, originalPath);
      }
    };
    assert.deepEqual(await tableDigests(newPg), before);
    await sha1s(library);

    // Had the drive died too: the library comes back from its NAS copy (restic) into an empty folder.
    const fromNas = join(root, 'library-from-nas');
    const nasRaw = { ...fresh.raw, library: { ...fresh.raw.library, source: fromNas } };
    await mkdir(join(root, 'nas-library-etc'));
    const nasConfigFile = await writeConfigFile(join(root, 'nas-library-etc'), nasRaw);
    const again = await withWorker(newTemporal.address, parseConfig(nasRaw), () =>
      execa(cliPath, ['-c', nasConfigFile, 'recover', '--code-file', codeFile, '--yes', '--library', 'nas'], { env: cliEnv(), extendEnv: false, reject: false, stdin: 'ignore', timeout: 300_000 }),
    );
    assert.equal(again.exitCode, 0, `${again.stderr}\n${again.stdout}`);
    assert.match(again.stdout, new RegExp(`library from the NAS copy, snapshot [0-9a-f]+ \\(${assets.length} file\\(s\\)\\)`));
    await sha1s(fromNas);
  });

  test('a NAS that hides the newest keyring (after a rotation) cannot make recover quietly go back to the old key: it stops and says which keys are missing', async () => {
    const root = await tempDir('disaster-hidden');
    const pg = await startPostgres();
    stack.defer(() => pg.stop());
    Object.assign(process.env, fixtureEnv(pg));
    await loadImmichLike(pg, 50);
    const temporal = await startOwnTemporal(temporalBinary, false, 'default');
    stack.defer(() => temporal.stop());
    const shared = { root, library: join(root, 'library'), mountPoint: join(root, 'no-drive') };
    const old = await host('old-host', shared, temporal);
    stack.defer(() => old.connection.close());
    await run<NightlyDbBackupReport>(old, temporal.address, 'NightlyDbBackup');
    await run<OffsiteSyncReport>(old, temporal.address, 'OffsiteSync');
    const { code } = await ensureRecovery(old.config.security.keyFile);
    const keyringDir = join(root, 'nas', 'postgres', 'keyring');
    const [before] = await readdir(keyringDir);
    // A suspected leak: a new key and a new code (not confirmed yet), and a backup made with the new key.
    const rotated = await execa(cliPath, ['-c', old.configFile, 'keys', 'rotate'], { env: cliEnv(), extendEnv: false, reject: false, stdin: 'ignore' });
    assert.equal(rotated.exitCode, 0, rotated.stderr);
    await new Promise((r) => setTimeout(r, 1100)); // dump names are stamped to the second
    await run<NightlyDbBackupReport>(old, temporal.address, 'NightlyDbBackup');
    await run<OffsiteSyncReport>(old, temporal.address, 'OffsiteSync');
    const after = await readdir(keyringDir);
    assert.equal(after.length, 2, `the old code's envelope stays until the new code is confirmed: ${after.join(', ')}`);
    // The NAS hides the new envelope; whoever holds the OLD code (the one the operator wrote down first) recovers.
    for (const name of after.filter((n) => n !== before)) await rm(join(keyringDir, name));
    const codeFile = join(root, 'old-code.txt');
    await writeFile(codeFile, `${code}\n`);
    const fresh = await host('new-host', shared, temporal);
    stack.defer(() => fresh.connection.close());
    const recovered = await execa(cliPath, ['-c', fresh.configFile, 'recover', '--code-file', codeFile, '--yes', '--library', 'none'], { env: cliEnv(), extendEnv: false, reject: false, stdin: 'ignore' });
    assert.equal(recovered.exitCode, 1, recovered.stderr);
    assert.match(recovered.stderr, /^error: the NAS holds copies made with key\(s\) [0-9a-f]{16}, which no keyring the code opened holds: a newer keyring may be missing there .* nothing else was changed/m);
  });
});
