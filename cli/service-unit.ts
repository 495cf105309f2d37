// The systemd unit `immich-backup install-service` writes: the worker (with the embedded dev
// server in `start` mode) as a root service that comes back after a reboot or a crash.

export type ServiceMode = 'start' | 'worker';

export const SERVICE_NAME = 'immich-backup.service';
/** Secrets for the service (IMMICH_BACKUP_PG_PASSWORD, IMMICH_BACKUP_TEMPORAL_API_KEY): read when present, never written into the unit. */
export const SERVICE_ENV_FILE = '/etc/default/immich-backup';
/** What systemd gives a system service when the unit sets no PATH. */
const SYSTEM_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export interface ServiceUnitOptions {
  mode: ServiceMode;
  /** Absolute paths: the node binary, dist/cli/cli.js, the config file. */
  node: string;
  cli: string;
  configFile: string;
  /** Relative paths in the config resolve against this, as they did when the unit was written. */
  workingDirectory: string;
  /** Directories searched before the system's: node's, and in start mode the temporal binary's. */
  pathDirs: string[];
  /** The README's file: URL. */
  documentation: string;
}

/** One word of a unit line, quoted when it must be: `%` starts a specifier everywhere, `$` an expansion in Exec lines only. */
export function systemdWord(word: string, { exec = false } = {}): string {
  const specifiersEscaped = word.replace(/%/g, '%%');
  const escaped = exec ? specifiersEscaped.replace(/\$/g, '$$$$') : specifiersEscaped;
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped) ? escaped : `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function serviceUnit(o: ServiceUnitOptions): string {
  const path = [...new Set([...o.pathDirs, ...SYSTEM_PATH])].join(':');
  // The cli's shebang runs node with these two settings (the worker's measured memory): kept here.
  const execStart = [o.node, '--max-semi-space-size=1', o.cli, '--config', o.configFile, o.mode].map((w) => systemdWord(w, { exec: true })).join(' ');
  const what = o.mode === 'start' ? 'the embedded Temporal dev server and the worker' : 'the worker, against temporal.address';
  return `# Written by \`immich-backup install-service\` (${o.mode}: ${what}).
# Write it again after moving the config, node or this checkout; then: systemctl daemon-reload
[Unit]
Description=immich-backup: Immich backups as Temporal workflows (${o.mode})
Documentation=${o.documentation.replace(/%/g, '%%')}
# The NAS, a remote Temporal and the notification targets are reached over the network.
Wants=network-online.target
# After the container engine at boot (Immich's database runs in it) and before it at shutdown, so
# a catch-up backup finds its container and a restore's compensation can start Immich again.
After=network-online.target docker.service podman.service

[Service]
# Root, as the worker must be: it reads the key, runs docker, and rsyncs every file of the library and the drive.
Type=exec
WorkingDirectory=${o.workingDirectory.replace(/%/g, '%%')}
Environment=${systemdWord(`PATH=${path}`)}
Environment=MALLOC_ARENA_MAX=2
# Secrets, if any, as KEY=value lines in a root-only file (mode 0600), never in this unit.
EnvironmentFile=-${SERVICE_ENV_FILE}
ExecStart=${execStart}
# A crash, or Temporal unreachable at boot (exit 1): start again after 15 s, for as long as it takes.
Restart=on-failure
RestartSec=15s
# A bad config or an unsafe path (exit 2) does not heal by restarting: the operator must fix it.
RestartPreventExitStatus=2
# SIGTERM to the worker alone: it gives running activities 10 s, cancels them (their commands
# stopped, temporary files removed) within 40 s more, then stops the dev server it started.
# The default would signal rsync and pg_dumpall at the same moment, failing them instead.
KillMode=mixed
TimeoutStopSec=90s
SyslogIdentifier=immich-backup

# Hardening that leaves the backups working. The service writes backup.dir, the key, the dev
# server's state, the drive and (restores) the library, wherever the config puts them.
# Gains no privilege through setuid binaries (setpriv only drops to drill.runAs).
NoNewPrivileges=yes
# /usr, /boot and /etc read-only; not "strict": the backup dir, drive and library are anywhere.
ProtectSystem=full
# A /tmp of its own (the drill's throwaway cluster, rsync's filter files); mounts made later
# (the USB drive plugged in) still reach the service.
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
LockPersonality=yes
# ionice -c3 and nice are idle and lower priorities, never realtime.
RestrictRealtime=yes
SystemCallArchitectures=native
# Left out on purpose: ProtectHome (the key, the dumps and the dev server's state default to
# /root), PrivateDevices, RestrictNamespaces, ProtectControlGroups and ProtectKernelTunables
# (podman as docker.command creates namespaces, joins cgroups and sets sysctls; the drill's
# throwaway PostgreSQL runs in a network namespace of its own: unshare --net),
# PrivateNetwork (NAS, Temporal), a capability bounding set (root's file access over the whole
# library), UMask=077 (restored library files must stay readable by Immich's container user;
# dumps and the key are written owner-only anyway).

[Install]
WantedBy=multi-user.target
`;
}
