import assert from 'node:assert/strict';
import { chmod, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { createHash } from 'node:crypto';
import { parseConfig, type Config } from '../../config/config.js';
import { CONTENT_DIGESTS_MISSING, CONTENT_NOT_COMPARED } from '../../core/reports.js';
import type { NightlyDbBackupReport, RestoreDrillReport } from '../../workflows/index.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { pgBin } from '../helpers/postgres.js';
import { failureType, tamper } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { listDir, rawTestConfig, tempDir } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { tagPlanted } from '../helpers/trust.js';

// The drill proves content: NightlyDbBackup digests each table's data from the dump's own stream,
// RestoreDrill re-dumps its throwaway (host binaries, or the container engine: the fixture docker)
// and compares table by table. Real Temporal dev server, PostgreSQL, pg_dumpall, igzip.

const ASSETS = 1500;

const stack = useStack({ postgres: ASSETS, dockerEnv: { FIXTURE_PG_BIN: pgBin } });

async function backedUp(extra: Record<string, Record<string, unknown>> = {}) {
  const dir = await tempDir('drill-content');
  const config = parseConfig(rawTestConfig({ backupDir: dir, extra }));
  const { report, error } = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup');
  assert.equal(error, undefined, String(error));
  return { dir, config, file: report!.file, report: report! };
}

const drill = (config: Config) => runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, config, 'RestoreDrill');

/** Rewrites the dump's SQL and signs it and its (unchanged) row counts with the test key: only the content check can object. */
async function alterAndResign(dir: string, file: string, config: Config, edit: (sql: string) => string): Promise<void> {
  const rowsText = await readFile(join(dir, `${file}.rows.json`), 'utf8');
  await tamper(dir, file, edit, file, config);
  const sha256 = createHash('sha256').update(await readFile(join(dir, file))).digest('hex');
  await tagPlanted(config, dir, file, sha256, rowsText);
}

/** One value in one COPY row of public.assets: an asset's path, same length, same row count. */
const alterOnePath = (sql: string) => {
  const block = sql.indexOf('COPY public.assets ');
  const at = sql.indexOf('/IMG_000007.jpg', block);
  assert.ok(block !== -1 && at !== -1 && at < sql.indexOf('\n\\.\n', block), 'the value is inside the assets COPY block');
  return `${sql.slice(0, at)}/IMG_000070.jpg${sql.slice(at + '/IMG_000007.jpg'.length)}`;
};

describe('RestoreDrill compares each table\'s data', () => {
  test('an honest dump passes with every table\'s data compared, and the digests sit in the tagged row counts', async () => {
    const { dir, config, file, report: backup } = await backedUp();
    // The hidden file that carried the digests from the dump activity is gone: they are in .rows.json.
    assert.deepEqual(await listDir(dir), [file, `${file}.hmac`, `${file}.rows.json`, `${file}.sha256`]);
    const rows = JSON.parse(await readFile(join(dir, `${file}.rows.json`), 'utf8')) as { tables: Record<string, number>; digests: Record<string, string> };
    assert.deepEqual(Object.keys(rows.digests).sort(), Object.keys(rows.tables).sort());
    const { report, error } = await drill(config);
    assert.equal(error, undefined, String(error));
    assert.equal(report!.passed, true);
    assert.equal(report!.dump, file);
    assert.equal(report!.contentCompared, backup.rowCounts.tables);
    assert.deepEqual(report!.contentDifferences, []);
    assert.equal(report!.contentDifferenceCount, 0);
    assert.equal(report!.contentNote, undefined);
    assert.ok(typeof report!.redumpMs === 'number');
  });

  test('a dump whose table data was altered, row counts equal and re-signed, fails the drill naming exactly that table', async () => {
    const { dir, config, file } = await backedUp();
    await alterAndResign(dir, file, config, alterOnePath);
    const { error } = await drill(config);
    const { type, message } = failureType(error);
    assert.equal(type, 'DrillFailedError');
    assert.equal(message, `restore drill of ${file} failed: 1 table(s) restore with other data than the dump recorded at dump time (their re-dumped rows differ): immich: public.assets`);
    const report = (error as { cause: { details: unknown[] } }).cause.details[0] as RestoreDrillReport;
    assert.deepEqual(report.differences, [], 'the row counts match');
    assert.equal(report.loadErrorCount, 0);
    assert.deepEqual(report.contentDifferences, ['immich: public.assets']);
    assert.equal(report.contentDifferenceCount, 1);
    await recordFault('a dump whose assets data was altered (one path in one COPY row), row counts equal, dump re-signed with the key', `RestoreDrill failed with DrillFailedError naming exactly immich: public.assets (${report.contentCompared} tables compared)`);
  });

  test('drill.engine container: the throwaway container is re-dumped through the container engine, and the altered table named', async () => {
    const state = await tempDir('docker-state');
    await chmod(state, 0o755); // the throwaway server runs as the postgres user
    process.env.FIXTURE_DOCKER_STATE = state;
    try {
      const { dir, config, file } = await backedUp({ drill: { engine: 'container' } });
      const honest = await drill(config);
      assert.equal(honest.error, undefined, String(honest.error));
      assert.equal(honest.report!.engine, 'container');
      assert.equal(honest.report!.passed, true);
      assert.equal(honest.report!.contentCompared, honest.report!.tables);
      await alterAndResign(dir, file, config, alterOnePath);
      const altered = await drill(config);
      assert.equal(failureType(altered.error).type, 'DrillFailedError');
      const report = (altered.error as { cause: { details: unknown[] } }).cause.details[0] as RestoreDrillReport;
      assert.equal(report.engine, 'container');
      assert.deepEqual(report.contentDifferences, ['immich: public.assets']);
      assert.deepEqual(report.differences, []);
    } finally {
      delete process.env.FIXTURE_DOCKER_STATE;
    }
  });

  test('a dump recorded before digests still drills on its row counts and says its content was not compared', async () => {
    const { dir, config, file } = await backedUp();
    // .rows.json as the code before digests wrote it, tagged with the key.
    const rows = JSON.parse(await readFile(join(dir, `${file}.rows.json`), 'utf8')) as Record<string, unknown>;
    delete rows.digests;
    delete rows.digestsExpected;
    const text = JSON.stringify(rows, null, 1) + '\n';
    await writeFile(join(dir, `${file}.rows.json`), text);
    const sha256 = (await readFile(join(dir, `${file}.sha256`), 'utf8')).split(' ')[0]!;
    await tagPlanted(config, dir, file, sha256, text);
    const { report, error } = await drill(config);
    assert.equal(error, undefined, String(error));
    assert.equal(report!.passed, true);
    assert.equal(report!.contentNote, CONTENT_NOT_COMPARED);
    assert.equal(report!.contentNote, 'content not compared: dump predates digests');
    assert.equal(report!.contentCompared, 0);
    assert.equal(report!.redumpMs, undefined, 'no re-dump without digests to compare with');
  });

  test('digests removed before the row counts are recorded: the backup fails with DigestsMissingError, and the drill fails saying they are missing, not that the dump predates them', async () => {
    const dir = await tempDir('drill-content');
    const config = parseConfig(rawTestConfig({ backupDir: dir }));
    // Someone else writing in backup.dir: the hidden digests file goes as soon as the dump activity writes it.
    let removed = '';
    const removeDigests = async () => {
      for (const deadline = Date.now() + 120_000; Date.now() < deadline; await sleep(2)) {
        const hidden = (await readdir(dir).catch(() => [] as string[])).find((n) => n.startsWith('.') && n.endsWith('.digests'));
        if (hidden) {
          await rm(join(dir, hidden));
          removed = hidden;
          return;
        }
      }
      throw new Error('no digests file appeared beside the dump');
    };
    const backup = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup', removeDigests);
    const { type, message } = failureType(backup.error);
    assert.equal(type, 'DigestsMissingError');
    const file = removed.slice(1, -'.digests'.length);
    assert.match(file, /^immich_\S+\.sql\.(gz|zst)$/);
    assert.equal(message, `the table digests taken while ${file} was written are missing or do not verify (${join(dir, removed)} was removed or altered before its row counts were recorded): its row counts are recorded, but no drill can compare its data and the drill will fail on it. Find what else writes in ${dir}, then run immich-backup backup db`);
    // The counts are recorded, tagged, saying digests were taken: the drill cannot mistake the dump for an old one.
    const rows = JSON.parse(await readFile(join(dir, `${file}.rows.json`), 'utf8')) as { digests?: unknown; digestsExpected?: unknown };
    assert.equal(rows.digests, undefined);
    assert.equal(rows.digestsExpected, true);
    const { error } = await drill(config);
    const failed = failureType(error);
    assert.equal(failed.type, 'DrillFailedError');
    assert.equal(failed.message, `restore drill of ${file} failed: its table digests were taken at dump time but are missing from its row counts (removed or altered before they were recorded), so its data could not be compared: run immich-backup backup db, then drill the new dump`);
    const report = (error as { cause: { details: unknown[] } }).cause.details[0] as RestoreDrillReport;
    assert.equal(report.contentNote, CONTENT_DIGESTS_MISSING);
    assert.equal(report.contentNote, 'content not compared: digests missing');
    assert.equal(report.passed, false);
    assert.deepEqual(report.differences, [], 'the row counts match');
    assert.equal(report.contentCompared, 0);
  });
});
