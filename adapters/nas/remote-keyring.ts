import type { Config } from '../../config/config.js';
import { ENVELOPE_NAME, MAX_ENVELOPES, NAS_KEYRING_DIR } from '../../core/dump-names.js';
import { CommandFailedError } from '../../core/errors.js';
import { runRemote } from './ssh.js';

// The wrapped keyrings on the NAS (`<offsite.remoteDir>/keyring/keyring-<id>.json`), read for a
// recovery: what they hold opens only with the recovery code (adapters/dump-store/recovery.ts).

/** An envelope is a few hundred bytes per key: anything much larger is not one. */
const ENVELOPE_MAX_BYTES = 1 << 20;

/** Every keyring envelope on the NAS, by name; none when the folder does not exist. Read only. */
export async function remoteEnvelopes(offsite: Config['offsite']): Promise<Array<{ name: string; text: string }>> {
  const dir = `${offsite.remoteDir}/${NAS_KEYRING_DIR}`;
  let listing: string;
  try {
    listing = (await runRemote(offsite, ['ls', '-1A', '--', dir], { label: 'ssh ls' })).stdout;
  } catch (err) {
    if (err instanceof CommandFailedError && /No such file or directory/.test(err.message)) return [];
    throw err;
  }
  const names = listing.split('\n').map((l) => l.trim()).filter((n) => ENVELOPE_NAME.test(n)).sort().slice(0, MAX_ENVELOPES);
  const envelopes: Array<{ name: string; text: string }> = [];
  for (const name of names) {
    // head -c: a file planted there as a huge one is never read whole.
    const { stdout } = await runRemote(offsite, ['head', '-c', String(ENVELOPE_MAX_BYTES), '--', `${dir}/${name}`], { label: `ssh head ${name}` });
    envelopes.push({ name, text: stdout });
  }
  return envelopes;
}
