import { createCipheriv, createDecipheriv, randomBytes, randomInt, scrypt, timingSafeEqual } from 'node:crypto';
import { lstat, readFile, rm } from 'node:fs/promises';
import { MAX_ENVELOPES } from '../../core/dump-names.js';
import { RecoveryCodeError, UnsafePathError } from '../../core/errors.js';
import { writePrivate } from './keyring.js';
import { KEYRING_FORMAT, keyringPaths, makeCurrent, openKeyring, parseRing, replaceKeyring, type Keyring, type KeyringFile } from './keyring.js';

// The recovery code: what the operator holds so that a new host can get every secret back from the
// NAS alone. The keyring (keyring.ts) is encrypted and authenticated with AES-256-GCM (Node's
// OpenSSL) under a key derived from the code by scrypt (memory-hard: 128 MiB per guess), and that
// envelope goes to the NAS beside the dumps. The host keeps the derived key, not the code, so a
// rotation re-wraps without asking for it; changing the code re-wraps the keyring (a few hundred
// bytes), never the backups. The code is shown until the operator types it back (confirmed);
// then it exists only where the operator put it.

export const ENVELOPE_FORMAT = 'immich-backup wrapped keyring v1';
const KDF = { name: 'scrypt', N: 2 ** 17, r: 8, p: 1 } as const;
const SCRYPT_MAXMEM = 256 * 1024 * 1024;
/** Crockford's base32: no I, L, O or U, so what is read aloud or typed is unambiguous. */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const CODE_CHARS = 24; // 120 bits

interface Kdf {
  name: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
}

interface RecoveryState {
  format: 'immich-backup recovery v1';
  kdf: Kdf;
  /** scrypt(code, salt): wraps the keyring; the code itself is not kept once confirmed. */
  wrapKey: string;
  confirmed: boolean;
  created: string;
  /** The codes before this one (their salt and derived key): their envelopes on the NAS are replaced only once this code is confirmed. */
  previous?: Array<{ salt: string; wrapKey: string }>;
}

/** The envelope on the NAS: which keys it holds (fingerprints only) and the keyring, sealed. */
export interface Envelope {
  format: typeof ENVELOPE_FORMAT;
  kdf: Kdf;
  ids: string[];
  current: string;
  nonce: string;
  data: string;
  tag: string;
}

/** A new code: 24 characters of Crockford's base32 in six groups, e.g. 7KQ2-M9XD-… */
export function newRecoveryCode(): string {
  const chars = Array.from({ length: CODE_CHARS }, () => ALPHABET[randomInt(ALPHABET.length)]).join('');
  return chars.match(/.{4}/g)!.join('-');
}

/** What was typed, as the code: case, spaces and dashes do not matter, O reads as 0, I and L as 1. */
export function normalizeCode(typed: string): string {
  const chars = typed.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
  const bad = [...chars].find((c) => !ALPHABET.includes(c));
  if (bad !== undefined || chars.length !== CODE_CHARS) {
    throw new RecoveryCodeError(`that is not a recovery code: it has ${CODE_CHARS} letters and digits in groups of four (e.g. 7KQ2-M9XD-…)${bad !== undefined ? `, and ${JSON.stringify(bad)} is not one of them` : `, not ${chars.length}`}`);
  }
  return chars.match(/.{4}/g)!.join('-');
}

function derive(code: string, kdf: Kdf): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(normalizeCode(code), Buffer.from(kdf.salt, 'hex'), 32, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: SCRYPT_MAXMEM }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

const aad = (e: Pick<Envelope, 'format' | 'kdf' | 'ids' | 'current'>) => Buffer.from(JSON.stringify([e.format, e.kdf, e.ids, e.current]));

export function wrap(file: KeyringFile, wrapKey: Buffer, kdf: Kdf): Envelope {
  const head = { format: ENVELOPE_FORMAT, kdf, ids: file.keys.map((k) => k.id), current: file.current } as const;
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', wrapKey, nonce);
  cipher.setAAD(aad(head));
  const data = Buffer.concat([cipher.update(JSON.stringify(file)), cipher.final()]);
  return { ...head, nonce: nonce.toString('hex'), data: data.toString('base64'), tag: cipher.getAuthTag().toString('hex') };
}

/** An envelope's text, parsed: never trusted beyond its shape until it opens with the code. */
export function parseEnvelope(text: string, where: string): Envelope {
  let e: Envelope;
  try {
    e = JSON.parse(text) as Envelope;
  } catch {
    throw new RecoveryCodeError(`${where} is not a keyring envelope (not JSON)`);
  }
  const ok = e?.format === ENVELOPE_FORMAT && e.kdf?.name === 'scrypt' && Number.isInteger(e.kdf.N) && e.kdf.N >= 2 ** 14 && e.kdf.N <= 2 ** 20 && e.kdf.r === 8 && e.kdf.p === 1 && /^[0-9a-f]{32,64}$/.test(e.kdf.salt) && Array.isArray(e.ids) && /^[0-9a-f]{24}$/.test(e.nonce) && /^[0-9a-f]{32}$/.test(e.tag) && typeof e.data === 'string';
  if (!ok) throw new RecoveryCodeError(`${where} is not a keyring envelope this tool wrote (${ENVELOPE_FORMAT})`);
  return e;
}

/** The keyring in an envelope, opened with the code; a wrong code (or an altered envelope) is one RecoveryCodeError. */
export async function unwrap(e: Envelope, code: string, where: string): Promise<KeyringFile> {
  const key = await derive(code, e.kdf);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(e.nonce, 'hex'));
    decipher.setAAD(aad(e));
    decipher.setAuthTag(Buffer.from(e.tag, 'hex'));
    const file = JSON.parse(Buffer.concat([decipher.update(Buffer.from(e.data, 'base64')), decipher.final()]).toString('utf8')) as KeyringFile;
    if (file.format !== KEYRING_FORMAT) throw new RecoveryCodeError('not a keyring');
    return file;
  } catch {
    throw new RecoveryCodeError(`${where} does not open with this recovery code (a typo, or a code changed since: the newest code opens it; or the file was altered)`);
  }
}

async function readState(keyFile: string): Promise<RecoveryState | undefined> {
  const path = keyringPaths(keyFile).recovery;
  const st = await lstat(path).catch(() => undefined);
  if (!st) return undefined;
  if (!st.isFile() || st.mode & 0o077) throw new UnsafePathError(`${path} is not an owner-only regular file: chmod 600 it, and change the recovery code (immich-backup recovery-code change)`);
  const state = JSON.parse(await readFile(path, 'utf8')) as RecoveryState;
  if (state.format !== 'immich-backup recovery v1' || !/^[0-9a-f]{64}$/.test(state.wrapKey)) throw new UnsafePathError(`${path} is not this tool's recovery state: change the recovery code (immich-backup recovery-code change)`);
  return state;
}

const writeState = (keyFile: string, state: RecoveryState) => writePrivate(keyringPaths(keyFile).recovery, JSON.stringify(state, null, 2) + '\n');

/** The envelope of the keyring as it is now, written beside it (what OffsiteSync puts on the NAS). */
async function rewrap(keyFile: string, ring: Keyring, state: RecoveryState): Promise<Envelope> {
  const envelope = wrap(ring.file, Buffer.from(state.wrapKey, 'hex'), state.kdf);
  await writePrivate(keyringPaths(keyFile).wrapped, JSON.stringify(envelope) + '\n');
  return envelope;
}

async function newState(keyFile: string, code: string, confirmed: boolean, kdf?: Kdf, previous: RecoveryState['previous'] = []): Promise<RecoveryState> {
  const k = kdf ?? { ...KDF, salt: randomBytes(16).toString('hex') };
  const state: RecoveryState = { format: 'immich-backup recovery v1', kdf: k, wrapKey: (await derive(code, k)).toString('hex'), confirmed, created: new Date().toISOString(), ...(previous.length ? { previous } : {}) };
  await writeState(keyFile, state);
  return state;
}

export interface RecoveryStatus {
  confirmed: boolean;
  /** The code, while it is not confirmed (then `immich-backup recovery-code` shows it). */
  code?: string;
  created: string;
}

/**
 * The recovery code of this keyring, made on first use (the worker's start): the code is kept in an
 * owner-only file until the operator confirms it, and the wrapped keyring is brought up to date
 * (it follows every change of the keyring). `made`: a code was made just now.
 */
export async function ensureRecovery(keyFile: string): Promise<RecoveryStatus & { made: boolean; envelope: Envelope }> {
  const ring = await openKeyring(keyFile);
  let state = await readState(keyFile);
  let made = false;
  if (!state) {
    const code = newRecoveryCode();
    // The state first: a code shown is always one that confirms.
    state = await newState(keyFile, code, false);
    await writePrivate(keyringPaths(keyFile).code, `${code}\n`);
    made = true;
  }
  const envelope = await currentEnvelope(keyFile, ring, state);
  return { ...(await recoveryStatus(keyFile))!, made, envelope };
}

async function currentEnvelope(keyFile: string, ring: Keyring, state: RecoveryState): Promise<Envelope> {
  const text = await readFile(keyringPaths(keyFile).wrapped, 'utf8').catch(() => undefined);
  if (text) {
    const e = parseEnvelope(text, keyringPaths(keyFile).wrapped);
    const same = e.current === ring.file.current && e.kdf.salt === state.kdf.salt && e.ids.join() === ring.file.keys.map((k) => k.id).join();
    // Same keys, same code: but a retirement changes the keyring without changing its ids.
    if (same && (await unwrapWithKey(e, Buffer.from(state.wrapKey, 'hex'))) === JSON.stringify(ring.file)) return e;
  }
  return rewrap(keyFile, ring, state);
}

async function unwrapWithKey(e: Envelope, key: Buffer): Promise<string | undefined> {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(e.nonce, 'hex'));
    decipher.setAAD(aad(e));
    decipher.setAuthTag(Buffer.from(e.tag, 'hex'));
    return Buffer.concat([decipher.update(Buffer.from(e.data, 'base64')), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

/** Whether the code is confirmed (and the code while it is not); undefined before the first start made one. */
export async function recoveryStatus(keyFile: string): Promise<RecoveryStatus | undefined> {
  const state = await readState(keyFile);
  if (!state) return undefined;
  const code = state.confirmed ? undefined : (await readFile(keyringPaths(keyFile).code, 'utf8').catch(() => undefined))?.trim();
  return { confirmed: state.confirmed, ...(code ? { code } : {}), created: state.created };
}

/** The operator typed the code back: when it is the one, it is confirmed and no longer kept here. */
export async function confirmRecoveryCode(keyFile: string, typed: string): Promise<void> {
  const state = await readState(keyFile);
  if (!state) throw new RecoveryCodeError('there is no recovery code yet: the worker makes one on its first start (npm start)');
  const derived = await derive(typed, state.kdf);
  if (!timingSafeEqual(derived, Buffer.from(state.wrapKey, 'hex'))) throw new RecoveryCodeError('that is not the recovery code: nothing was confirmed; read it again (immich-backup recovery-code) and type it as shown');
  await writeState(keyFile, { ...state, confirmed: true });
  await rm(keyringPaths(keyFile).code, { force: true });
}

/** A new code: the keyring re-wrapped under it (the backups are not touched), unconfirmed until typed back. Returns it. */
export async function changeRecoveryCode(keyFile: string): Promise<string> {
  const ring = await openKeyring(keyFile);
  const before = await readState(keyFile);
  const code = newRecoveryCode();
  // The code before is remembered: OffsiteSync removes its envelope from the NAS only once this one is confirmed.
  const previous = before ? [{ salt: before.kdf.salt, wrapKey: before.wrapKey }, ...(before.previous ?? [])].slice(0, 8) : [];
  const state = await newState(keyFile, code, false, undefined, previous);
  await writePrivate(keyringPaths(keyFile).code, `${code}\n`);
  await rewrap(keyFile, ring, state);
  return code;
}

/**
 * After a recovery: the code the operator typed is this host's code (confirmed: it was just typed),
 * under the envelope's salt, and the keyring is wrapped anew.
 */
export async function adoptRecoveredCode(keyFile: string, code: string, kdf: Kdf): Promise<Envelope> {
  const state = await newState(keyFile, code, true, kdf);
  await rm(keyringPaths(keyFile).code, { force: true });
  return rewrap(keyFile, await openKeyring(keyFile), state);
}

/** The envelope as it is now (made if missing), for the NAS. */
export async function envelopeForNas(keyFile: string): Promise<{ name: string; text: string }> {
  const { envelope } = await ensureRecovery(keyFile);
  return { name: envelopeName(envelope.ids[0]!, envelope.kdf.salt), text: JSON.stringify(envelope) + '\n' };
}

/**
 * The envelope's name on the NAS: after the keyring's first key and the code (its salt), so a
 * rotation under the same code replaces it, and another host's (or another code's) never does.
 */
export const envelopeName = (firstId: string, salt: string) => `keyring-${firstId}-${salt.slice(0, 8)}.json`;

export interface EnvelopePlan {
  /** This host's envelope, when the NAS lacks it as it is. */
  upload?: { name: string; text: string };
  /** Envelopes this host wrote under an earlier code (or name) that the new one covers: removed once it is verified there. */
  remove: string[];
  /** The NAS holds keys this host lacks under a code it holds: nothing may replace them (refused, with what to do). */
  conflict?: string;
}

/**
 * What OffsiteSync does with the keyrings on the NAS. This host's envelope goes up under its own
 * name; an envelope there is replaced or removed only when it opens with this host's code (or an
 * earlier code of this host's, and the current one is confirmed) and every key and password it
 * holds is in this host's keyring: a host that lost its keyring (a key file put back alone) never
 * overwrites the only copy of the old identities. Envelopes it cannot open (another host's) are
 * never touched.
 */
export async function planEnvelopes(keyFile: string, remote: ReadonlyArray<{ name: string; text: string }>): Promise<EnvelopePlan> {
  const ring = await openKeyring(keyFile);
  const { envelope, confirmed } = await ensureRecovery(keyFile);
  const state = (await readState(keyFile))!;
  const mine = { name: envelopeName(envelope.ids[0]!, envelope.kdf.salt), text: JSON.stringify(envelope) + '\n' };
  const wrapKeys = [{ key: state.wrapKey, current: true }, ...(state.previous ?? []).map((p) => ({ key: p.wrapKey, current: false }))];
  const covered = (file: KeyringFile) => file.resticPassword === ring.file.resticPassword && file.keys.every((k) => ring.file.keys.some((r) => r.id === k.id && r.tagKey === k.tagKey && r.ageIdentity === k.ageIdentity));
  const plan: EnvelopePlan = { remove: [] };
  for (const { name, text } of remote) {
    let e: Envelope;
    try {
      e = parseEnvelope(text, name);
    } catch {
      continue; // not ours to judge
    }
    let opened: { file: KeyringFile; current: boolean } | undefined;
    for (const w of wrapKeys) {
      const plain = await unwrapWithKey(e, Buffer.from(w.key, 'hex'));
      if (plain) {
        opened = { file: JSON.parse(plain) as KeyringFile, current: w.current };
        break;
      }
    }
    if (!opened) continue;
    if (!covered(opened.file)) {
      const lacking = opened.file.keys.filter((k) => !ring.file.keys.some((r) => r.id === k.id && r.ageIdentity === k.ageIdentity)).map((k) => k.id);
      plan.conflict = `the NAS keyring ${name} opens with this host's recovery code but holds keys this host does not (${lacking.join(', ') || 'the library repository\'s password'}): it was not replaced, and nothing new was uploaded (what this host would encrypt now could not be read with the code); get them back first: immich-backup recover`;
      continue;
    }
    if (name !== mine.name && (opened.current || confirmed)) plan.remove.push(name);
  }
  // Compared without the final newline (a remote read strips it).
  if (!remote.some((r) => r.name === mine.name && r.text.trim() === mine.text.trim())) plan.upload = mine;
  return plan;
}

/**
 * A new current key (a suspected leak): the old one retired, kept to verify and decrypt what it made
 * (`vouches`: the tags of the dumps it made, the only ones it vouches for from now on), and a new
 * recovery code: whoever read the key folder also read the key the old code derived.
 */
export async function rotateKeys(keyFile: string, vouches: readonly string[]): Promise<{ retired: string; current: string; code: string }> {
  const ring = await openKeyring(keyFile);
  const next = await replaceKeyring(keyFile, await makeCurrent(ring.file, randomBytes(32), new Date(), vouches));
  const code = await changeRecoveryCode(keyFile);
  return { retired: ring.current.id, current: next.current.id, code };
}

/**
 * Several keyrings as one: the newest (by its current key's creation) gives the current key and the
 * library repository's password; every other key is kept, retired now if it was not already (what it
 * made before now still verifies).
 */
export function mergeKeyrings(rings: readonly KeyringFile[], now = new Date()): KeyringFile {
  const currentOf = (f: KeyringFile) => f.keys.find((k) => k.id === f.current)!;
  const primary = [...rings].sort((a, b) => Date.parse(currentOf(b).created) - Date.parse(currentOf(a).created))[0]!;
  const keys = new Map(primary.keys.map((k) => [k.id, k]));
  for (const ring of rings) for (const k of ring.keys) if (!keys.has(k.id)) keys.set(k.id, k.retired ? k : { ...k, retired: now.toISOString() });
  return { ...primary, keys: [...keys.values()] };
}

export interface Recovered {
  /** The envelopes the code opened, and those it did not (with why). */
  opened: string[];
  refused: Array<{ name: string; reason: string }>;
  ring: Keyring;
  /** Keys this host held before: kept, retired. */
  kept: string[];
}

/**
 * A new host gets its keys back: every envelope the code opens is merged (with this host's own keys,
 * if it made any: kept, retired) into its keyring, the key file holds the recovered current key, and
 * the code becomes this host's code, confirmed. Nothing is written unless at least one envelope opens.
 */
export async function recoverKeyring(keyFile: string, envelopes: ReadonlyArray<{ name: string; text: string }>, code: string): Promise<Recovered> {
  normalizeCode(code);
  const opened: Array<{ name: string; file: KeyringFile; kdf: Kdf }> = [];
  const refused: Recovered['refused'] = [];
  // One scrypt per code and salt (128 MiB, half a second): envelopes planted by the hundred cost one each at most.
  const derived = new Map<string, Promise<Buffer>>();
  for (const { name, text } of envelopes.slice(0, MAX_ENVELOPES)) {
    try {
      const e = parseEnvelope(text, name);
      const key = derived.get(JSON.stringify(e.kdf)) ?? derive(code, e.kdf);
      derived.set(JSON.stringify(e.kdf), key);
      const plain = await unwrapWithKey(e, await key);
      if (!plain) throw new RecoveryCodeError(`${name} does not open with this recovery code (a typo, or a code changed since: the newest code opens it; or the file was altered)`);
      opened.push({ name, file: parseRing(plain, name), kdf: e.kdf });
    } catch (err) {
      refused.push({ name, reason: (err as Error).message });
    }
  }
  if (!opened.length) {
    throw new RecoveryCodeError(envelopes.length ? `the recovery code opens none of the keyrings on the NAS: ${refused.map((r) => r.reason).join('; ')}; nothing was changed` : 'the NAS holds no keyring (keyring/keyring-*.json): it was never synced there by OffsiteSync, or offsite.remoteDir points elsewhere; nothing was changed');
  }
  const local = await openKeyring(keyFile).catch(() => undefined);
  const merged = mergeKeyrings([...opened.map((o) => o.file)]);
  const kept = local ? local.file.keys.filter((k) => !merged.keys.some((m) => m.id === k.id)) : [];
  const now = new Date().toISOString();
  const ring = await replaceKeyring(keyFile, { ...merged, keys: [...merged.keys, ...kept.map((k) => (k.retired ? k : { ...k, retired: now }))] });
  await adoptRecoveredCode(keyFile, code, opened[0]!.kdf);
  return { opened: opened.map((o) => o.name), refused, ring, kept: kept.map((k) => k.id) };
}
