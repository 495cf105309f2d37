import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { chromium, type Browser } from 'playwright-core';
import { applySchedules } from '../../src/schedules.js';
import type { NightlyDbBackupReport } from '../../workflows/index.js';
import { loadImmichLike, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { fixtureEnv, tempDir, testConfig } from '../helpers/setup.js';
import { startTestTemporal } from '../helpers/temporal.js';

// What an operator sees in Temporal's own Web UI (the dev server's, as `npm start` runs it),
// through a real headless Chromium (Debian's chromium package) driven by playwright-core.

const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => existsSync(p));

let temporal: Awaited<ReturnType<typeof startTestTemporal>>;
let pg: TestPostgres;
let connection: Connection;
let client: Client;
let browser: Browser;

before(async () => {
  assert.ok(CHROMIUM, 'chromium is not installed: run `npm run setup -- test` (npm test does)');
  [temporal, pg] = await Promise.all([startTestTemporal(undefined, { ui: true }), startPostgres()]);
  await loadImmichLike(pg, 500);
  Object.assign(process.env, fixtureEnv(pg));
  connection = await Connection.connect({ address: temporal.address });
  client = new Client({ connection });
  // --no-sandbox: Chromium's sandbox cannot run as root, which these test machines are.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});

after(async () => {
  await browser?.close();
  await connection?.close();
  await Promise.all([temporal?.stop(), pg?.stop()]);
});

describe('Temporal Web UI', () => {
  test('shows the schedules and a completed NightlyDbBackup with its result', async () => {
    const config = testConfig({ backupDir: await tempDir('ui'), address: temporal.address });
    await applySchedules(client, config);
    const { report, error, workflowId } = await runWorkflow<NightlyDbBackupReport>(client, temporal.address, config, 'NightlyDbBackup');
    assert.equal(error, undefined);
    const page = await browser.newPage();
    try {
      await page.goto(`${temporal.uiUrl}/namespaces/default/schedules`);
      for (const id of ['nightly-db-backup', 'offsite-sync', 'weekly-library-mirror']) {
        await page.getByText(id, { exact: true }).first().waitFor({ timeout: 30_000 });
      }
      assert.ok(report);
      // The run's page: its status, its result (the report) and the activities it chained.
      await page.goto(`${temporal.uiUrl}/namespaces/default/workflows/${workflowId}`);
      await page.getByText(`"file": "${report.file}"`).first().waitFor({ timeout: 30_000 });
      const text = await page.locator('body').innerText();
      assert.match(text, /\bcompleted\b/i);
      assert.ok(text.includes(`"sha256": "${report.sha256}"`), 'the result shows the sha256');
      for (const step of ['discoverPostgresContainer', 'dumpDatabase', 'validateDump', 'recordRowCounts', 'pruneDumps']) assert.ok(text.includes(step), step);
      // The workflow list filters on the project's search attributes.
      const query = encodeURIComponent('BackupKind="nightly-db-backup" AND BackupOutcome="success"');
      await page.goto(`${temporal.uiUrl}/namespaces/default/workflows?query=${query}`);
      await page.getByText(workflowId).first().waitFor({ timeout: 30_000 });
    } finally {
      await page.close();
    }
  });
});
