// `node dist/bench/encryption.js [--gib 1] [--runs 3]`: what encrypting the NAS copy adds to a
// backup's wall time, side by side in one run. The backup is the dump being written (dump-like SQL
// generated as a stream, through igzip -1, the default compressor, into a file) and its upload to
// a NAS (a real sshd on loopback, rsync over ssh, the sha256 checked there). Without encryption:
// the upload as it was before (the dump itself). With encryption: OffsiteSync's own uploadDump
// (age to the keyring's recipient, hashed while written, then uploaded and checked). The worker's
// peak RSS is read before and after the encrypted uploads: it does not grow with the dump.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { createOffsiteActivities } from '../activities/offsite.js';
import { runRsync } from '../adapters/commands/rsync.js';
import { openKeyring } from '../adapters/dump-store/index.js';
import { tagDump } from '../adapters/dump-store/tags.js';
import { sha256OfFile } from '../adapters/files/checksums.js';
import { runRemote, sshCommandString, sshTarget } from '../adapters/nas/ssh.js';
import { parseConfig } from '../config/config.js';
import { createLogger } from '../config/logger.js';
import { startSshd } from '../test/helpers/sshd.js';
import { rawTestConfig, tempDir } from '../test/helpers/setup.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, runs: { type: 'string', default: '3' } } });
const sqlBytes = Number(values.gib) * 1024 ** 3;
const runs = Number(values.runs);

/** pg_dumpall-shaped SQL: COPY blocks of rows with uuids, paths, timestamps and hex (compresses about as a real Immich dump does). */
function* dumpLikeSql(bytes: number): Generator<Buffer> {
  yield Buffer.from('--\n-- PostgreSQL database cluster dump\n--\n\\connect immich\nCOPY public.assets (id, "ownerId", "originalPath", checksum, "fileCreatedAt") FROM stdin;\n');
  let written = 0;
  for (let n = 0; written < bytes; n++) {
    const rows: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const id = randomBytes(16).toString('hex');
      rows.push(`${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20)}\t5f0c8a2e-0000-4000-8000-00000000000${n % 10}\t/usr/src/app/upload/library/admin/${2000 + (i % 25)}/${String(i % 12).padStart(2, '0')}/IMG_${n}_${i}.jpg\t\\\\x${randomBytes(20).toString('hex')}\t2024-0${1 + (i % 9)}-1${i % 10} 12:${String(i % 60).padStart(2, '0')}:00+00\n`);
    }
    const chunk = Buffer.from(rows.join(''));
    written += chunk.length;
    yield chunk;
  }
  yield Buffer.from('\\.\n\n--\n-- PostgreSQL database cluster dump complete\n--\n\n');
}

const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const maxRssMiB = () => process.resourceUsage().maxRSS / 1024;

const sshd = await startSshd();
const root = await tempDir('bench-encryption');
const backupDir = join(root, 'dumps');
const config = parseConfig(rawTestConfig({ backupDir, extra: { offsite: { ...sshd.offsite, remoteDir: join(root, 'nas') }, log: { level: 'fatal' } } }));
const offsite = config.offsite;
try {
  await execa('mkdir', ['-p', backupDir, offsite.remoteDir]);
  const ring = await openKeyring(config.security.keyFile, { create: true });

  // The dump being written: generated SQL through igzip -1 into the staging dir, hashed after (as the dump activity's test pass does).
  const file = 'immich_20261201_030000.sql.gz';
  const path = join(backupDir, file);
  let start = process.hrtime.bigint();
  const igzip = execa('igzip', ['-c', '-1'], { stdin: 'pipe', stdout: 'pipe', buffer: false });
  const out = pipeline(igzip.stdout!, createWriteStream(path, { mode: 0o600 }));
  await pipeline(Readable.from(dumpLikeSql(sqlBytes)), igzip.stdin!);
  await Promise.all([igzip, out]);
  const sha256 = await sha256OfFile(path);
  const dumpSeconds = seconds(start);
  const dumpBytes = (await stat(path)).size;
  await writeFile(`${path}.sha256`, `${sha256}  ${file}\n`, { mode: 0o600 });
  await tagDump(ring, backupDir, file, sha256);

  /** The upload as it was before encryption: the dump checked, rsync'ed under a temporary name, its sha256 checked on the NAS, renamed. */
  const plainUpload = async () => {
    const t = process.hrtime.bigint();
    if ((await sha256OfFile(path)) !== sha256) throw new Error('changed');
    const partial = `${offsite.remoteDir}/.${file}.partial`;
    await runRsync(['-t', '--chmod=F600', '--partial-dir=.rsync-partial', '-e', sshCommandString(offsite), path, `${sshTarget(offsite)}:${partial}`], { step: 'upload' });
    const { stdout } = await runRemote(offsite, ['sha256sum', '--', partial], { label: 'ssh sha256sum' });
    if (stdout.split(' ')[0] !== sha256) throw new Error('mismatch');
    // Its .sha256 and tag went along, each under a temporary name, then all three renamed.
    for (const beside of [`${file}.hmac`, `${file}.sha256`]) {
      await runRsync(['-t', '--chmod=F600', '-e', sshCommandString(offsite), join(backupDir, beside), `${sshTarget(offsite)}:${offsite.remoteDir}/.${beside}.partial`], { step: 'upload' });
    }
    for (const name of [file, `${file}.hmac`, `${file}.sha256`]) await runRemote(offsite, ['mv', '-f', '--', `${offsite.remoteDir}/.${name}.partial`, `${offsite.remoteDir}/${name}`], { label: 'ssh mv' });
    const took = seconds(t);
    await runRemote(offsite, ['rm', '-f', '--', ...[file, `${file}.hmac`, `${file}.sha256`].map((n) => `${offsite.remoteDir}/${n}`)], { label: 'ssh rm' });
    return took;
  };
  const activities = createOffsiteActivities({ config, logger: createLogger({ level: 'fatal', fd: 2 }) });
  /** OffsiteSync's uploadDump: encrypted, uploaded, checked, renamed; then removed again from the NAS for the next run. */
  const encryptedUpload = async () => {
    const t = process.hrtime.bigint();
    await activities.uploadDump({ file, sha256 });
    const took = seconds(t);
    await runRemote(offsite, ['rm', '-f', '--', ...['.age', '.age.sha256', '.hmac'].map((s) => `${offsite.remoteDir}/${file}${s}`)], { label: 'ssh rm' });
    return took;
  };

  const plain: number[] = [];
  const encrypted: number[] = [];
  const rssBefore = maxRssMiB();
  for (let i = 0; i < runs; i++) {
    plain.push(await plainUpload());
    encrypted.push(await encryptedUpload());
  }
  const rssAfter = maxRssMiB();
  // age alone over the dump, for the share of the difference that is the cipher itself.
  start = process.hrtime.bigint();
  await execa('sh', ['-c', 'age -e -r "$1" "$2" | sha256sum >/dev/null', 'sh', ring.entry.ageRecipient, path]);
  const ageSeconds = seconds(start);

  const plainBackup = dumpSeconds + median(plain);
  const encryptedBackup = dumpSeconds + median(encrypted);
  const mib = (b: number) => (b / 1024 ** 2).toFixed(0);
  console.log(`${mib(sqlBytes)} MiB of dump-like SQL -> ${mib(dumpBytes)} MiB dump (igzip -1); NAS: sshd on loopback, rsync over ssh; medians of ${runs}:`);
  console.log(`  dump written (generate | igzip -1 > file, sha256):     ${dumpSeconds.toFixed(1)} s`);
  console.log(`  upload, plain (as before: check, rsync, sha256 there): ${median(plain).toFixed(1)} s  [${plain.map((x) => x.toFixed(1)).join(', ')}]`);
  console.log(`  upload, encrypted (OffsiteSync's uploadDump, age):     ${median(encrypted).toFixed(1)} s  [${encrypted.map((x) => x.toFixed(1)).join(', ')}]`);
  console.log(`  age -e alone over the dump (| sha256sum):              ${ageSeconds.toFixed(1)} s`);
  console.log(`  backup wall time (dump + upload): plain ${plainBackup.toFixed(1)} s, encrypted ${encryptedBackup.toFixed(1)} s: encryption adds ${(((encryptedBackup - plainBackup) / plainBackup) * 100).toFixed(1)}% (target <= 5%)`);
  console.log(`  worker peak RSS: ${rssBefore.toFixed(0)} MiB before the uploads, ${rssAfter.toFixed(0)} MiB after ${runs} encrypted uploads of ${mib(dumpBytes)} MiB (flat: the ciphertext passes in 64 KiB chunks)`);
} finally {
  await sshd.stop();
  await rm(root, { recursive: true, force: true });
}
