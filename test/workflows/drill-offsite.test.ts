import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { privateCopyDir } from '../../adapters/dump-store/index.js';
import { parseConfig, type Config } from '../../config/config.js';
import type { NightlyDbBackupReport, OffsiteSyncReport, RestoreDrillReport } from '../../workflows/index.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { freePort } from '../helpers/net.js';
import { pgBin } from '../helpers/postgres.js';
import { failureType } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { rawTestConfig, tempDir } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';

// The drill proves the offsite copy too: after the local dump, RestoreDrill fetches the newest copy
// on the NAS (a real sshd on loopback) that OffsiteSync encrypted there, decrypts it with the
// keyring (age), verifies its tag, loads it into a throwaway PostgreSQL and compares it with its
// own recorded rows. Real Temporal dev server, PostgreSQL, pg_dumpall, age, rsync over ssh.

const stack = useStack({ postgres: 300, dockerEnv: { FIXTURE_PG_BIN: pgBin }, sshd: true });

async function world(offsite: Record<string, unknown> = {}, drillSection: Record<string, unknown> = { offsiteCopy: true }) {
  const root = await tempDir('drill-offsite');
  const backupDir = join(root, 'dumps');
  const nasDir = join(root, 'nas');
  const raw = rawTestConfig({ backupDir, extra: { offsite: { ...stack.sshd.offsite, remoteDir: nasDir, ...offsite }, drill: drillSection } });
  const config = parseConfig(raw);
  const run = async <T>(type: string) => {
    const { report, error } = await runWorkflow<T>(stack.client, stack.temporal.address, config, type);
    assert.equal(error, undefined, String(error));
    return report!;
  };
  const backup = async () => (await run<NightlyDbBackupReport>('NightlyDbBackup')).file;
  /** OffsiteSync: every local dump the NAS lacks, encrypted there. */
  const sync = async () => (await run<OffsiteSyncReport>('OffsiteSync')).copied;
  const drill = (c: Config = config) => runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, c, 'RestoreDrill');
  /** What is left in the folder the NAS copies are decrypted into: nothing once a drill ended. */
  const leftInPrivateFolder = async () => (await readdir(privateCopyDir(config.security.keyFile)).catch(() => [] as string[])).filter((n) => n.startsWith('nas-'));
  return { root, backupDir, nasDir, raw, config, backup, sync, drill, leftInPrivateFolder };
}

/** `<X>.age.sha256` for what `<X>.age` now holds: the NAS's checksum file agrees with an altered copy. */
async function writeChecksum(nasDir: string, file: string): Promise<void> {
  const sha256 = createHash('sha256').update(await readFile(join(nasDir, `${file}.age`))).digest('hex');
  await writeFile(join(nasDir, `${file}.age.sha256`), `${sha256}  ${file}.age\n`);
}

const details = (error: unknown) => (error as { cause: { details: unknown[] } }).cause.details[0] as RestoreDrillReport;

describe('RestoreDrill drills the newest NAS copy too', () => {
  test('the newest NAS copy is fetched, decrypted, restored and compared, and the report names it; the same dump as the local one is proven by its decrypted sha256', async () => {
    const w = await world();
    const older = await w.backup();

    // Nothing on the NAS yet: no proof of the offsite copy, so the drill fails and says why.
    const empty = await w.drill();
    const none = failureType(empty.error);
    assert.equal(none.type, 'DrillFailedError');
    assert.match(none.message, /^restore drill of the offsite copy failed: the offsite copy on .* failed: nothing to drill: no dump copy on the NAS .*: run immich-backup offsite sync, or set drill\.offsiteCopy: false where there is no NAS \(the local immich_\S+ passed\)$/);

    assert.deepEqual(await w.sync(), [older]);
    const newer = await w.backup();
    assert.notEqual(newer, older);
    assert.ok((await readdir(w.nasDir)).includes(`${older}.age`), 'the NAS holds the encrypted copy');
    const { report, error } = await w.drill();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.passed, true);
    assert.equal(report!.dump, newer, 'the local part drilled the newest local dump');
    const offsite = report!.offsite!;
    assert.equal(offsite.file, older, 'the offsite part drilled the newest NAS copy');
    assert.equal(offsite.verdict, 'passed');
    assert.equal(offsite.proof, 'loaded');
    assert.equal(offsite.tables, report!.tables);
    assert.equal(offsite.rows, report!.rows);
    assert.equal(offsite.contentCompared, report!.contentCompared);
    assert.ok(offsite.contentCompared! > 0, 'each table\'s data compared with the digests in the copy\'s own row counts');
    assert.match(offsite.where, new RegExp(`${w.nasDir}$`));
    assert.deepEqual(await w.leftInPrivateFolder(), [], 'the decrypted copy was removed');

    // Once the newest local dump is on the NAS too, its copy is decrypted and held against the local dump's sha256.
    assert.deepEqual(await w.sync(), [newer]);
    const same = await w.drill();
    assert.equal(same.error, undefined, String(same.error));
    assert.equal(same.report!.offsite!.file, newer);
    assert.equal(same.report!.offsite!.verdict, 'passed');
    assert.equal(same.report!.offsite!.proof, 'same-as-local');
    assert.deepEqual(await w.leftInPrivateFolder(), []);
  });

  test('a NAS copy whose ciphertext was altered fails the drill naming the offsite copy, while the local dump passed', async () => {
    const w = await world();
    const older = await w.backup();
    await w.sync();
    const newer = await w.backup();
    // One byte in the middle of the encrypted dump; its checksum file still names the old ciphertext.
    const path = join(w.nasDir, `${older}.age`);
    const bytes = await readFile(path);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0x01;
    await writeFile(path, bytes);

    const altered = await w.drill();
    const first = failureType(altered.error);
    assert.equal(first.type, 'DrillFailedError');
    assert.match(first.message, new RegExp(`^restore drill of the offsite copy failed: the offsite copy ${older} on \\S+ failed: it could not be fetched, decrypted and verified with this host's keyring: the NAS copy of ${older} \\(${older}\\.age\\) has sha256 [0-9a-f]{64}, but its ${older}\\.age\\.sha256 records [0-9a-f]{64}: altered or damaged on the NAS; .* \\(the local ${newer} passed\\)$`));
    assert.equal(details(altered.error).passed, true, 'the local part passed');
    assert.equal(details(altered.error).offsite!.error, 'ChecksumMismatchError');

    // The checksum file rewritten to match: age itself finds the chunk that does not authenticate.
    await writeChecksum(w.nasDir, older);
    const forged = await w.drill();
    const second = failureType(forged.error);
    assert.equal(second.type, 'DrillFailedError');
    assert.match(second.message, new RegExp(`^restore drill of the offsite copy failed: the offsite copy ${older} on \\S+ failed: it could not be fetched, decrypted and verified with this host's keyring: the NAS copy of ${older} does not decrypt \\(.*\\): altered or damaged where it was kept; .* \\(the local ${newer} passed\\)$`));
    const report = details(forged.error);
    assert.equal(report.passed, true);
    assert.equal(report.dump, newer);
    assert.equal(report.offsite!.verdict, 'failed');
    assert.equal(report.offsite!.error, 'UnauthenticatedDumpError');
    assert.deepEqual(await w.leftInPrivateFolder(), [], 'nothing decrypted was left behind');
    await recordFault('the newest NAS copy\'s ciphertext altered by one byte (its .age.sha256 left, then rewritten to match)', 'RestoreDrill failed with DrillFailedError naming the offsite copy: ChecksumMismatchError, then "does not decrypt" (age\'s authentication); the local dump passed; nothing decrypted left behind');
  });

  test('a NAS copy encrypted to a key not in the keyring fails the drill saying the key is not held, while the local dump passed', async () => {
    const w = await world();
    const older = await w.backup();
    await w.sync();
    const newer = await w.backup();
    // The copy replaced by the same dump encrypted to an age key of another keyring, its checksum file to match.
    const foreign = /^# public key: (age1[0-9a-z]+)$/m.exec((await execa('age-keygen')).stdout)![1]!;
    await rm(join(w.nasDir, `${older}.age`));
    await execa('age', ['-e', '-r', foreign, '-o', join(w.nasDir, `${older}.age`), join(w.backupDir, older)]);
    await writeChecksum(w.nasDir, older);

    const { error } = await w.drill();
    const { type, message } = failureType(error);
    assert.equal(type, 'DrillFailedError');
    assert.match(message, new RegExp(`^restore drill of the offsite copy failed: the offsite copy ${older} on \\S+ failed: it could not be fetched, decrypted and verified with this host's keyring: the NAS copy of ${older} is encrypted to a key this host does not hold: .* \\(the local ${newer} passed\\)$`));
    const report = details(error);
    assert.equal(report.passed, true);
    assert.equal(report.offsite!.file, older);
    assert.equal(report.offsite!.error, 'UnauthenticatedDumpError');
    await recordFault('the newest NAS copy encrypted to an age key the keyring does not hold (a lost key)', 'RestoreDrill failed with DrillFailedError: "the offsite copy … is encrypted to a key this host does not hold"; the local dump passed');
  });

  test('drill.offsiteCopy false: the drill never touches the NAS; on, an unreachable NAS fails it naming the offsite copy', async () => {
    // A NAS on a port nothing listens on: any attempt to reach it fails.
    const closed = await freePort();
    const off = await world({ port: closed }, { offsiteCopy: false });
    const file = await off.backup();
    const { report, error } = await off.drill();
    assert.equal(error, undefined, String(error));
    assert.equal(report!.dump, file);
    assert.equal(report!.offsite, undefined, 'no offsite part');

    const on = parseConfig({ ...off.raw, drill: { ...off.raw.drill, offsiteCopy: true } });
    const unreachable = await off.drill(on);
    const { type, message } = failureType(unreachable.error);
    assert.equal(type, 'DrillFailedError');
    assert.match(message, new RegExp(`^restore drill of the offsite copy failed: the offsite copy on \\S+:${closed}:\\S+ failed: the NAS \\S+ could not be listed: .* \\(the local ${file} passed\\)$`));
    assert.equal(details(unreachable.error).offsite!.error, 'NasUnreachableError');
  });
});
