import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { openDumpStore } from '../../adapters/dump-store/index.js';
import { recoverKeyring } from '../../adapters/dump-store/recovery.js';
import { restoreFromNasCopy } from '../../adapters/library-offsite/library-copy.js';
import { remoteEnvelopes } from '../../adapters/nas/remote-keyring.js';
import { nasLabel } from '../../adapters/nas/ssh.js';
import { DumpNotFoundError, RecoveryCodeError } from '../../core/errors.js';
import { innermostCause } from '../../core/failure.js';
import type { RestoreDatabaseReport, RestoreLibraryReport } from '../../workflows/index.js';
import { configFileOf, configOf } from '../context.js';
import { readAnswer } from '../prompt.js';
import { printReport } from '../report-text.js';
import { runAndFollow } from '../run-and-follow.js';

// The day the host is gone: a new host with only the config, the recovery code, the NAS and the
// drive. The keys come back from the NAS (opened with the code); then the newest NAS copy that
// verifies is restored, and the library from the drive, each as the usual restore (plan, approval,
// restore point, health check). Nothing earlier on this host is needed: no key, no staging dir, no
// Temporal history.

/** Failures of a NAS copy found before anything was changed: the next older copy is tried. */
const COPY_REFUSED = new Set(['UnauthenticatedDumpError', 'ChecksumMismatchError', 'DumpCorruptError', 'DumpIncompleteError', 'UnsafeDumpError', 'NotOurDumpError']);

const say = (line: string) => process.stderr.write(`${line}\n`);

export function registerRecover(program: Command): void {
  program
    .command('recover')
    .description('On a new host: get every key back from the NAS with the recovery code, then restore the newest NAS copy that verifies and the library from the drive (each with its plan, approval and health check)')
    .option('--code-file <file>', 'read the recovery code from this file (otherwise it is asked for, or read from stdin)')
    .option('--keys-only', 'only get the keys back; restore nothing')
    .addOption(new Option('--library <from>', 'where the library comes back from: the drive (the USB mirror), the NAS copy (library.offsite: into an empty library.source), or none').choices(['drive', 'nas', 'none']).default('drive'))
    .option('--accept-missing-keys', 'go on although NAS copies name keys no keyring there holds (a newer keyring missing): restore the newest copy the recovered keys verify')
    .option('--yes', 'approve each restore now instead of asking')
    .option('--json', 'print the reports as JSON')
    .action(async (opts: { codeFile?: string; keysOnly?: boolean; library: 'drive' | 'nas' | 'none'; acceptMissingKeys?: boolean; yes?: boolean; json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const code = opts.codeFile !== undefined ? (await readFile(opts.codeFile, 'utf8')).split('\n')[0]!.trim() : await readAnswer('recovery code: ');
      if (!code) throw new RecoveryCodeError('no recovery code given: nothing was changed');
      say(`reading the keyrings on the NAS ${nasLabel(config.offsite)} …`);
      const envelopes = await remoteEnvelopes(config.offsite);
      say(`opening ${envelopes.length} keyring(s) with the recovery code (scrypt: a second or two each) …`);
      const recovered = await recoverKeyring(config.security.keyFile, envelopes, code);
      const ids = recovered.ring.all.map((k) => `${k.id}${k.id === recovered.ring.current.id ? ' (current)' : ' (retired)'}`);
      say(`recovered ${recovered.ring.all.length - recovered.kept.length} key(s) from ${recovered.opened.join(', ')}: ${ids.join(', ')}; written to ${config.security.keyFile} and beside it`);
      for (const r of recovered.refused) say(`  not opened: ${r.reason}`);
      if (recovered.kept.length) say(`  this host's own earlier key(s) kept, retired: ${recovered.kept.join(', ')}`);
      if (opts.keysOnly) return void process.stdout.write(`keys recovered: ${ids.join(', ')}\n`);

      // What the NAS holds, as `dumps` shows it, now checked with the recovered keys: newest first.
      const catalog = await openDumpStore(config).list();
      const copies = catalog.entries.filter((e) => e.origin === 'offsite');
      for (const p of catalog.problems) say(`! ${p}`);
      say(copies.length ? `the NAS holds ${copies.length} dump(s):` : `the NAS ${nasLabel(config.offsite)} holds no dump`);
      for (const c of copies) say(`  ${c.file}: ${c.verified}`);
      // Copies under keys no envelope held: a newer keyring may have been deleted or hidden on the NAS
      // (an older one replayed), and restoring "the newest that verifies" would quietly go back in time.
      const held = new Set(recovered.ring.all.map((k) => k.id));
      const missing = [...new Set(copies.map((c) => c.keyId).filter((id): id is string => !!id && !held.has(id)))];
      if (missing.length && !opts.acceptMissingKeys) {
        throw new RecoveryCodeError(`the NAS holds copies made with key(s) ${missing.join(', ')}, which no keyring the code opened holds: a newer keyring may be missing there (deleted, or an older one put back), or they are another host's; the keys are recovered, nothing else was changed; look at the NAS, then run again with --accept-missing-keys to restore the newest copy the recovered keys verify`);
      }
      // Never one this host made itself before the recovery (its own key, kept retired): a nightly
      // backup of the new host's empty database must not win as "the newest".
      const candidates = copies.filter((c) => c.restore.startsWith('restore db') && !(c.keyId && recovered.kept.includes(c.keyId)));
      if (!candidates.length) throw new DumpNotFoundError(`no NAS copy this host can restore with the recovered keys (see above); the keys are recovered: nothing else was changed`);

      let restored: { file: string; report: RestoreDatabaseReport } | undefined;
      for (const copy of candidates) {
        say(`restoring ${copy.file} from the NAS: fetch, decrypt, verify in full; then its plan, and the approval${opts.yes ? ' (given: --yes)' : ''}`);
        try {
          const report = (await runAndFollow(config, configFileOf(cmd), 'RestoreDatabase', { dump: copy.file, from: 'offsite', dryRun: false, approved: opts.yes === true })) as RestoreDatabaseReport;
          printReport('RestoreDatabase', report, opts.json);
          if (report.outcome !== 'restored') return void say(`the database was not restored (${report.outcome}): the library was left as it is`);
          restored = { file: copy.file, report };
          break;
        } catch (err) {
          const cause = innermostCause(err) as Error & { type?: string };
          // Refused while it was fetched and checked, before anything was stopped or changed (said so):
          // the next older copy may be good. A failure after that (a load rolled back) ends here.
          if (!COPY_REFUSED.has(cause.type ?? cause.name) || !/nothing (was|has been) changed/.test(cause.message)) throw err;
          say(`${copy.file} was refused before anything changed (${cause.message.split('\n')[0]}); trying the next older copy`);
        }
      }
      if (!restored) throw new DumpNotFoundError('no NAS copy passed verification (each refused above, before anything changed); the keys are recovered: nothing else was changed');

      let library: RestoreLibraryReport | undefined;
      let fromNas: { snapshot: string; files: number } | undefined;
      if (opts.library === 'nas') {
        // Into an empty library only (a new host's): restic restores and verifies each file; nothing there is overwritten.
        say(`restoring the library from its NAS copy (restic, newest snapshot) into ${config.library.source}, which must be empty; restic reads every file back (--verify) …`);
        fromNas = await restoreFromNasCopy(config, config.library.source);
        say(`restored ${fromNas.files} file(s) from snapshot ${fromNas.snapshot}`);
      }
      if (opts.library === 'drive') {
        say(`restoring the library from the drive (${config.library.destination}): its plan, and the approval${opts.yes ? ' (given: --yes)' : ''}`);
        library = (await runAndFollow(config, configFileOf(cmd), 'RestoreLibrary', { dryRun: false, delete: false, approved: opts.yes === true })) as RestoreLibraryReport;
        printReport('RestoreLibrary', library, opts.json);
      }
      const db = `database from ${restored.file} (sha256 ${restored.report.sha256}, from the NAS)`;
      const lib = fromNas
        ? `library from the NAS copy, snapshot ${fromNas.snapshot} (${fromNas.files} file(s))`
        : library
          ? library.outcome === 'restored' ? `library from the drive ${config.library.destination} (${library.filesTransferred} file(s) copied back)` : `library NOT restored (${library.outcome})`
          : 'library left as it is (--library none)';
      process.stdout.write(`recovered: ${db}; ${lib}\n`);
    });
}
