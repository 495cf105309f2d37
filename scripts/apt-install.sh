# apt_install PACKAGE...: sourced by setup.sh; a file of its own so that a test can run it with
# stand-ins for apt-get and the postgresql-common tools on PATH.

clusters() { if command -v pg_lsclusters >/dev/null 2>&1; then pg_lsclusters -h | awk '{print $1, $2}'; fi; }

apt_install() {
  local before
  before=$(clusters)
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  # The Debian package creates and starts a cluster the project never uses: that one is stopped,
  # no other (on a host without Docker, a cluster that ran before may be Immich's own database).
  clusters | awk 'NR == FNR { seen[$0]; next } !($0 in seen)' <(printf '%s\n' "$before") - | while read -r v c; do
    pg_ctlcluster "$v" "$c" stop 2>/dev/null || true
  done
}
