import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { applySchedules } from '../../temporal/schedules.js';
import { join } from 'node:path';
import { parseConfig } from '../../config/config.js';
import type { NightlyDbBackupReport, RestoreDatabaseReport } from '../../workflows/index.js';
import { cli } from '../helpers/cli.js';
import { waitFor } from '../helpers/net.js';
import { stepReached } from '../helpers/restore-stack.js';
import { testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { rawTestConfig, writeConfigFile } from '../helpers/setup.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { tempDir, testConfig } from '../helpers/setup.js';
import { useStack } from '../helpers/stack.js';
import { startAuthorized } from '../helpers/trust.js';

// What an operator sees in Temporal's own Web UI (the dev server's, as `npm start` runs it),
// through a real headless Chromium (Debian's chromium package) driven by playwright-core.

const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => existsSync(p));

let browser: Browser;

const stack = useStack({ temporal: { ui: true }, postgres: 500, dockerEnv: true, ping: true }, async () => {
  assert.ok(CHROMIUM, 'chromium is not installed: run `npm run setup -- test` (npm test does)');
  // --no-sandbox: Chromium's sandbox cannot run as root, which these test machines are.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  stack.defer(() => browser.close());
});

describe('Temporal Web UI', () => {
  test('shows the schedules and a completed NightlyDbBackup with its result', async () => {
    const config = testConfig({ backupDir: await tempDir('ui'), address: stack.temporal.address });
    await applySchedules(stack.client, config);
    const { report, error, workflowId } = await runWorkflow<NightlyDbBackupReport>(stack.client, stack.temporal.address, config, 'NightlyDbBackup');
    assert.equal(error, undefined);
    const page = await browser.newPage();
    try {
      await page.goto(`${stack.temporal.uiUrl}/namespaces/default/schedules`);
      for (const id of ['nightly-db-backup', 'offsite-sync', 'weekly-library-mirror']) {
        await page.getByText(id, { exact: true }).first().waitFor({ timeout: 30_000 });
      }
      assert.ok(report);
      // The run's page: its status, its result (the report) and the activities it chained.
      await page.goto(`${stack.temporal.uiUrl}/namespaces/default/workflows/${workflowId}`);
      await page.getByText(`"file": "${report.file}"`).first().waitFor({ timeout: 30_000 });
      let text = await page.locator('body').innerText();
      assert.match(text, /\bcompleted\b/i);
      assert.ok(text.includes(`"sha256": "${report.sha256}"`), 'the result shows the sha256');
      // Every activity it chained, in the event history.
      await page.getByText('Event History').first().click();
      await page.getByText('discoverPostgresContainer').first().waitFor({ timeout: 30_000 });
      text = await page.locator('body').innerText();
      for (const step of ['requestLock', 'discoverPostgresContainer', 'dumpDatabase', 'validateDump', 'recordRowCounts', 'pruneDumps']) assert.ok(text.includes(step), step);
      // The workflow list filters on the project's search attributes.
      const query = encodeURIComponent('BackupKind="nightly-db-backup" AND BackupOutcome="success"');
      await page.goto(`${stack.temporal.uiUrl}/namespaces/default/workflows?query=${query}`);
      await page.getByText(workflowId).first().waitFor({ timeout: 30_000 });
    } finally {
      await page.close();
    }
  });

  test('problem 4: a restore waiting for approval shows it, with the command that approves it; the approve signal sent from the UI without data breaks nothing', async () => {
    const root = await tempDir('ui-restore');
    const raw = rawTestConfig({
      backupDir: join(root, 'dumps'),
      address: stack.temporal.address,
      extra: { immich: { composeDir: root, pingUrl: stack.ping.url, healthTimeoutSeconds: 5 }, restore: { approvalTimeoutMinutes: 5 } },
    });
    const config = parseConfig(raw);
    const configFile = await writeConfigFile(root, raw);
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    try {
      const report = await withWorker(stack.temporal.address, config, async () => {
        const backup = await stack.client.workflow.execute('NightlyDbBackup', { taskQueue: config.temporal.taskQueue, workflowId: testWorkflowId('NightlyDbBackup'), args: [{}] });
        const id = testWorkflowId('RestoreDatabase');
        const handle = await startAuthorized(stack.client, config, 'RestoreDatabase', id, {});
        await stepReached(handle, 'awaiting approval');
        await page.goto(`${stack.temporal.uiUrl}/namespaces/default/workflows/${id}`);
        // The run's current details (the User Metadata tab): what waits, for which dump, and the command that approves it.
        await page.getByText('User Metadata').first().click();
        const details = page.frameLocator('iframe[title="output"]');
        await details.getByText(`immich-backup restore approve ${id}`).first().waitFor({ timeout: 30_000 });
        const text = await details.locator('body').innerText();
        assert.match(text, /Awaiting approval\./);
        assert.ok(text.includes(backup.file), 'the page names the dump');
        // The Web UI's own "Send a Signal", with the data left empty.
        await page.getByRole('button', { name: 'More Actions' }).filter({ visible: true }).first().click();
        await page.getByText('Send a Signal').filter({ visible: true }).first().click();
        const dialog = page.getByRole('dialog').filter({ visible: true }).first();
        // The UI offers the signals the run registered: `approve` is one (the old approval, now ignored).
        await dialog.getByTestId('signal-select-button').click();
        await dialog.getByRole('option', { name: 'approve', exact: true }).click();
        await dialog.getByTestId('confirm-modal-button').click();
        await waitFor('the signal in the history', async () => ((await handle.fetchHistory()).events!.some((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'approve') ? true : undefined), 30_000, 200);
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal(await handle.query('currentStep'), 'awaiting approval', 'the signal approved nothing');
        assert.equal((await handle.fetchHistory()).events!.filter((e) => e.workflowTaskFailedEventAttributes).length, 0, 'no workflow task failed');
        // The list filters on it, too.
        await page.goto(`${stack.temporal.uiUrl}/namespaces/default/workflows?query=${encodeURIComponent('BackupOutcome="awaiting-approval"')}`);
        await page.getByText(id).first().waitFor({ timeout: 30_000 });
        const approved = await cli(['-c', configFile, 'restore', 'approve', id]);
        assert.equal(approved.exitCode, 0, approved.stderr);
        return (await handle.result()) as RestoreDatabaseReport;
      });
      assert.equal(report.outcome, 'restored');
    } finally {
      await page.close();
    }
  });
});
