#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1
// Memory of the long-running worker, measured by `npm run bench` (bench/results/): V8's young
// generation at 1 MiB per semi-space (16 by default) in this isolate and the workflow thread's
// saves about 35 MiB of peak RSS, and two malloc arenas instead of one per thread (the SDK's
// native core runs several) about 20 MiB more, at no measured cost in speed.
//
// The program: its global options, how a failure becomes one line and an exit code, and the
// command groups in the order `--help` lists them (each group in commands/).
import { Command, CommanderError, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, UnsafePathError, UsageError } from '../core/errors.js';
import { innermostCause } from '../core/failure.js';
import { redactSecrets } from '../core/redact.js';
import { registerAdopt } from './commands/adopt.js';
import { registerBackup } from './commands/backup.js';
import { registerChecks } from './commands/checks.js';
import { registerConfig } from './commands/config.js';
import { registerDumps } from './commands/dumps.js';
import { registerFollow, registerRerun } from './commands/follow.js';
import { registerKeys } from './commands/keys.js';
import { registerRecover } from './commands/recover.js';
import { registerRestore } from './commands/restore.js';
import { registerSchedules } from './commands/schedules.js';
import { registerService } from './commands/service.js';
import { registerStart } from './commands/start.js';
import { registerStatus } from './commands/status.js';

// A reader that went away (`| head -1`) ends the CLI quietly: what it wanted was printed.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

/** package.json's version: looked up from this file, wherever the build puts it. */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
    if (dirname(dir) === dir) return 'unknown';
  }
}

const program = new Command('immich-backup')
  .description('Durable, verifiable, restorable backups of a self-hosted Immich server, run as Temporal workflows.')
  .version(packageVersion(), '-V, --version', 'print the version')
  .addOption(new Option('-c, --config <file>', 'YAML config file').env('IMMICH_BACKUP_CONFIG'))
  // A usage error is one line and a pointer to the help, not the whole help.
  .showHelpAfterError('(--help shows the usage)')
  // Usage errors reach the catch at the end (exit 2) instead of commander's exit 1; inherited by every subcommand.
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(text) });

// The order here is the order of `--help`.
for (const register of [registerStart, registerService, registerBackup, registerRestore, registerDumps, registerAdopt, registerRecover, registerKeys, registerFollow, registerSchedules, registerChecks, registerStatus, registerRerun, registerConfig]) register(program);

/** --json was asked for: the action's own option, or, for a usage error before any action ran, the command line. */
let jsonOutput: boolean | undefined;
program.hook('preAction', (_program, action) => {
  jsonOutput = action.opts<{ json?: boolean }>().json === true;
});

try {
  await program.parseAsync();
} catch (err) {
  const usage = err instanceof CommanderError;
  if (usage && err.exitCode === 0) process.exit(0); // --help, --version
  // One line, then a non-zero exit: 2 for a usage error (commander printed it) or a config the operator must fix, 1 for everything else.
  const message = redactSecrets((err as Error).message.replace(usage ? /^error: / : /^/, '').split('\n')[0] ?? '');
  if (!usage) process.stderr.write(`error: ${message}\n`);
  if (jsonOutput ?? process.argv.includes('--json')) {
    const cause = innermostCause(err) as Error & { type?: string };
    process.stdout.write(`${JSON.stringify({ ok: false, error: { type: usage ? 'UsageError' : (cause.type ?? cause.name), message } })}\n`);
  }
  process.exit(usage || err instanceof ConfigError || err instanceof UnsafePathError || err instanceof UsageError ? 2 : 1);
}
