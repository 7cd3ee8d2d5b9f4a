"""A private, real libvirtd for tests and the lab (``make run``, ``vcenter lab``).

What this module decides:
- Every lab "host" is one libvirtd running in its own mount namespace. Inside it, private
  directories of ``workdir`` are bind-mounted over the daemon's fixed paths
  (/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt), so two
  daemons on one machine never share a socket, a pid file, a domain config or a QEMU
  capabilities cache. Nothing is mounted in the root namespace: when the last process of the
  namespace exits, its mounts vanish with it.
- Clients in the root namespace reach the daemon through the backing directory of the bind
  mount: ``qemu+unix:///system?socket=<workdir>/run/libvirt/libvirt-sock``; with ``tcp_port``
  the daemon also listens (no auth, lab network only) at ``qemu+tcp://<addr>:<port>/system``,
  and, once the host has its certificate from the cluster CA (/etc/pki, private per daemon),
  on TLS at ``qemu+tls://<addr>/system`` (port 16514).
- A daemon is started (``start``) when it answers on its unix socket and, when its config
  has it listen on TLS, when its network namespace has a socket listening on the TLS port:
  whoever restarts a daemon with its first certificate can dial it over TLS right after.
- QEMU processes inherit the daemon's mount namespace (qemu.conf ``namespaces = []``), which
  is how ``stop()`` finds every QEMU a daemon started even when its pid file is gone.

Vocabulary: workdir = the host's private root on the machine; name = the host's name, from
which its stable ``host_uuid`` is derived.

Inside a lab host (vcenter.lab.hosts) the daemon does not make a namespace of its own: ``enter``
is an argv prefix that runs a command inside the host (its network, mount, UTS and cgroup
namespaces, moved into its cgroup), whose mount namespace already carries the bind mounts of
``mount_commands()``, so that the host's agent and QEMUs see the same /run/libvirt. Then
``stop()`` kills only the daemon and its QEMUs; the host owns the namespace.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# The daemon's fixed paths and the workdir subdirectory that backs each one.
_BIND_MOUNTS: dict[str, str] = {
    "/etc/libvirt": "etc/libvirt",
    # The host's TLS files from the cluster CA, at libvirt's and QEMU's default paths
    # (/etc/pki/CA, /etc/pki/libvirt, /etc/pki/qemu: vcenter.core.host_pki).
    "/etc/pki": "etc/pki",
    "/run/libvirt": "run/libvirt",
    "/var/lib/libvirt": "lib/libvirt",
    "/var/log/libvirt": "log/libvirt",
    "/var/cache/libvirt": "cache/libvirt",
}

# libvirtd.conf's TLS files: libvirt's default paths, where the host's agent writes them
# (vcenter.core.host_pki.pki_files with its default directories).
TLS_CONF: dict[str, str] = {
    "ca_file": "/etc/pki/CA/cacert.pem",
    "crl_file": "/etc/pki/CA/cacrl.pem",
    "cert_file": "/etc/pki/libvirt/servercert.pem",
    "key_file": "/etc/pki/libvirt/private/serverkey.pem",
}

# QEMU capabilities probed by one daemon, copied into the private cache of the next: probing
# costs ~7.5 s per fresh daemon here, reading the cache ~0.1 s. libvirt itself re-validates
# every entry (QEMU binary ctime, libvirt build, kernel, microcode) and re-probes a stale one.
DEFAULT_CAPS_SEED = Path(tempfile.gettempdir()) / "virtcenter-qemu-caps"

TLS_PORT = 16514  # libvirtd's default tls_port

_HOST_UUID_NAMESPACE = uuidlib.UUID("5b0d8a52-1c1e-4d0f-9f7e-6c7a2f3b9d10")


def _conf_str(value: str) -> str:
    """Quote a value for libvirt's conf syntax (a subset of Python/JSON string syntax)."""
    if any(c in value for c in '"\\\n'):
        raise ValueError(f"unsupported character in config value {value!r}")
    return f'"{value}"'


def listening_on(proc_net_tcp: str, port: int) -> bool:
    """Whether a /proc/<pid>/net/tcp (or tcp6) table has a socket in LISTEN state on ``port``
    (columns: sl local_address:port rem_address:port st ...; ports and states in hex, LISTEN
    is 0A)."""
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1].rpartition(":")[2].upper() == f"{port:04X}" and fields[3].upper() == "0A":
            return True
    return False


class PrivateLibvirtd:
    def __init__(
        self,
        workdir: Path,
        name: str,
        tcp_port: int | None = None,
        listen_addr: str = "127.0.0.1",
        start_timeout: float = 15.0,
        caps_seed: Path | None = DEFAULT_CAPS_SEED,
        enter: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.tcp_port = tcp_port
        self.listen_addr = listen_addr
        self.start_timeout = start_timeout
        self.caps_seed = caps_seed
        # A prefix, or a function giving it at start time (a lab host's changes per boot).
        self.enter = enter
        self.host_uuid = str(uuidlib.uuid5(_HOST_UUID_NAMESPACE, name))
        self._proc: subprocess.Popen | None = None
        self._tls_configured = False  # what the last _write_config put in libvirtd.conf
        # Mount namespaces (by inode) our daemons ran in: QEMUs live on in them after a
        # daemon-only kill, and stop() must still find them.
        self._namespaces: set[str] = set()

    # --- paths ----------------------------------------------------------------------------
    def path(self, inside: str) -> Path:
        """The backing path in the root namespace of a path as the daemon sees it."""
        for mount_point, sub in _BIND_MOUNTS.items():
            if inside == mount_point or inside.startswith(mount_point + "/"):
                return self.workdir / sub / inside[len(mount_point) + 1 :]
        raise ValueError(f"{inside} is not inside a private mount")

    @property
    def tls_ready(self) -> bool:
        """Whether the host's TLS files from the cluster CA are all there (the agent writes the
        CRL with the certificate)."""
        return all(self.path(inside).is_file() for inside in TLS_CONF.values())

    @property
    def admin_uri(self) -> str:
        """virt-admin's URI of this daemon, from the root namespace."""
        return f"libvirtd:///system?socket={self.workdir / 'run/libvirt/libvirt-admin-sock'}"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "run/libvirt/libvirt-sock"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "run/libvirt/libvirtd.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "log/libvirt/libvirtd.log"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def tcp_uri(self) -> str | None:
        if self.tcp_port is None:
            return None
        return f"qemu+tcp://{self.listen_addr}:{self.tcp_port}/system"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    # --- set-up ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        for sub in _BIND_MOUNTS.values():
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
        etc = self.workdir / "etc/libvirt"
        lines = [
            'auth_unix_rw = "none"',
            'auth_unix_ro = "none"',
            'unix_sock_group = "root"',
            'unix_sock_rw_perms = "0700"',
            f"host_uuid = {_conf_str(self.host_uuid)}",
            "keepalive_interval = 2",
            "keepalive_count = 3",
            "log_level = 3",
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
        ]
        if self.tcp_port is not None:
            lines += [
                "listen_tcp = 1",
                f"listen_addr = {_conf_str(self.listen_addr)}",
                f"tcp_port = {_conf_str(str(self.tcp_port))}",
                'auth_tcp = "none"',
            ]
        # libvirtd refuses to start on TLS without its files: they come from the cluster CA
        # when the host's agent registered (vcenter.core.host_pki), so a daemon that started
        # before is restarted then (LabHost.listen_tls), as a host's install does.
        tls = self.tcp_port is not None and self.tls_ready
        lines.append(f"listen_tls = {1 if tls else 0}")
        self._tls_configured = tls
        if tls:
            lines += [f"{key} = {_conf_str(inside)}" for key, inside in TLS_CONF.items()]
        (etc / "libvirtd.conf").write_text("\n".join(lines) + "\n")
        qemu = [
            'user = "root"',
            'group = "root"',
            # No virtlogd runs here: QEMU writes its log file itself.
            'stdio_handler = "file"',
            # QEMU stays in the daemon's mount namespace (see module docstring).
            "namespaces = [ ]",
            # No AppArmor/SELinux in the lab; a label failure must not look like a bug of ours.
            'security_driver = "none"',
        ]
        if self.tcp_port is not None:
            qemu += [
                f"migration_address = {_conf_str(self.listen_addr)}",
                f"migration_host = {_conf_str(self.listen_addr)}",
            ]
            # TLS migration streams read QEMU's default directory (/etc/pki/qemu, the host's
            # own through the /etc/pki bind mount); the target checks the source's client
            # certificate too (the source always checks the target's server certificate
            # against the address it dials).
            qemu.append("migrate_tls_x509_verify = 1")
        (etc / "qemu.conf").write_text("\n".join(qemu) + "\n")
        self._write_accounts()

    @property
    def _caps_dir(self) -> Path:
        return self.workdir / "cache/libvirt/qemu/capabilities"

    def _seed_caps(self) -> None:
        if self.caps_seed is None or not self.caps_seed.is_dir() or any(self._caps_dir.glob("*.xml")):
            return
        self._caps_dir.mkdir(parents=True, exist_ok=True)
        for f in self.caps_seed.glob("*.xml"):
            shutil.copy2(f, self._caps_dir / f.name)

    def _save_caps(self) -> None:
        if self.caps_seed is None:
            return
        try:
            self.caps_seed.mkdir(parents=True, exist_ok=True)
            for f in self._caps_dir.glob("*.xml"):
                dest = self.caps_seed / f.name
                if dest.exists() and dest.stat().st_size == f.stat().st_size:
                    continue
                # Copy then rename: several daemons may start at once.
                tmp = dest.with_suffix(f".tmp{os.getpid()}")
                shutil.copy2(f, tmp)
                os.replace(tmp, dest)
        except OSError as e:  # an optimisation only
            log.debug("cannot save QEMU capabilities cache: %s", e)

    def _write_accounts(self) -> None:
        # The QEMU driver resolves its compiled-in default user (Debian: libvirt-qemu) before it
        # reads qemu.conf, and fails when the account is missing (libvirt-daemon-system is not
        # installed here). The daemon gets private copies of passwd/group that have it, so the
        # machine's own account files stay untouched.
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        if not any(line.startswith("libvirt-qemu:") for line in passwd.splitlines()):
            passwd = passwd.rstrip("\n") + "\nlibvirt-qemu:x:64055:64055:libvirt qemu:/var/lib/libvirt:/usr/sbin/nologin\n"
        for grp, gid in (("libvirt-qemu", 64055), ("kvm", 64056), ("libvirt", 64057)):
            if not any(line.startswith(grp + ":") for line in group.splitlines()):
                group = group.rstrip("\n") + f"\n{grp}:x:{gid}:\n"
        (self.workdir / "accounts").mkdir(exist_ok=True)
        (self.workdir / "accounts/passwd").write_text(passwd)
        (self.workdir / "accounts/group").write_text(group)

    @staticmethod
    def mount_commands(root: str = '"$1"') -> list[str]:
        """Shell lines that bind-mount a workdir (``root``, a shell word) over the daemon's
        fixed paths; run them in a private mount namespace. Mount points are created in the
        shared root fs (an empty directory is harmless); what is mounted on them stays private."""
        parts = []
        for mount_point, sub in _BIND_MOUNTS.items():
            parts.append(f"mkdir -p {mount_point}")
            parts.append(f"mount --bind {root}/{sub} {mount_point}")
        parts.append(f"mount --bind {root}/accounts/passwd /etc/passwd")
        parts.append(f"mount --bind {root}/accounts/group /etc/group")
        return parts

    def prepare(self) -> None:
        """Write the config and private directories (before their bind mounts are made)."""
        self._write_config()
        self._seed_caps()

    def _launch_script(self) -> str:
        # Runs inside the new mount namespace (or, with ``enter``, the host's, already mounted).
        parts = ["set -e"]
        if self.enter is None:
            parts += self.mount_commands()
        args = "--pid-file /run/libvirt/libvirtd.pid --config /etc/libvirt/libvirtd.conf"
        if self.tcp_port is not None:
            args += " --listen"
        parts.append(f"exec libvirtd {args}")
        return "\n".join(parts)

    # --- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the daemon (no-op when ours is running) and wait until it answers."""
        if self.pid is not None:
            return
        self.prepare()
        other = self._pid_from_file()
        if other is not None:
            raise RuntimeError(f"a libvirtd (pid {other}) already runs on {self.workdir}")
        # A stale socket from a killed daemon would be mistaken for a live one. The pid file
        # stays: libvirtd locks it, which is what keeps two daemons off one workdir.
        for stale in (self.socket_path, self.workdir / "run/libvirt/libvirt-sock-ro", self.workdir / "run/libvirt/libvirt-admin-sock"):
            stale.unlink(missing_ok=True)
        out = open(self.workdir / "libvirtd.stdout", "ab")
        t0 = time.monotonic()
        # `unshare` without --fork execs in place, so Popen's pid is libvirtd's pid.
        # `nsenter` (no --fork) execs in place too.
        if self.enter is None:
            prefix = ["unshare", "--mount", "--propagation", "private"]
        else:
            prefix = list(self.enter() if callable(self.enter) else self.enter)
        self._proc = subprocess.Popen(
            [*prefix, "sh", "-c", self._launch_script(), "libvirtd-launch", str(self.workdir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = t0 + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"libvirtd {self.name} exited with {self._proc.returncode}; see {self.workdir / 'libvirtd.stdout'} and {self.log_file}")
            # The first call of a fresh daemon probes QEMU's capabilities (seconds), so the
            # probe gets all the time that is left rather than a short timeout of its own.
            if self.socket_path.exists() and self._answers(max(0.5, deadline - time.monotonic())):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"libvirtd {self.name} did not answer within {self.start_timeout}s")
            time.sleep(0.05)
        # Answering on the unix socket is not listening on TLS: a host restarted with its first
        # certificate is dialled over TLS (migrations, tests) as soon as start() returns.
        while self._tls_configured and not self._tls_listening(self._proc.pid):
            if self._proc.poll() is not None:
                raise RuntimeError(f"libvirtd {self.name} exited with {self._proc.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"libvirtd {self.name} did not listen on TLS port {TLS_PORT} within {self.start_timeout}s; see {self.log_file}")
            time.sleep(0.05)
        # The namespace is final once the daemon answers (the pid is the same process). Never
        # record our own namespace: stop() kills everything in the recorded ones.
        try:
            ns = os.readlink(f"/proc/{self._proc.pid}/ns/mnt")
            if ns != os.readlink("/proc/self/ns/mnt"):
                self._namespaces.add(ns)
        except OSError:
            pass
        self.started_in = time.monotonic() - t0
        self._save_caps()
        log.info("libvirtd %s up in %.2fs at %s", self.name, self.started_in, self.uri)

    def _tls_listening(self, pid: int) -> bool:
        """Whether the daemon's network namespace has a socket listening on the TLS port."""
        for table in ("tcp", "tcp6"):
            try:
                if listening_on(Path(f"/proc/{pid}/net/{table}").read_text(), TLS_PORT):
                    return True
            except OSError:
                continue
        return False

    def _pid_from_file(self) -> int | None:
        """The pid of a live libvirtd named by our pid file (e.g. left by a crashed test run)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_name(pid) == "libvirtd" else None

    def _answers(self, timeout: float) -> bool:
        try:
            return subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True, timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def kill_daemon(self, sig: int = signal.SIGKILL) -> None:
        """Kill only libvirtd, as a daemon crash would: the guests keep running."""
        if self._proc is None:
            # Not started by this object (another process, a crashed run): go by the pid file.
            pid = self._pid_from_file()
            if pid is not None:
                try:
                    self._namespaces.add(os.readlink(f"/proc/{pid}/ns/mnt"))
                    os.kill(pid, sig)
                except OSError:
                    pass
                for _ in range(100):
                    if not process_name(pid):
                        break
                    time.sleep(0.05)
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            self._proc.wait(10)
        self._proc = None

    def restart_daemon(self) -> None:
        """Kill only libvirtd and start a new one; it re-attaches the running guests."""
        self.kill_daemon()
        self.start()

    def qemu_pids(self) -> list[int]:
        """QEMU processes of this host: from pid files and from our mount namespaces."""
        pids: set[int] = set()
        for pf in (self.workdir / "run/libvirt/qemu").glob("*.pid"):
            try:
                pid = int(pf.read_text().strip())
            except (OSError, ValueError):
                continue
            if process_name(pid).startswith("qemu"):
                pids.add(pid)
        for pid in _pids_in_namespaces(self._namespaces):
            if process_name(pid).startswith("qemu"):
                pids.add(pid)
        return sorted(pids)

    def stop(self) -> None:
        """Kill libvirtd and every QEMU it started; idempotent."""
        self.kill_daemon()
        for _ in range(50):
            victims = set(self.qemu_pids())
            if self.enter is None:  # the namespace is ours: everything in it goes
                victims |= set(_pids_in_namespaces(self._namespaces))
            victims.discard(os.getpid())
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        else:
            log.warning("processes of libvirtd %s survived SIGKILL: %s", self.name, victims)
        # With every process gone the namespaces (and their mounts) are gone.
        self._namespaces.clear()

    def __enter__(self) -> "PrivateLibvirtd":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def process_name(pid: int) -> str:
    """The process name, or "" for a process that is gone or a zombie (nothing to kill)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
    comm, _, rest = stat.partition(" (")[2].rpartition(") ")
    return "" if rest[:1] in ("Z", "X") else comm


def _pids_in_namespaces(namespaces: set[str]) -> list[int]:
    namespaces = set(namespaces) - {os.readlink("/proc/self/ns/mnt")}
    if not namespaces:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/mnt") in namespaces and process_name(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
