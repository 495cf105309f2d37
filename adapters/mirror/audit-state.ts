import { constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import type { Config } from '../../config/config.js';
import { UnsafePathError } from '../../core/errors.js';
import { writeFileAtomic } from '../files/fs-safe.js';

// LibraryAudit's durable position: one small owner-only file beside the worker's key, validated on
// every read (it is never trusted blindly), written whole or not at all.

export const AUDIT_STATE_FILE = 'library-audit.json';

// --- the durable position --------------------------------------------------------------------

export const ASSET_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const count = z.number().int().min(0);
const name = z.string().min(1).max(4096);
const when = z.string().datetime();
const sideSchema = z.strictObject({
  ok: count,
  missing: count,
  mismatched: count,
  notChecked: count,
  names: z.strictObject({ missing: z.array(name).max(100), mismatched: z.array(name).max(100) }),
  notCheckedReason: z.string().max(1000).optional(),
});
const passSchema = z.strictObject({
  number: z.number().int().min(1),
  startedAt: when,
  covered: count,
  bytes: count,
  library: sideSchema,
  mirror: sideSchema,
  skipped: z.strictObject({ notContent: count, outsideLibrary: count }),
});
export const stateSchema = z.strictObject({
  version: z.literal(1),
  /** The pass in progress; undefined between a completed pass and the next run. */
  pass: passSchema.extend({ after: z.string().regex(ASSET_ID).optional() }).optional(),
  lastPass: passSchema.extend({ completedAt: when }).optional(),
  /** The start of the last scheduled run that completed: the interval slices are sized by. */
  lastScheduledRunAt: when.optional(),
  lastRun: z.strictObject({ workflowId: z.string().max(300), startedAt: when, finishedAt: when, covered: count, passNumber: count, passCompleted: z.boolean() }).optional(),
  /** The run in progress (its quota and what it did so far), so a retried attempt goes on with it. */
  run: z
    .strictObject({
      workflowId: z.string().max(300),
      startedAt: when,
      scheduled: z.boolean(),
      quota: count,
      covered: count,
      bytes: count,
      passCompleted: z.boolean(),
      mirrorReason: z.string().max(1000).optional(),
    })
    .optional(),
});
export type AuditState = z.infer<typeof stateSchema>;

export const auditStatePath = (config: Config) => join(dirname(resolve(config.security.keyFile)), AUDIT_STATE_FILE);

/** The state file's directory: owner-only, and neither in backup.dir nor on the drive. */
async function checkStateDir(config: Config, create: boolean): Promise<string> {
  const file = auditStatePath(config);
  const dir = dirname(file);
  const inside = (parent: string) => {
    const rel = relative(resolve(parent), dir);
    return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'));
  };
  if (inside(config.backup.dir) || inside(config.library.mountPoint) || inside(config.library.destination)) {
    throw new UnsafePathError(`the audit's state would go to ${dir} (beside security.keyFile), inside backup.dir or on the drive: move security.keyFile to a directory of its own`);
  }
  if (create) await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir).catch(() => undefined);
  if (!st) return file;
  if (!st.isDirectory()) throw new UnsafePathError(`${dir} (the directory of security.keyFile) is not a directory`);
  if (st.mode & 0o077 || st.uid !== process.getuid?.()) {
    throw new UnsafePathError(`${dir} (the directory of security.keyFile, where the audit keeps its position) is not owner-only (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}): chmod 700 it`);
  }
  return file;
}

/** The saved state: undefined when there is none; `invalid` says why a file that exists could not be used. */
export async function readAuditState(config: Config): Promise<{ state?: AuditState; invalid?: string }> {
  const file = await checkStateDir(config, false);
  let text: string;
  try {
    const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) return { invalid: `${file} is not a regular file` };
      if (st.size > 1024 * 1024) return { invalid: `${file} is ${st.size} bytes, far larger than an audit position` };
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return {};
    if (code === 'ELOOP') return { invalid: `${file} is a symlink` };
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { invalid: `${file} is not JSON` };
  }
  const parsed = stateSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { invalid: `${file}: ${issue.path.join('.') || 'the top level'}: ${issue.message}` };
  }
  return { state: parsed.data };
}

/** Written whole or not at all (a temporary file beside it, synced, renamed over it): writeFileAtomic. */
export async function writeAuditState(config: Config, state: AuditState): Promise<void> {
  const file = await checkStateDir(config, true);
  await writeFileAtomic(file, JSON.stringify(stateSchema.parse(state)) + '\n', { temp: `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp` });
}

/** What `status` shows of the audit: read from the state file (no Temporal needed). */
export async function auditStatus(config: Config): Promise<{ state?: AuditState; invalid?: string; file: string }> {
  const file = auditStatePath(config);
  return { ...(await readAuditState(config)), file };
}
