#!/bin/sh
# Install virtcenter's agent on a Debian 12 KVM host, as root, in one command:
#
#   ./install-host.sh --server https://vcenter.example:8080 --registration-token TOKEN \
#       [--api-thumbprint SHA256 | --api-ca FILE] [--redis-url rediss://...] \
#       [--address 192.0.2.11] --wheel FILE [--no-packages] [--no-start]
#
# What it does (docs/operations.md, "Adding a host", says why each step):
#  1. Debian packages: libvirt (daemon, QEMU), and Debian's own libvirt binding for Python
#     (python3-libvirt 9.0), so that no compiler is needed on a hypervisor.
#  2. /opt/virtcenter: a virtual environment that sees that binding (--system-site-packages),
#     with virtcenter's wheel installed (`pip wheel --no-deps .` in the repository builds it;
#     its dependencies come from PyPI or the index pip is configured with).
#  3. /etc/virtcenter/agent.env (mode 0600): the server's URL, how to trust its certificate,
#     the Redis URL, the one-time registration token (used once, at the agent's first start).
#  4. libvirt for the cluster: libvirtd's TLS listener (listen_tls in libvirtd.conf;
#     libvirtd-tls.socket under systemd) and TLS migration streams that verify the peer
#     (qemu.conf), with the certificate the agent gets from the cluster CA.
#  5. The systemd unit virtcenter-agent.service, enabled and started, where systemd runs; where
#     it does not (containers, the lab's hosts) the agent is left to be started as
#     `/opt/virtcenter/bin/vcenter agent`, under its own supervisor.
# Idempotent: run again, it reinstalls the wheel and rewrites the settings it was given.
set -eu

PREFIX=/opt/virtcenter
ETC=/etc/virtcenter
UNIT_DIR=/etc/systemd/system
HERE="$(cd "$(dirname "$0")" && pwd)"
# Debian's interpreter: the one python3-libvirt is built for (not whatever python3 is first on PATH)
PY=/usr/bin/python3

SERVER="" TOKEN="" THUMBPRINT="" API_CA="" REDIS_URL="" ADDRESS="" WHEEL=""
PACKAGES=yes START=yes

die() { echo "install-host: $*" >&2; exit 2; }
say() { echo "install-host: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER="${2:?}"; shift 2 ;;
    --registration-token) TOKEN="${2:?}"; shift 2 ;;
    --api-thumbprint) THUMBPRINT="${2:?}"; shift 2 ;;
    --api-ca) API_CA="${2:?}"; shift 2 ;;
    --redis-url) REDIS_URL="${2:?}"; shift 2 ;;
    --address) ADDRESS="${2:?}"; shift 2 ;;
    --wheel) WHEEL="${2:?}"; shift 2 ;;
    --no-packages) PACKAGES=no; shift ;;
    --no-start) START=no; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown option $1 (--help lists them)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root"
[ -n "$SERVER" ] || die "--server URL is required"
case "$SERVER" in http://*|https://*) ;; *) die "--server must be an http(s) URL: $SERVER" ;; esac
[ -n "$TOKEN" ] || [ -s "$ETC/agent.env" ] || die "--registration-token is required on the first install"
[ -z "$API_CA" ] || [ -r "$API_CA" ] || die "--api-ca $API_CA is not readable"
[ -n "$WHEEL" ] || die "--wheel FILE is required"
[ -r "$WHEEL" ] || die "wheel $WHEEL is not readable"
UNIT="$HERE/systemd/virtcenter-agent.service"
[ -r "$UNIT" ] || die "$UNIT is missing (run this script from the repository's deploy/)"

# 1. Debian packages
if [ "$PACKAGES" = yes ]; then
  say "Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    libvirt-daemon-system qemu-system-x86 qemu-utils python3-venv python3-libvirt iproute2 >/dev/null
fi
"$PY" -c 'import libvirt' 2>/dev/null || die "python3-libvirt is not installed (drop --no-packages)"

# 2. the virtual environment and the wheel
if [ ! -x "$PREFIX/bin/python" ]; then
  say "virtual environment in $PREFIX"
  "$PY" -m venv --system-site-packages "$PREFIX"
fi
say "installing $(basename "$WHEEL")"
# The wheel itself always replaces the installed copy (a rebuilt wheel of the same version,
# a developer's or a hotfix, would otherwise count as "already satisfied"); then its
# dependencies, installed or upgraded only where missing or too old.
"$PREFIX/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
"$PREFIX/bin/pip" install -q --disable-pip-version-check "$WHEEL"
"$PREFIX/bin/python" -c 'import libvirt, workers.agent.main' || die "the agent does not import in $PREFIX"

# 3. settings (kept across runs: a value not given again stays as it was)
install -d -m 0755 "$ETC"
install -d -m 0700 /var/lib/virtcenter /var/lib/virtcenter/agent
ENV_FILE="$ETC/agent.env"
[ -e "$ENV_FILE" ] || install -m 0600 /dev/null "$ENV_FILE"
chmod 0600 "$ENV_FILE"
set_setting() { # NAME VALUE: replace or append NAME=VALUE in agent.env
  tmp="$(mktemp "$ETC/.agent.env.XXXXXX")"
  grep -v "^$1=" "$ENV_FILE" > "$tmp" || true
  printf '%s=%s\n' "$1" "$2" >> "$tmp"
  chmod 0600 "$tmp" && mv "$tmp" "$ENV_FILE"
}
set_setting VCENTER_PUBLIC_URL "$SERVER"
[ -z "$TOKEN" ] || set_setting VCENTER_AGENT_REGISTRATION_TOKEN "$TOKEN"
[ -z "$THUMBPRINT" ] || set_setting VCENTER_API_THUMBPRINT "$THUMBPRINT"
if [ -n "$API_CA" ]; then
  install -m 0644 "$API_CA" "$ETC/api-ca.pem"
  set_setting VCENTER_API_CA "$ETC/api-ca.pem"
fi
[ -z "$REDIS_URL" ] || set_setting VCENTER_REDIS_URL "$REDIS_URL"
[ -z "$ADDRESS" ] || set_setting VCENTER_AGENT_ADDRESS "$ADDRESS"

# 4. libvirt for the cluster: libvirtd's TLS listener (port 16514) and QEMU's TLS migration
# streams, both with the host's certificate from the cluster CA. libvirt's default paths are
# kept (/etc/pki/CA/cacert.pem, cacrl.pem, /etc/pki/libvirt/, /etc/pki/qemu/): the agent
# writes them after its registration. A libvirtd that listens on TLS cannot start without
# them, so the listener takes effect at libvirtd's first (re)start after the agent installed
# the first certificate (docs/operations.md, "Adding a host").
set_conf() { # FILE KEY VALUE: "KEY = VALUE" in a libvirt config file, replacing the key's line (or its commented default)
  [ -e "$1" ] || { install -d "$(dirname "$1")"; install -m 0644 /dev/null "$1"; }
  tmp="$(mktemp "$1.XXXXXX")"
  grep -v -E "^#?[[:space:]]*$2[[:space:]]*=" "$1" > "$tmp" || true
  printf '%s = %s\n' "$2" "$3" >> "$tmp"
  chmod 0644 "$tmp" && mv "$tmp" "$1"
}
set_conf /etc/libvirt/libvirtd.conf listen_tls 1          # where libvirtd runs with --listen (no systemd)
set_conf /etc/libvirt/qemu.conf migrate_tls_x509_verify 1  # the migration target checks the source's certificate too

# 5. the service
install -d "$UNIT_DIR"
install -m 0644 "$UNIT" "$UNIT_DIR/virtcenter-agent.service"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  # under systemd the TLS listener is a socket unit (listen_tls is ignored there)
  systemctl enable libvirtd-tls.socket
  if [ "$START" = yes ]; then
    systemctl enable --now libvirtd.service
    systemctl enable virtcenter-agent.service
    systemctl restart virtcenter-agent.service
    say "started: journalctl -u virtcenter-agent shows its registration"
  else
    say "installed; start with: systemctl enable --now virtcenter-agent"
  fi
else
  say "systemd is not running here: start the agent with"
  say "  set -a; . $ENV_FILE; set +a; $PREFIX/bin/vcenter agent"
fi
say "installed: $("$PREFIX/bin/vcenter" --version 2>/dev/null | tail -n 1)"
