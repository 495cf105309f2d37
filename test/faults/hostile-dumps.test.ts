import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { WorkflowFailedError } from '@temporalio/client';
import { dumpFileName, formatStamp } from '../../core/dump-names.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { hostileContext, hostileDump, HOSTILE_SNIPPETS } from '../helpers/hostile-sql.js';
import { failureType, useRestoreStack } from '../helpers/restore-stack.js';
import { testWorkflowId, withWorker } from '../helpers/run-workflow.js';
import { startTokenFor, tagPlanted } from '../helpers/trust.js';

// Finding 2 end to end: every hostile line of the corpus (each proven to do harm through a raw
// psql in hostile-sql.test.ts) pushed through the real RestoreDatabase (as one of Immich's own,
// unauthenticated backups) and the real RestoreDrill (as a dump of ours, tagged with the key, so
// that only the strict filter stands in the way). None runs: the restore refuses each before
// anything stops; the drill's load refuses it before psql reads the line, and removes its throwaway.

const stack = useRestoreStack(50);
const { world, dockerCalls } = stack;

describe('hostile dumps through the workflows', () => {
  test('finding 2: each hostile line is refused by a restore (Immich\'s own backup) before anything stops, and by the drill (a tagged dump of ours) before psql reads it; none runs', async () => {
    const w = await world();
    const ctx = await hostileContext((sql) => stack.pg.psql(sql));
    const queue = w.config.temporal.taskQueue;
    const refusedRestore: string[] = [];
    const refusedDrill: string[] = [];
    try {
      await withWorker(stack.temporal.address, w.config, async () => {
        for (const [i, snippet] of HOSTILE_SNIPPETS.entries()) {
          const text = hostileDump(snippet.sql(ctx));
          // As Immich's own backup: pg_dump's completion marker, in immich.backupsDir.
          const immichName = `immich-db-backup-2026112${i % 10}T0${i % 10}${String(i).padStart(2, '0')}00-v2.3.1-pg15.18.sql.gz`;
          await writeFile(join(w.immichBackups, immichName), gzipSync(text.replace('PostgreSQL database cluster dump complete', 'PostgreSQL database dump complete')));
          await rm(stack.dockerLog, { force: true });
          const id = testWorkflowId('RestoreDatabase');
          const restore = await stack.client.workflow
            .execute('RestoreDatabase', { taskQueue: queue, workflowId: id, args: [{ dump: immichName, approved: true, authorization: await startTokenFor(w.config, 'RestoreDatabase', id, { dump: immichName, approved: true }) }] })
            .then(() => undefined, (err: unknown) => err);
          assert.ok(restore instanceof WorkflowFailedError, `${snippet.name}: the restore must fail`);
          const r = failureType(restore);
          assert.equal(r.type, 'UnsafeDumpError', `${snippet.name}: ${r.message}`);
          assert.deepEqual(await dockerCalls(), [], `${snippet.name}: Immich was never stopped`);
          refusedRestore.push(snippet.name);
          await rm(join(w.immichBackups, immichName));

          // As a dump of ours, tagged with the key and with row counts: the newest, so the drill takes it.
          const ours = dumpFileName(formatStamp(new Date(Date.now() - (HOSTILE_SNIPPETS.length - i) * 60_000)), 'gzip');
          const body = gzipSync(text);
          const sha256 = createHash('sha256').update(body).digest('hex');
          await writeFile(join(w.backupDir, ours), body, { mode: 0o600 });
          await writeFile(join(w.backupDir, `${ours}.sha256`), `${sha256}  ${ours}\n`, { mode: 0o600 });
          const rows = JSON.stringify({ file: ours, recordedAt: new Date().toISOString(), tables: { 'postgres: public.hostile_notes': 0 } });
          await writeFile(join(w.backupDir, `${ours}.rows.json`), rows, { mode: 0o600 });
          await tagPlanted(w.config, w.backupDir, ours, sha256, rows);
          const drill = await stack.client.workflow.execute('RestoreDrill', { taskQueue: queue, workflowId: testWorkflowId('RestoreDrill'), args: [{}] }).then(() => undefined, (err: unknown) => err);
          assert.ok(drill instanceof WorkflowFailedError, `${snippet.name}: the drill must fail`);
          const d = failureType(drill);
          assert.equal(d.type, 'UnsafeDumpError', `${snippet.name}: ${d.message}`);
          assert.match(d.message, new RegExp(`^dump ${ours} line \\d+: `));
          refusedDrill.push(snippet.name);
          for (const f of [ours, `${ours}.sha256`, `${ours}.rows.json`, `${ours}.hmac`]) await rm(join(w.backupDir, f), { force: true });

          assert.equal(await snippet.ran(ctx), false, `${snippet.name} ran`);
          assert.equal(ctx.fakeServerConnected(), false, `${snippet.name}: something connected to the fake server`);
        }
      });
    } finally {
      await ctx.close();
    }
    assert.equal(refusedRestore.length, HOSTILE_SNIPPETS.length);
    await recordFault(`${HOSTILE_SNIPPETS.length} hostile dump lines (\\!, \\o |, \\g |, backquotes in \\connect/\\restrict, conninfo \\connect, fake COPY in a literal or comment, CRLF COPY framing, COPY … PROGRAM, DO, ALTER SYSTEM, pg_read_file, …)`, `each refused (UnsafeDumpError) by RestoreDatabase as Immich's own backup before anything stopped, and by RestoreDrill as a tagged dump in its load, before psql read the line (the throwaway removed); none ran`);
  });
});
