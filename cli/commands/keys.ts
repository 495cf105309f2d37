import type { Command } from 'commander';
import { openDumpStore } from '../../adapters/dump-store/index.js';
import { changeRecoveryCode, confirmRecoveryCode, ensureRecovery, recoveryStatus, rotateKeys } from '../../adapters/dump-store/recovery.js';
import { remoteDumpTags } from '../../adapters/nas/remote-tags.js';
import { nasLabel } from '../../adapters/nas/ssh.js';
import { NasUnreachableError } from '../../core/errors.js';
import { configOf } from '../context.js';
import { readAnswer } from '../prompt.js';

// The operator's side of the keys: the recovery code (shown until typed back), the keys the host
// holds, and a rotation after a suspected leak.

const KEEP_IT = 'write it down (or print it) and keep it away from this host and the NAS: with it and the NAS, a new host gets every key back (immich-backup recover)';

function showCode(code: string): void {
  process.stdout.write(`RECOVERY CODE\n\n    ${code}\n\n${KEEP_IT}.\nIt is shown until you type it back: immich-backup recovery-code confirm\n`);
}

/** Asks for the code on a terminal (Enter: later), or reads it from stdin; then confirms it. */
async function confirmFrom(keyFile: string, question: string, laterHint: boolean): Promise<void> {
  const typed = await readAnswer(question);
  if (!typed) {
    if (laterHint) process.stdout.write('not confirmed yet: `immich-backup status` says so until you do (immich-backup recovery-code confirm)\n');
    return;
  }
  await confirmRecoveryCode(keyFile, typed);
  process.stdout.write('recovery code confirmed: it is no longer kept on this host; keep your copy safe\n');
}

export function registerKeys(program: Command): void {
  const code = program
    .command('recovery-code')
    .description('Show the recovery code until it is confirmed (it opens the keys kept on the NAS; a new host needs it), confirm it, or change it')
    .action(async (_opts, cmd: Command) => {
      const keyFile = configOf(cmd).security.keyFile;
      const status = await ensureRecovery(keyFile);
      if (status.confirmed) {
        process.stdout.write(`the recovery code is confirmed (made ${status.created}) and not kept on this host; lost it? immich-backup recovery-code change makes a new one\n`);
        return;
      }
      showCode(status.code ?? '(the code file is gone: make a new one with immich-backup recovery-code change)');
      if (status.code && process.stdin.isTTY) await confirmFrom(keyFile, 'type it back now to confirm it (Enter: later): ', true);
    });

  code
    .command('confirm')
    .description('Type the recovery code back (or give it on stdin): from then on it is kept only by you')
    .action(async (_opts, cmd: Command) => {
      const keyFile = configOf(cmd).security.keyFile;
      if ((await recoveryStatus(keyFile))?.confirmed) return void process.stdout.write('the recovery code is already confirmed\n');
      await confirmFrom(keyFile, 'recovery code: ', false);
    });

  code
    .command('change')
    .description('Make a new recovery code: the keys are wrapped under it (the backups are not re-encrypted); the NAS gets it at the next OffsiteSync')
    .action(async (_opts, cmd: Command) => {
      const keyFile = configOf(cmd).security.keyFile;
      await ensureRecovery(keyFile);
      const next = await changeRecoveryCode(keyFile);
      process.stdout.write('a new recovery code; the old one opens the keyring on the NAS only until the next OffsiteSync replaces it there\n\n');
      showCode(next);
      if (process.stdin.isTTY) await confirmFrom(keyFile, 'type it back now to confirm it (Enter: later): ', true);
    });

  const keys = program
    .command('keys')
    .description('The keys this host holds (fingerprints, current or retired) and whether the recovery code is confirmed')
    .option('--json', 'print as JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const ring = await openDumpStore(config).keyring();
      const recovery = await recoveryStatus(config.security.keyFile);
      const list = ring.file.keys.map((k) => ({ id: k.id, current: k.id === ring.current.id, created: k.created, ...(k.retired ? { retired: k.retired } : {}), recipient: k.ageRecipient }));
      if (opts.json) return void process.stdout.write(JSON.stringify({ keys: list, recoveryCode: recovery ? (recovery.confirmed ? 'confirmed' : 'not confirmed') : 'none' }, null, 2) + '\n');
      for (const k of list) process.stdout.write(`key ${k.id}  ${k.current ? 'current' : `retired ${k.retired}`}  made ${k.created}  encrypts to ${k.recipient}\n`);
      process.stdout.write(`recovery code: ${recovery ? (recovery.confirmed ? 'confirmed' : 'NOT CONFIRMED (immich-backup recovery-code)') : 'none yet (the worker makes one on its first start)'}\n`);
    });

  keys
    .command('rotate')
    .description('Make a new key and recovery code (a suspected leak): new dumps are tagged and encrypted with the new key; the old one is retired and vouches only for the dumps it had made')
    .option('--without-nas', 'the NAS does not answer: rotate anyway; the old key then vouches only for the dumps here (a NAS copy is taken back one by one with adopt --from offsite)')
    .action(async (opts: { withoutNas?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const store = openDumpStore(config);
      await store.keyring();
      // What the old key vouched for, here and on the NAS: after the rotation it vouches for these and nothing else.
      process.stderr.write(`listing the dumps the current key vouches for, here${opts.withoutNas ? '' : ` and on the NAS ${nasLabel(config.offsite)}`} …\n`);
      const remote = opts.withoutNas
        ? []
        : await remoteDumpTags(config.offsite).catch((err: Error) => {
            throw new NasUnreachableError(`cannot list the NAS copies the current key vouches for (${err.message.split('\n')[0]}): nothing was changed; rotate when the NAS answers, or with --without-nas`);
          });
      const vouches = [...new Set([...(await store.localDumpTags()), ...remote])];
      const { retired, current, code } = await rotateKeys(config.security.keyFile, vouches);
      process.stdout.write(
        `made key ${current}: from now on dumps are tagged and NAS copies encrypted with it\n` +
          `retired key ${retired}: it still verifies and decrypts the ${vouches.length} dump(s) it had made, never anything else\n` +
          'a running worker picks the new key up by itself; the NAS gets the new keyring at the next OffsiteSync once the new code is confirmed\n\n' +
          'the recovery code changed too (whoever read the key folder could open the keyring with the old one):\n\n',
      );
      showCode(code);
      if (process.stdin.isTTY) await confirmFrom(config.security.keyFile, 'type it back now to confirm it (Enter: later): ', true);
    });
}
