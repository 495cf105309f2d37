import type { Config } from '../../config/config.js';
import { remoteListing } from './remote-dumps.js';
import { runRemote } from './ssh.js';

/**
 * Every dump tag (`dump <hex>` in a `.hmac` file) in offsite.remoteDir: what a key vouched for on
 * the NAS when it is retired. A NAS that does not answer throws (the listing first); grep's exit 1
 * (no tag at all) is an answer.
 */
export async function remoteDumpTags(offsite: Config['offsite']): Promise<string[]> {
  if (!(await remoteListing(offsite, '-1A')).trim()) return [];
  const { stdout } = await runRemote(offsite, ['grep', '-h', '-r', '--include=*.hmac', '-E', '^dump [0-9a-f]{64}$', '--', offsite.remoteDir], { label: 'ssh grep', reject: false });
  return stdout.split('\n').map((l) => /^dump ([0-9a-f]{64})$/.exec(l)?.[1]).filter((h): h is string => !!h);
}
