import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { CommandFailedError, UnauthenticatedDumpError } from '../../core/errors.js';
import { formatBytes } from '../../core/format.js';
import { awaitCommand, startCommand, withHeartbeats } from '../commands/run-command.js';

// What leaves the host is encrypted with age (age-encryption.org, the Debian binary: X25519 and
// ChaCha20-Poly1305 in 64 KiB chunks, each authenticated), never with a cipher of our own. age
// streams file to file; its output passes through this process only to be hashed on its way to
// disk (a chunk at a time), so the sha256 of what was written costs no second read.

/**
 * Runs `age ARGS INPUT` into `output` (created afresh, owner-only, never through a link) and
 * returns the sha256 and size of what it wrote. On failure the output is removed.
 */
async function ageToFile(args: readonly string[], input: string, output: string, step: string): Promise<{ sha256: string; bytes: number }> {
  const out = await open(output, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    const child = startCommand('age', [...args, input], { label: 'age', stdout: 'stream' });
    const write = async () => {
      for await (const chunk of child.stdout! as AsyncIterable<Buffer>) {
        hash.update(chunk);
        bytes += chunk.length;
        await out.write(chunk);
      }
    };
    const written = write();
    // age's own failure (its stderr) says more than the stream that ended with it.
    const [wrote, ran] = await withHeartbeats(Promise.allSettled([written, awaitCommand(child, 'age')]), () => ({ step, written: formatBytes(bytes) }));
    if (ran.status === 'rejected') throw ran.reason;
    if (wrote.status === 'rejected') throw wrote.reason;
    await out.sync();
    return { sha256: hash.digest('hex'), bytes };
  } catch (err) {
    await rm(output, { force: true });
    throw err;
  } finally {
    await out.close();
  }
}

/** `input` encrypted to an age recipient (age1…) into `output`; the ciphertext's sha256 and size. */
export function encryptFile(recipient: string, input: string, output: string, step: string): Promise<{ sha256: string; bytes: number }> {
  return ageToFile(['-e', '-r', recipient], input, output, step);
}

/**
 * `input` decrypted with the identities in `identitiesFile` (every key of the keyring) into
 * `output`; the plaintext's sha256 and size. A file none of them opens is an
 * UnauthenticatedDumpError that says so with `what` (whose key it needs, what to do); one that
 * does not decrypt (altered: age checks every chunk) an UnauthenticatedDumpError too.
 */
export async function decryptFile(identitiesFile: string, input: string, output: string, step: string, what: { name: string; noKey: string; consequence: string }): Promise<{ sha256: string; bytes: number }> {
  try {
    return await ageToFile(['-d', '-i', identitiesFile], input, output, step);
  } catch (err) {
    if (!(err instanceof CommandFailedError)) throw err;
    if (/no identity matched/i.test(err.message)) throw new UnauthenticatedDumpError(`${what.name} is encrypted to a key this host does not hold: ${what.noKey}; ${what.consequence}`);
    throw new UnauthenticatedDumpError(`${what.name} does not decrypt (${err.message}): altered or damaged where it was kept; ${what.consequence}`);
  }
}
