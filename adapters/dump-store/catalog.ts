import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeysLike } from './tags.js';
import type { Config } from '../../config/config.js';
import { encryptedFileName, immichVersionOfBackupName, isDumpName, isImmichBackupName, isRestorePointName, RESTORE_POINTS_DIR, stampOfName } from '../../core/dump-names.js';
import type { DumpOrigin } from '../../core/restore-plan.js';
import { remoteDumpsSized, remoteTagLines } from '../nas/remote-dumps.js';
import { vouchesFor } from './keyring.js';
import { asKeys, fingerprints, parseTags, tagFileName } from './tags.js';
import { futureStamped, scanDumps } from './authentic.js';
import { authenticRows, rowFacts } from './rows.js';

// `immich-backup dumps`: everything a restore can load, wherever it is, with what is known of each
// without reading it whole (age, size, whether a checksum was recorded, the row counts recorded).

export interface CatalogEntry {
  file: string;
  /** local, offsite (on the NAS), restore-point or immich (Immich's own backups). */
  origin: DumpOrigin;
  stamp?: string;
  ageHours?: number;
  bytes?: number;
  /** What vouches for it: a validated dump's recorded sha256, or nothing (Immich's own). */
  verified: string;
  tables?: number;
  rows?: number;
  immichVersion?: string;
  /** What to pass to `restore db`. */
  restore: string;
  /** The fingerprint of the key its tag names (NAS copies), when it names one. */
  keyId?: string;
}

export interface Catalog {
  entries: CatalogEntry[];
  /** Places that could not be read (the NAS unreachable, a folder missing). */
  problems: string[];
}

function timing(file: string, nowMs: number): Pick<CatalogEntry, 'stamp' | 'ageHours'> {
  const stamp = stampOfName(file);
  return stamp ? { stamp: stamp.toISOString(), ageHours: +((nowMs - stamp.getTime()) / 3_600_000).toFixed(2) } : {};
}

/** Our dumps (or restore points) in one folder: regular files only; a symlink or directory named like one is a problem. */
async function localEntries(config: Config, key: () => Promise<KeysLike>, dir: string, origin: 'local' | 'restore-point', isName: (n: string) => boolean, nowMs: number, problems: string[]): Promise<CatalogEntry[]> {
  let verifiedWith: KeysLike | undefined;
  const scanned = await scanDumps(dir, isName, async () => {
    verifiedWith = await key().catch((err: Error) => {
      problems.push(`provenance not checked: ${err.message}`);
      return undefined;
    });
    return verifiedWith;
  }, 'a restore refuses it');
  const entries: CatalogEntry[] = [];
  for (const d of scanned) {
    if (d.state === 'not-regular') {
      problems.push(`${join(dir, d.file)} is ${d.what} named like a dump: ignored, never followed; remove it`);
      continue;
    }
    const { file } = d;
    const rows = verifiedWith && d.state === 'authentic' ? await authenticRows(dir, file, verifiedWith) : undefined;
    const { tables, rows: rowCount, immichVersion } = rowFacts(rows);
    const flags = [
      ...(futureStamped(file, nowMs, config.backup.maxFutureMinutes) ? ['STAMPED IN THE FUTURE (a clock ran ahead): never "latest"'] : []),
      ...(rows?.shrink ? [`FLAGGED (${rows.shrink}): kept, never "latest"`] : []),
    ];
    const verified =
      d.state === 'unvalidated' ? 'NOT validated (no .sha256): a restore refuses it'
      : d.state === 'unchecked' ? 'NOT AUTHENTIC: provenance not checked'
      : d.state === 'refused' ? `NOT AUTHENTIC: ${d.reason}`
      : `validated and tagged, sha256 ${d.sha256.slice(0, 12)}… recorded${flags.length ? `; ${flags.join('; ')}` : ''}`;
    entries.push({
      file,
      origin,
      ...timing(file, nowMs),
      bytes: d.bytes,
      verified,
      ...(tables !== undefined ? { tables, rows: rowCount } : {}),
      ...(immichVersion ? { immichVersion } : {}),
      // A dump a restore would refuse is offered to `adopt` (which checks it in full first), never to `restore`.
      restore: d.state === 'authentic' ? `restore db --dump ${file}` : `adopt ${file}`,
    });
  }
  return entries;
}

/**
 * The NAS's dumps, newest first: one listing (names and sizes: `ls -ln` is there on every NAS,
 * busybox included) and one command for the key each tag names (`grep`), so that a copy tagged
 * with a key this host does not hold is said to be so, with both fingerprints, and offered what
 * works (recover, adopt) instead of a restore that would be refused.
 */
async function nasEntries(config: Config, key: () => Promise<KeysLike>, nowMs: number): Promise<CatalogEntry[]> {
  const offsite = config.offsite;
  const { dumps, sizes } = await remoteDumpsSized(offsite);
  const remote = dumps.reverse();
  if (!remote.length) return [];
  const lines = await remoteTagLines(offsite, remote);
  // A new host without keys still sees what the NAS holds, and is told to recover the keys.
  const k = await key().then(asKeys, () => undefined);
  return remote.map((d) => {
    const { file } = d;
    const parsed = parseTags(lines.get(file) ?? '');
    const held = parsed.key ? k?.all.find((t) => t.id === parsed.key) : undefined;
    const layout = d.encrypted ? 'encrypted (age)' : 'a PLAIN copy from before encryption (readable by whoever reads the NAS; OffsiteSync replaces it while its local dump exists)';
    const base = { file, origin: 'offsite' as const, ...timing(file, nowMs), bytes: sizes.get(d.encrypted ? encryptedFileName(file) : file)!, ...(parsed.key ? { keyId: parsed.key } : {}) };
    if (!parsed.dump) return { ...base, verified: `${layout}; NOT AUTHENTIC: no provenance tag beside it on the NAS; a restore refuses it`, restore: d.encrypted ? 'recover' : `adopt --from offsite ${file}` };
    if ((parsed.key || !k) && !held) {
      // Without that key a copy is neither verified nor (encrypted) decrypted here: the keys come back with the recovery code.
      return {
        ...base,
        verified: `${layout}; tagged with key ${parsed.key ?? '(unnamed)'}, which this host does not hold (${k ? `its keys: ${fingerprints(k)}` : 'it has no key'}): a restore here refuses it; put that key back or recover the keys with the recovery code`,
        restore: d.encrypted ? 'recover' : `adopt --from offsite ${file}`,
      };
    }
    if (held && !vouchesFor(held, file, parsed.dump)) {
      return { ...base, verified: `${layout}; tagged with key ${held.id}, retired on ${held.retired} and named after that: a restore refuses it`, restore: `adopt --from offsite ${file}` };
    }
    return { ...base, verified: `${layout}; tagged with key ${parsed.key ?? '(from before key fingerprints)'}; sha256 checked on the NAS when uploaded; decrypted and checked in full when fetched`, restore: `restore db --dump ${file} --from offsite` };
  });
}

/** Every restorable dump: the staging dir, restore points, the NAS, Immich's own backups, newest first within each. */
export async function listDumps(config: Config, key: () => Promise<KeysLike>, nowMs = Date.now()): Promise<Catalog> {
  const dir = config.backup.dir;
  const problems: string[] = [];
  const entries = [
    ...(await localEntries(config, key, dir, 'local', isDumpName, nowMs, problems)).reverse(),
    ...(await localEntries(config, key, join(dir, RESTORE_POINTS_DIR), 'restore-point', isRestorePointName, nowMs, problems)).reverse(),
  ];
  try {
    entries.push(...(await nasEntries(config, key, nowMs)));
  } catch (err) {
    problems.push(`NAS not listed: ${(err as Error).message.split('\n')[0]}`);
  }
  if (config.immich.backupsDir) {
    const names = await readdir(config.immich.backupsDir).catch((err: Error) => {
      problems.push(`immich.backupsDir ${config.immich.backupsDir} not listed: ${err.message}`);
      return [] as string[];
    });
    const immich = names.filter(isImmichBackupName).sort((a, b) => (stampOfName(b)?.getTime() ?? 0) - (stampOfName(a)?.getTime() ?? 0));
    for (const file of immich) {
      const st = await lstat(join(config.immich.backupsDir, file)).catch(() => undefined);
      if (!st?.isFile()) continue;
      const version = immichVersionOfBackupName(file);
      entries.push({ file, origin: 'immich', ...timing(file, nowMs), bytes: st.size, verified: "Immich's own: UNAUTHENTICATED (no tag); checked for completeness and by the strict filter before a restore", ...(version ? { immichVersion: version } : {}), restore: `restore db --dump ${file}` });
    }
  }
  return { entries, problems };
}
