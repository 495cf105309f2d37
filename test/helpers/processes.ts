import { readdir, readFile, readlink } from 'node:fs/promises';

// "My processes": the processes this test file started, found without looking at anything else on
// the machine, so that two test files (or another job) running at once change nothing. A process is
// this file's when it descends from this process, or when its environment carries this file's
// marker: a child that was orphaned (its parent killed, itself reparented to init) keeps the
// marker, so a process the code under test left behind is still found.

const MARKER_NAME = 'IMMICH_BACKUP_TEST_FILE';
// Set when a test file loads this module, before it starts anything: every child inherits it.
process.env[MARKER_NAME] = String(process.pid);
const marker = `${MARKER_NAME}=${process.pid}`;

export interface OwnProcess {
  pid: number;
  /** The kernel's name for it (what `pgrep -x` matches): at most 15 characters. */
  comm: string;
  /** Its arguments joined by spaces (what `pgrep -f` matches). */
  cmdline: string;
  /** Clock ticks after boot: a later start is a larger number. */
  started: number;
}

interface Entry extends OwnProcess {
  ppid: number;
}

async function entry(pid: number): Promise<Entry | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!stat) return undefined;
  // The name is in parentheses and may hold spaces or parentheses itself: the fields follow the last ')'.
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replace(/\0+$/, '').replace(/\0/g, ' ');
  return { pid, ppid: Number(fields[1]), comm: stat.slice(stat.indexOf('(') + 1, close), cmdline, started: Number(fields[19]) };
}

async function carriesMarker(pid: number): Promise<boolean> {
  const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
  return environ.split('\0').includes(marker);
}

/** Every live process this test file started (not this process itself), oldest first. */
export async function ownProcesses(): Promise<OwnProcess[]> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
  const entries = (await Promise.all(pids.map(entry))).filter((e): e is Entry => e !== undefined);
  const children = new Map<number, Entry[]>();
  for (const e of entries) children.set(e.ppid, [...(children.get(e.ppid) ?? []), e]);
  const own = new Map<number, Entry>();
  const adopt = (e: Entry) => {
    if (own.has(e.pid)) return;
    own.set(e.pid, e);
    for (const child of children.get(e.pid) ?? []) adopt(child);
  };
  for (const child of children.get(process.pid) ?? []) adopt(child);
  for (const e of entries) if (e.pid !== process.pid && !own.has(e.pid) && (await carriesMarker(e.pid))) adopt(e);
  return [...own.values()].sort((a, b) => a.started - b.started || a.pid - b.pid).map(({ ppid: _, ...p }) => p);
}

/**
 * This file's processes by name: `{ name }` as `pgrep -x` (the kernel's name), `{ cmdline }` as
 * `pgrep -f`. Oldest first: the last is what `pgrep -n` picks.
 */
export async function ownProcessesNamed(match: { name: string } | { cmdline: RegExp }): Promise<number[]> {
  return (await ownProcesses()).filter((p) => ('name' in match ? p.comm === match.name : match.cmdline.test(p.cmdline))).map((p) => p.pid);
}

/**
 * The TCP sockets this file (this process and its processes) listens on, as "netns local-address" strings, sorted: read
 * from each process's own network namespace (/proc/PID/net/tcp{,6}, state 0A) and matched by the
 * socket inodes its descriptors hold, so another program's listener is never counted and one in a
 * namespace of its own (a process under `unshare --net`) is.
 */
export async function ownTcpListeners(): Promise<string[]> {
  const found = new Set<string>();
  for (const pid of [process.pid, ...(await ownProcesses()).map((p) => p.pid)]) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    const inodes = new Set<string>();
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode) inodes.add(inode);
    }
    if (inodes.size === 0) continue;
    const netns = await readlink(`/proc/${pid}/ns/net`).catch(() => '?');
    for (const table of ['tcp', 'tcp6']) {
      const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
      for (const line of text.split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[3] === '0A' && inodes.has(f[9]!)) found.add(`${netns} ${f[1]}`);
      }
    }
  }
  return [...found].sort();
}
