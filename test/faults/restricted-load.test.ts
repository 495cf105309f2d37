import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { privateCopyDir } from '../../adapters/dump-store/index.js';
import type { RestoreDrillReport } from '../../workflows/index.js';
import { recordFault } from '../helpers/fault-matrix.js';
import { waitFor } from '../helpers/net.js';
import { fixture } from '../helpers/paths.js';
import { pgBin } from '../helpers/postgres.js';
import { failureType, stepReached, useRestoreStack } from '../helpers/restore-stack.js';
import { runWorkflow } from '../helpers/run-workflow.js';

// The load path interprets nothing: psql loads every dump in restrict mode, so no byte of a dump
// can make the host run a command, whatever our lexer thinks of it, and whoever holds Immich's
// database superuser cannot plant lines that our own dump carries into psql. Where psql predates
// restrict mode (an older container image, stood in for by test/fixtures/old-pg), it runs as the
// container's unprivileged user: whatever it runs, the database server could already run.

const stack = useRestoreStack(200);
const { world, dockerCalls } = stack;

/** A directory anyone can write: psql, as whichever user it runs, leaves its `id -u` there. */
async function markerDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'immich-backup-restricted-'));
  await chmod(dir, 0o777);
  return dir;
}

/**
 * Server-side code switches standard_conforming_strings off while COPY loads (a CHECK constraint
 * calls it), so psql reads `'x\'` as an unfinished literal while pg_dump's reading (and our lexer's)
 * sees it closed: the `\!` line that the lexer counts as string content reaches psql as a command.
 * The setting's name is split in two: nothing in the text names it.
 */
function desyncLines(marker: string, name: string): string[] {
  return [
    `CREATE FUNCTION public.${name}_flip(integer) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SET standard_' || 'conforming_strings = off'; RETURN true; END$$;`,
    `CREATE TABLE public.${name} (a integer CHECK (public.${name}_flip(a)));`,
    `COPY public.${name} (a) FROM stdin;`,
    '1',
    '\\.',
    `COMMENT ON TABLE public.${name} IS 'x\\';`,
    `COMMENT ON TABLE public.${name} IS '`,
    `\\! id -u > ${marker}`,
    "';",
  ];
}

/** An Immich backup (pg_dump of one database) around `lines`. */
const immichBackup = (lines: string[]) =>
  ['--', '-- PostgreSQL database dump', '--', '', 'SET statement_timeout = 0;', "SET client_encoding = 'UTF8';", 'SET standard_conforming_strings = on;', "SELECT pg_catalog.set_config('search_path', '', false);", '', ...lines, '', '--', '-- PostgreSQL database dump complete', '--', ''].join('\n');

const dropTrap = (name: string) => stack.pg.psql(`DROP TABLE IF EXISTS public.${name}; DROP FUNCTION IF EXISTS public.${name}_flip(integer);`, 'immich');

/** Immich's name for a backup: the stamp varies so that each test's file is its own. */
const immichName = (minute: number) => `immich-db-backup-20261126T02${String(minute).padStart(2, '0')}00-v2.3.1-pg15.18.sql.gz`;

describe('a load path that interprets nothing', () => {
  test('the desync is real: through a psql without restrict mode, the planted line runs a shell command', async () => {
    const dir = await markerDir();
    const marker = join(dir, 'raw');
    await stack.pg.psql('CREATE DATABASE desync_control;');
    try {
      await execa(join(pgBin, 'psql'), ['-X', '-q', '-d', 'desync_control'], { env: stack.pg.env, input: immichBackup(desyncLines(marker, 'control')), reject: false });
      assert.ok(existsSync(marker), 'the construction makes a psql that is not restricted run \\!');
    } finally {
      await stack.pg.psql('DROP DATABASE desync_control;');
    }
  });

  test("an Immich backup that desynchronises psql from pg_dump's reading runs nothing: pg_dump's settings are set again after each statement, the planted line loads as data", async () => {
    const w = await world();
    const dir = await markerDir();
    const marker = join(dir, 'pwned');
    const name = immichName(1);
    await writeFile(join(w.immichBackups, name), gzipSync(immichBackup(desyncLines(marker, 'trap_one'))));
    await rm(stack.dockerLog, { force: true });
    try {
      const { error } = await w.restore({ dump: name, approved: true });
      assert.equal(error, undefined, String(error));
      assert.ok(!existsSync(marker), 'the shell command never ran');
      assert.equal(await stack.pg.psql("SELECT obj_description('public.trap_one'::regclass, 'pg_class')", 'immich'), `\\! id -u > ${marker}`, 'the line is the comment pg_dump wrote');
    } finally {
      await dropTrap('trap_one');
    }
    await recordFault("an Immich backup whose server-side code switches standard_conforming_strings off so that a \\! line would reach psql outside a literal", "nothing ran: the loader sets pg_dump's settings again after each statement (the line loads as data) and psql is in restrict mode besides");
  });

  test("an Immich backup that hides \\unrestrict `command` where psql, desynchronised, would read it is refused before anything stops", async () => {
    const w = await world();
    const dir = await markerDir();
    const marker = join(dir, 'unrestrict');
    const name = immichName(3);
    // Server-side code switches the reading of quotes (a DEFAULT runs it), then `'\''` is closed for us and open for psql.
    const lines = [
      "CREATE FUNCTION public.trap_three_flip() RETURNS integer LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SET standard_' || 'conforming_strings = off'; RETURN 1; END$$;",
      'CREATE TABLE public.trap_three (a integer DEFAULT public.trap_three_flip());',
      'INSERT INTO public.trap_three DEFAULT VALUES;',
      "COMMENT ON TABLE public.trap_three IS '\\'';",
      `\\unrestrict \`id -u > ${marker}\``,
      "';",
    ];
    await writeFile(join(w.immichBackups, name), gzipSync(immichBackup(lines)));
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ dump: name, approved: true });
    const failure = failureType(error);
    assert.equal(failure.type, 'UnsafeDumpError', failure.message);
    assert.match(failure.message, /line \d+: \\unrestrict outside pg_dump's own whole line/);
    assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
    assert.ok(!existsSync(marker), 'nothing ran');
    await recordFault("an Immich backup that desynchronises psql and hides \\unrestrict `command` (psql expands its argument even in restrict mode)", "refused before anything stopped: the bytes \\unrestrict pass only as pg_dump's own whole line");
  });

  test("with a container psql that predates restrict mode, the same backup runs nothing either: psql runs as the container's unprivileged user and is never handed \\restrict", async () => {
    const w = await world();
    const dir = await markerDir();
    const marker = join(dir, 'old-psql');
    const name = immichName(2);
    await writeFile(join(w.immichBackups, name), gzipSync(immichBackup(desyncLines(marker, 'trap_two'))));
    await rm(stack.dockerLog, { force: true });
    process.env.FIXTURE_PG_CLIENT_DIR = fixture('old-pg');
    try {
      const { error } = await w.restore({ dump: name, approved: true });
      // The old psql would fail on a \restrict line (it knows none): the load went through without one.
      assert.equal(error, undefined, String(error));
    } finally {
      delete process.env.FIXTURE_PG_CLIENT_DIR;
      await dropTrap('trap_two');
    }
    assert.ok(!existsSync(marker), 'the pins keep an old psql in step too: nothing ran');
    // The probe and the load: psql with ON_ERROR_STOP into Immich's database.
    const loads = (await readFile(stack.dockerLog, 'utf8')).split('\n').filter((l) => /^exec \d+ immich_postgres psql -X -q -v ON_ERROR_STOP=1 -U postgres -d immich\b/.test(l));
    assert.ok(loads.length > 0 && loads.every((l) => l.endsWith(' (as postgres)')), `psql ran as postgres.containerUser: ${loads.join(' | ')}`);
    await recordFault('the same backup, loaded by a container psql that predates restrict mode', "nothing ran (pg_dump's settings pinned); psql ran as postgres.containerUser (docker exec -u), never root, and was handed no \\restrict");
  });

  test("a forged Immich backup cannot make a superuser, an event trigger, a role membership or database settings: refused before anything stops", async () => {
    const w = await world();
    const forged: Array<[string, RegExp]> = [
      ["CREATE ROLE intruder SUPERUSER LOGIN PASSWORD 'x';", /role DDL/],
      ['ALTER ROLE immich SUPERUSER;', /role DDL/],
      ['GRANT pg_execute_server_program TO immich;', /server's files or programs/],
      ['GRANT postgres TO immich;', /role membership/],
      ['CREATE EVENT TRIGGER intruder ON ddl_command_start EXECUTE FUNCTION public.f();', /event trigger/],
      ["ALTER DATABASE immich SET search_path = 'evil';", /ALTER DATABASE/],
      ['CREATE TRUSTED LANGUAGE plintruder HANDLER plpgsql_call_handler;', /CREATE LANGUAGE/],
      ["CREATE SUBSCRIPTION intruder CONNECTION 'host=10.0.0.1' PUBLICATION p;", /SUBSCRIPTION/],
      ['\\connect postgres', /\\connect in a dump of one database/],
    ];
    for (const [i, [line, why]] of forged.entries()) {
      const name = immichName(10 + i);
      await writeFile(join(w.immichBackups, name), gzipSync(immichBackup([line])));
      await rm(stack.dockerLog, { force: true });
      const { error } = await w.restore({ dump: name, approved: true });
      const failure = failureType(error);
      assert.equal(failure.type, 'UnsafeDumpError', `${line}: ${failure.message}`);
      assert.match(failure.message, why, line);
      assert.deepEqual(await dockerCalls(), [], `${line}: Immich was never stopped`);
    }
    assert.equal(await stack.pg.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'intruder' OR (rolname = 'immich' AND rolsuper)"), '0');
    await recordFault("a forged Immich backup with role DDL, a role membership, an event trigger, ALTER DATABASE … SET, CREATE LANGUAGE, a subscription or a \\connect", "refused by the one-database policy before anything stopped (UnsafeDumpError); no role changed");
  });

  test('the loaded bytes are the verified bytes: the private copy is made beside the key, unlinked, and read through its descriptor; nothing of the load lies in backup.dir', async () => {
    const w = await world();
    const good = await w.backup();
    // A user who can write backup.dir and plants the folder the load used to copy into: it no longer matters.
    const elsewhere = await mkdtemp(join(tmpdir(), 'immich-backup-planted-'));
    await chmod(elsewhere, 0o777);
    await symlink(elsewhere, join(w.backupDir, '.loading'));
    process.env.FIXTURE_DOCKER_DELAY = 'load=3';
    try {
      const loading = privateCopyDir(w.config.security.keyFile);
      const { error } = await w.restore({ dump: good.file, approved: true }, async (id) => {
        await stepReached(stack.client.workflow.getHandle(id), 'restoring');
        // The worker runs in this process: its descriptors are this process's own.
        const open = await waitFor('the load to hold its private copy open', async () => {
          for (const fd of await readdir('/proc/self/fd')) {
            const target = await readlink(join('/proc/self/fd', fd)).catch(() => '');
            if (target.startsWith(join(loading, good.file)) && target.endsWith(' (deleted)')) return target;
          }
          return undefined;
        }, 20_000, 50);
        assert.ok(open.startsWith(`${loading}/`), open);
        assert.deepEqual(await readdir(loading), [], 'no name leads to the private copy');
      });
      assert.equal(error, undefined, String(error));
    } finally {
      delete process.env.FIXTURE_DOCKER_DELAY;
    }
    assert.deepEqual(await readdir(elsewhere), [], 'nothing was ever written through the planted link');
    await recordFault('backup.dir/.loading swapped for a link to a folder another user owns', 'never used: the private copy is made beside the key and unlinked at once, and psql is fed from its descriptor');
  });

  test('with postgres.runtime none, psql and pg_dumpall run on the host as postgres.runAs, never root; a host psql that predates restrict mode is refused before anything stops', async () => {
    // Stand-ins that record who ran them, then run the real tools.
    const bin = await mkdtemp(join(tmpdir(), 'immich-backup-hostbin-'));
    const log = join(await markerDir(), 'who');
    for (const tool of ['psql', 'pg_dumpall', 'pg_dump']) {
      await writeFile(join(bin, tool), `#!/bin/sh\necho "$(id -u) ${tool}" >> ${log}\nexec ${join(pgBin, tool)} "$@"\n`, { mode: 0o755 });
    }
    await chmod(bin, 0o755);
    const w = await world({ postgres: { runtime: 'none', binDir: bin } });
    const good = await w.backup();
    const { error } = await w.restore({ dump: good.file, approved: true });
    assert.equal(error, undefined, String(error));
    const nobody = (await execa('id', ['-u', 'nobody'])).stdout.trim();
    const ran = (await readFile(log, 'utf8')).trim().split('\n');
    assert.ok(ran.some((l) => l === `${nobody} pg_dumpall`) && ran.some((l) => l === `${nobody} psql`), ran.join(', '));
    assert.deepEqual(ran.filter((l) => !l.startsWith(`${nobody} `)), [], 'never as root');

    const old = await mkdtemp(join(tmpdir(), 'immich-backup-oldbin-'));
    await chmod(old, 0o755);
    await symlink(fixture('old-pg/psql'), join(old, 'psql'));
    await symlink(join(pgBin, 'pg_dumpall'), join(old, 'pg_dumpall'));
    const w2 = await world({ postgres: { runtime: 'none', binDir: old }, backup: { dir: w.backupDir }, security: { keyFile: w.config.security.keyFile } });
    await rm(stack.dockerLog, { force: true });
    const refused = await w2.restore({ dump: good.file, approved: true });
    const failure = failureType(refused.error);
    assert.equal(failure.type, 'PsqlTooOldError', failure.message);
    assert.match(failure.message, /predates restrict mode.*nothing was changed/);
    assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
    await recordFault('postgres.runtime none with a host psql that predates restrict mode', 'refused before anything stopped (PsqlTooOldError); the current one runs as postgres.runAs, never root');
  });

  test("an Immich backup whose statement ends mid-line cannot slip a statement past the pins: refused before anything stops", async () => {
    const w = await world();
    const name = immichName(4);
    const lines = [
      "CREATE FUNCTION public.trap_four_flip() RETURNS boolean LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SET standard_' || 'conforming_strings = off'; RETURN true; END$$;",
      'CREATE TABLE public.trap_four (x integer CHECK (public.trap_four_flip()));',
      'INSERT INTO public.trap_four VALUES (1); COMMENT ON TABLE public.trap_four IS',
      "'y\\''; CREATE ROLE planted SUPERUSER LOGIN; --';",
    ];
    await writeFile(join(w.immichBackups, name), gzipSync(immichBackup(lines)));
    await rm(stack.dockerLog, { force: true });
    const { error } = await w.restore({ dump: name, approved: true });
    const failure = failureType(error);
    assert.equal(failure.type, 'UnsafeDumpError', failure.message);
    assert.match(failure.message, /more after a statement's `;` on its line/);
    assert.deepEqual(await dockerCalls(), [], 'Immich was never stopped');
    assert.equal(await stack.pg.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'planted'"), '0');
    await recordFault('an Immich backup that ends a statement mid-line and continues past the pins (psql reads the rest of a line with its old settings)', "refused before anything stopped: a statement shares its line with nothing but a comment");
  });

  test("an Immich user's text holding \\unrestrict (COPY data) never makes the backups unrestorable", async () => {
    const w = await world();
    const text = 'my \\unrestrict `id` album';
    await stack.pg.psql(`INSERT INTO users SELECT md5('unrestrict-user')::uuid, 'unrestrict@example.com', E'${text.replace(/\\/g, '\\\\')}', now();`, 'immich');
    try {
      const good = await w.backup();
      const { error } = await w.restore({ dump: good.file, approved: true });
      assert.equal(error, undefined, String(error));
      assert.equal(await stack.pg.psql("SELECT name FROM users WHERE email = 'unrestrict@example.com'", 'immich'), text);
    } finally {
      await stack.pg.psql("DELETE FROM users WHERE email = 'unrestrict@example.com';", 'immich');
    }
  });

  test("the drill loads with ON_ERROR_STOP: a COPY that server-side code makes fail never has psql read its data as SQL (:LAST_ERROR_MESSAGE would hand it \\unrestrict `command`)", async () => {
    const w = await world();
    const dir = await markerDir();
    const marker = join(dir, 'last-error');
    const bs = 'chr(92)';
    const bq = 'chr(96)';
    await stack.pg.psql(
      [
        'CREATE FUNCTION public.lem_check(x integer) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RETURN true; END$$;',
        'CREATE TABLE public.lem_a (x integer CHECK (public.lem_check(x)));',
        'CREATE TABLE public.lem_b (t text);',
        'INSERT INTO public.lem_a VALUES (1);',
        "INSERT INTO public.lem_b VALUES ('SELECT public.lem_boom();'), (':LAST_ERROR_MESSAGE');",
        // While the drill loads lem_a, its CHECK renames lem_b: lem_b's COPY fails, and its data would follow as SQL.
        "CREATE OR REPLACE FUNCTION public.lem_check(x integer) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALTER TABLE public.lem_b RENAME TO lem_b_gone'; RETURN true; END$$;",
        `CREATE FUNCTION public.lem_boom() RETURNS void LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION '%', ${bs} || 'unrestrict ' || ${bq} || 'id -u > ${marker}' || ${bq}; END$$;`,
      ].join('\n'),
      'immich',
    );
    try {
      await w.backup();
      const drill = await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, w.config, 'RestoreDrill');
      assert.ok(!existsSync(marker), 'nothing ran');
      const failure = failureType(drill.error);
      assert.equal(failure.type, 'DrillFailedError', failure.message);
      assert.match(failure.message, /1 statement\(s\) failed while loading, first: relation "public\.lem_b" does not exist/);
    } finally {
      await stack.pg.psql('DROP TABLE IF EXISTS public.lem_a, public.lem_b, public.lem_b_gone; DROP FUNCTION IF EXISTS public.lem_check(integer), public.lem_boom();', 'immich');
    }
    await recordFault("server-side code in our own dump that makes a COPY fail mid-drill, so that psql would read its data as SQL (:LAST_ERROR_MESSAGE expanding to \\unrestrict `command`)", 'the drill loads with ON_ERROR_STOP: it stopped at the failed COPY and failed naming it; nothing ran');
  });

  // Last: the live database keeps what was planted (this file's stack is its own).
  test("lines planted in the live database by whoever holds Immich's database superuser never run from our own dump, even one an old pg_dumpall wrote without \\restrict: the drill and a restore load it as written", async () => {
    const w = await world();
    const dir = await markerDir();
    const marker = join(dir, 'planted');
    // Planted as a database superuser would: a CHECK that flips the setting while COPY runs, then two index comments.
    await stack.pg.psql(
      [
        "CREATE FUNCTION public.planted_flip(integer) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SET standard_' || 'conforming_strings = off'; RETURN true; END$$;",
        'CREATE TABLE public.planted (a integer CHECK (public.planted_flip(a)), b integer);',
        'CREATE INDEX planted_a ON public.planted (a);',
        'CREATE INDEX planted_b ON public.planted (b);',
        "COMMENT ON INDEX public.planted_a IS 'x\\';",
        `COMMENT ON INDEX public.planted_b IS E'\\n\\\\! id -u > ${marker}\\n';`,
      ].join('\n'),
      'immich',
    );
    // Last and alone: the row fires the CHECK, which switches this session's reading of quotes too.
    await stack.pg.psql('INSERT INTO public.planted VALUES (1, 1);', 'immich');
    // The container's pg_dumpall is from before August 2025: it writes no \restrict of its own.
    const oldDump = await mkdtemp(join(tmpdir(), 'immich-backup-old-dumpall-'));
    await chmod(oldDump, 0o755); // the container's user runs it
    await symlink(fixture('old-pg/pg_dumpall'), join(oldDump, 'pg_dumpall'));
    process.env.FIXTURE_PG_CLIENT_DIR = oldDump;
    let dumpFile: string;
    try {
      dumpFile = (await w.backup()).file;
    } finally {
      delete process.env.FIXTURE_PG_CLIENT_DIR;
    }
    const sql = (await execa('gzip', ['-dc', join(w.backupDir, dumpFile)])).stdout;
    assert.doesNotMatch(sql, /^\\restrict /m, 'the dump carries no \\restrict of its own');
    assert.match(sql, new RegExp(`^\\\\! id -u > ${marker}$`, 'm'), 'the planted line is in our own dump');

    const drill = await runWorkflow<RestoreDrillReport>(stack.client, stack.temporal.address, w.config, 'RestoreDrill');
    assert.equal(drill.error, undefined, String(drill.error));
    assert.ok(!existsSync(marker), 'the drill ran nothing');

    const { error } = await w.restore({ dump: 'latest', approved: true });
    assert.equal(error, undefined, String(error));
    assert.ok(!existsSync(marker), 'the restore ran nothing');
    assert.equal(await stack.pg.psql("SELECT obj_description('public.planted_b'::regclass, 'pg_class')", 'immich'), `\\! id -u > ${marker}`, 'the planted line came back as the comment it was');
    await recordFault("lines planted in the live database (a CHECK that flips standard_conforming_strings during COPY, two index comments), dumped by a pg_dumpall that writes no \\restrict", "in our own tagged dump, yet never run: the drill and a restore load it as written, the planted line as data (pg_dump's settings pinned, psql restricted)");
  });
});
