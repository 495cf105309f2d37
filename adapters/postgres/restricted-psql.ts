import { randomBytes } from 'node:crypto';
import { CommandFailedError, UnsafeDumpError } from '../../core/errors.js';
import { probeCommand } from '../commands/run-command.js';
import type { Framing } from './psql-lexer.js';

// psql loads every dump in restrict mode (psql 13.22, 14.19, 15.14, 16.10, 17.6, 18 and later: the
// fix for CVE-2025-8714). The first line psql reads is `\restrict KEY`, KEY made here for this load
// alone: never logged, never in workflow history, never on disk. From then on psql refuses every
// meta-command but `\unrestrict KEY`, so no byte of the dump can make psql run a shell command,
// write a file or open another connection, however the lexer in front of it reads the bytes. The
// dump's own `\restrict`/`\unrestrict` lines are dropped (psql-lexer.ts); the loader lifts its
// restriction only around a `\connect` or `\encoding` line the dump's policy allowed, and sets a
// new key right after it. Where psql and our lexer disagree about a line (server-side code can
// switch standard_conforming_strings off mid-load), our framing lines land inside a literal and
// the restriction simply stays on.

/** A key psql accepts (alphanumeric), 192 bits: no dump written before this load can contain it. */
const newKey = () => randomBytes(24).toString('hex');

/** The framing for one load: `head` is psql's first input; `around` frames an allowed meta-command line. */
export function restrictFraming(): Framing & { head: string } {
  let key = newKey();
  return {
    head: `\\restrict ${key}\n`,
    around(line: string) {
      const lifted = key;
      key = newKey();
      return `\\unrestrict ${lifted}\n${line}\n\\restrict ${key}\n`;
    },
  };
}

export interface PsqlCommand {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * Whether this psql (exactly the command the load will run, inside a container or as another user)
 * knows `\restrict`: asked by running it, since the version it reports says nothing of a backport.
 * A psql that cannot connect is a failure, not an answer.
 */
export async function supportsRestrict(psql: PsqlCommand): Promise<boolean> {
  const probe = await probeCommand(psql.file, [...psql.args, '-v', 'ON_ERROR_STOP=1', '-c', '\\restrict probe', '-c', '\\unrestrict probe'], { label: 'psql (restrict mode probe)', env: psql.env });
  if (probe.exitCode === 0) return true;
  if (/invalid command \\restrict/.test(probe.stderr)) return false;
  throw new CommandFailedError(`psql could not be asked whether it loads in restrict mode (exit ${String(probe.exitCode)}: ${probe.stderr.trim().split('\n').at(-1) ?? ''}); nothing was loaded`);
}

/** psql's words when restrict mode refused a meta-command. */
export const RESTRICT_REFUSED = /backslash commands are restricted/;

/** psql's errors without any restrict key: a framing line read as SQL (a desynchronised load) comes back in the server's error. */
export const withoutKeys = (text: string) => text.replace(/[0-9a-f]{48}/g, '[restrict key]');

/** A psql failure that restrict mode caused, as what it means for the operator; anything else without its keys. */
export function restrictRefusal(err: unknown, file: string): unknown {
  const message = err instanceof Error ? err.message : String(err);
  if (!RESTRICT_REFUSED.test(message)) {
    if (err instanceof Error) err.message = withoutKeys(err.message);
    return err;
  }
  return new UnsafeDumpError(
    `dump ${file} holds a line psql would have run as a meta-command (a shell command, a file write or another connection): psql refused it in restrict mode and the load stopped there. ` +
      "In one of our own dumps such a line comes from the live database: someone who holds Immich's database superuser stored it there. Restore an older dump, then find and remove what was planted",
  );
}
