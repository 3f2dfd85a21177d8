#!/usr/bin/env bash
# Nubis one-command setup for a Debian machine (run as root).
#
#   ./setup.sh serve   install what is missing, start libvirt, run Nubis in the foreground
#   ./setup.sh test    install what is missing, start libvirt + PostgreSQL, run the test suite
#
# Idempotent: a second run installs nothing and only starts what is not running.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
ROOT=$(pwd)
VENV=${NUBIS_VENV:-$ROOT/.venv}

DEBIAN_PACKAGES=(
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils dnsmasq-base busybox-static linux-image-amd64
  syslinux syslinux-common isolinux mtools dosfstools genisoimage scrub
  iptables iproute2
)
TEST_DEBIAN_PACKAGES=(
  postgresql openssh-client chromium
  # the storage engines the tests start (a one-node Ceph cluster, an iSCSI target),
  # and what a host needs to use them: libvirt's rbd and iscsi-direct pools, QEMU's
  # librbd and libiscsi block drivers; Ceph's rbd tool (ceph-common), with which the
  # control plane clones RBD snapshots
  ceph-mon ceph-mgr ceph-osd ceph-common tgt
  libvirt-daemon-driver-storage-rbd libvirt-daemon-driver-storage-iscsi-direct qemu-block-extra
)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # a libvirtd that ran before a storage driver was installed does not load it
    if [[ " ${missing[*]}" == *" libvirt-daemon-driver-"* ]] && pgrep -x libvirtd >/dev/null; then
      log "restarting libvirtd: it loads the new drivers at start"
      if have_systemd; then systemctl restart libvirtd; else pkill -x libvirtd; sleep 1; fi
    fi
  fi
}

have_systemd() { [ -d /run/systemd/system ]; }

start_daemon() {  # start_daemon NAME ARGS...
  local name=$1; shift
  if have_systemd; then
    systemctl is-active --quiet "$name" || { log "starting $name (systemd)"; systemctl start "$name"; }
  elif ! pgrep -x "$name" >/dev/null; then
    log "starting $name"
    "$name" "$@"
  fi
}

start_libvirt() {
  start_daemon virtlogd -d
  start_daemon libvirtd -d
  for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "libvirtd did not answer on qemu:///system"; return 1
}

python_env() {
  local stamp="$VENV/.nubis-deps" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    python3 -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python dependencies"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e ".[test]"
    echo "$want" >"$stamp"
  fi
}

web_assets() {  # the web console's front-end libraries, pinned by package-lock.json
  local dir=src/nubis/api/web stamp want
  stamp=$dir/node_modules/.nubis-lock
  command -v npm >/dev/null || install_debian_packages npm
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the web console's npm packages"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" >"$stamp"
  fi
}

start_postgres() {
  local ver cluster=main
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if ! pg_lsclusters -h | awk '{print $1" "$2" "$4}' | grep -q "^$ver $cluster online"; then
    log "starting PostgreSQL $ver"
    pg_ctlcluster "$ver" "$cluster" start
  fi
  local port
  port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
  su postgres -c "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='nubis'\"" | grep -q 1 ||
    su postgres -c "psql -p $port -qc \"CREATE ROLE nubis LOGIN PASSWORD 'nubis' CREATEDB\""
  su postgres -c "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname='nubis_test'\"" | grep -q 1 ||
    su postgres -c "psql -p $port -qc 'CREATE DATABASE nubis_test OWNER nubis'"
  export NUBIS_TEST_DATABASE_URL=${NUBIS_TEST_DATABASE_URL:-postgresql+psycopg://nubis:nubis@127.0.0.1:$port/nubis_test}
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    serve)
      install_debian_packages "${DEBIAN_PACKAGES[@]}"
      python_env
      web_assets
      start_libvirt
      exec "$VENV/bin/nubis" serve "$@"
      ;;
    test)
      install_debian_packages "${DEBIAN_PACKAGES[@]}" "${TEST_DEBIAN_PACKAGES[@]}"
      python_env
      web_assets
      start_libvirt
      start_postgres
      if [ $# -gt 0 ]; then  # ./setup.sh test <pytest arguments>: just those tests
        "$VENV/bin/pytest" -q "$@"
        return
      fi
      # each tier stops the run when it fails: the fast ones first
      log "tier 1 of 3: lint, import contracts, module sizes, types"
      "$VENV/bin/ruff" check src tests bench scripts
      "$VENV/bin/ruff" format --check src tests bench scripts
      "$VENV/bin/lint-imports" --no-cache
      "$VENV/bin/python" scripts/check_module_size.py
      VENV="$VENV" scripts/check_types.sh
      log "tier 2 of 3: unit tests (in-process; SQLite, and PostgreSQL for the database tests)"
      "$VENV/bin/pytest" -q -n 2 -m "not integration" --durations=10 tests
      log "tier 3 of 3: integration and browser tests (real libvirtd, QEMU guests, Chromium)"
      # every test's duration, for balancing the workers: test-artifacts/integration.xml
      "$VENV/bin/pytest" -q -n 2 --dist loadfile --no-loadscope-reorder -m integration \
        --durations=30 \
        --junitxml=test-artifacts/integration.xml tests
      ;;
    *)
      echo "usage: $0 serve|test [args...]" >&2
      exit 2
      ;;
  esac
}

main "$@"
