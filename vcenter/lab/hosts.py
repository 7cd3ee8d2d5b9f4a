"""Lab hosts: this one machine cut into N small libvirt/QEMU hypervisor hosts.

What this module decides:
- A lab host ``<name>`` is a network namespace ``vclab-<name>`` on the lab bridge (see
  vcenter.lab.network; address 10.213.0.<10+i>), an *anchor* process that holds the host's
  own mount, UTS (hostname = name) and cgroup namespaces, and a cgroup subtree
  ``<hierarchy>/<our cgroup>/vclab/<name>`` in every cgroup v1 hierarchy (and the v2 one).
  The anchor is moved into the subtree before it unshares its cgroup namespace, so
  everything inside sees the subtree as its cgroup root: libvirtd makes ``machine/qemu-1-x``
  under it and two hosts never collide. Inside, the anchor mounts a sysfs of the host's
  network namespace, every cgroup hierarchy (cgroupns-relative), the private libvirt
  directories of its PrivateLibvirtd, the directories a host's install writes
  (/etc/virtcenter, /var/lib/virtcenter, /etc/systemd/system: backed by the host's workdir,
  see ``LabHost.path``) with /opt/virtcenter an overlay on the lab's host image
  (vcenter.lab.install), so deploy/install-host.sh runs inside with its default paths, and a
  private /run (``<workdir>/run``, emptied at power-on).
- Everything of a host runs inside it by :meth:`LabHost.enter_argv`: moved into the host's
  cgroup, then ``nsenter`` into the anchor's namespaces. Its libvirtd listens on TCP at the
  host's address (no auth: the lab network has no uplink), with its own host UUID and
  migration address. The host's agent reaches Redis and the API only at 10.213.0.1.
- A host is powered off by killing every process of its cgroup (frozen first, so nothing
  forks away), anchor included: its namespaces and mounts vanish like a machine's RAM.
  Powered on again, it gets a new anchor, a clean /run/libvirt, a fresh libvirtd (persistent
  domain definitions survive like a disk, QEMUs do not), its datastores and its boot processes.
- The lab's state is a JSON file in the workdir (default /run/virtcenter-lab), so ``down``,
  ``status`` and faults work from any process, and ``up`` after a crash cleans up first, by
  the state and by name (namespaces, links, cgroups named vclab*).

Vocabulary: capacity = what a host declares it has (all hosts share this machine's CPUs and
memory; recorded, not enforced); boot process = a process (the agent) started again when
the host powers on; datastore = a loop-mounted ext4 image mounted at the same path in the
hosts that share it.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vcenter.lab import network as net
from vcenter.lab.install import INSTALL_DIRS, host_image, private_mounts
from vcenter.lab.libvirtd import PrivateLibvirtd, process_name

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("/run/virtcenter-lab")
BRIDGE = "vclab0"
# The lab's physical switch: every host's "physical NIC" UPLINK_NIC is cabled to it (a veth
# whose other end is a port of this bridge). No address, no route: only guests' frames cross
# it, as on a real access switch. A switch made through the product names UPLINK_NIC.
UPLINK_SWITCH = "vclabsw0"
UPLINK_NIC = "eth1"
SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"
PREFIX = "vclab"
LIBVIRT_TCP_PORT = 16509
_NAME = re.compile(r"^[a-z][a-z0-9]{0,8}$")  # "vclab-" + name fits an interface name
_DS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def host_address(index: int) -> str:
    """Address of the index-th host (1-based): 10.213.0.11, .12, ..."""
    if not 1 <= index <= 200:
        raise ValueError("host index must be within 1..200")
    return str(ipaddress.ip_network(SUBNET)[10 + index])


@dataclass(frozen=True)
class Capacity:
    cpus: int = 2
    memory_mib: int = 4096


# --- cgroups --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str  # in the root namespace, e.g. /sys/fs/cgroup/cpu
    controllers: str  # as in /proc/self/cgroup: "cpu", "name=systemd"; "" for cgroup v2
    path: str  # this process's cgroup in it, e.g. / or /process_api/abc

    @property
    def base(self) -> Path:
        """The lab's directory in this hierarchy (beside our own cgroup, never above it)."""
        return Path(self.mountpoint) / self.path.lstrip("/") / PREFIX

    @property
    def mount_args(self) -> list[str]:
        if not self.controllers:
            return ["-t", "cgroup2", "cgroup2"]
        opts = self.controllers if any(not c.startswith("name=") for c in self.controllers.split(",")) else "none," + self.controllers
        return ["-t", "cgroup", "-o", opts, "cgroup"]


def cgroup_hierarchies() -> list[Hierarchy]:
    """Every mounted cgroup hierarchy this process belongs to, with its mount point."""
    mounts = []  # (fstype, superopts set, root, mountpoint)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if rfields and rfields[0] in ("cgroup", "cgroup2"):
            mounts.append((rfields[0], set(rfields[2].split(",")), fields[3], fields[4]))
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for fstype, opts, root, mountpoint in mounts:
            if (not controllers and fstype == "cgroup2") or (controllers and fstype == "cgroup" and set(controllers.split(",")) <= opts):
                if root != "/" and path.startswith(root):
                    path = path[len(root) :] or "/"
                found.append(Hierarchy(mountpoint, controllers, path))
                break
    return found


def _cgroup_pids(dirs: Sequence[Path]) -> set[int]:
    pids: set[int] = set()
    for top in dirs:
        for dirpath, _, files in os.walk(top):
            try:
                text = Path(dirpath, "cgroup.procs").read_text()
            except OSError:
                continue
            pids.update(int(p) for p in text.split())
    pids.discard(os.getpid())
    return pids


def _netns_pids(netns: str) -> set[int]:
    try:
        ino = os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return set()
    want = f"net:[{ino}]"
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/net") == want:
                    found.add(int(entry.name))
            except OSError:
                pass
    found.discard(os.getpid())
    return found


def _kill_all(dirs: Sequence[Path], netns: str | None = None, timeout: float = 10.0) -> None:
    """SIGKILL every process in the cgroup subtrees ``dirs`` (and in ``netns``), frozen first
    where a freezer hierarchy is among them, until none is left or ``timeout`` passes."""
    freezers = [d for d in dirs if (d / "freezer.state").exists()]
    for f in freezers:
        try:
            (f / "freezer.state").write_text("FROZEN")
        except OSError:
            pass
    deadline = time.monotonic() + 2
    while freezers and time.monotonic() < deadline:
        if all((f / "freezer.state").read_text().strip() != "FREEZING" for f in freezers):
            break
        time.sleep(0.01)
    deadline = time.monotonic() + timeout
    thawed = False
    while True:
        victims = {p for p in _cgroup_pids(dirs) | (_netns_pids(netns) if netns else set()) if process_name(p)}
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not thawed:  # killed tasks of a frozen v1 cgroup die only once thawed
            for f in freezers:
                try:
                    (f / "freezer.state").write_text("THAWED")
                except OSError:
                    pass
            thawed = True
        if not victims:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes survived SIGKILL: {sorted(victims)}")
        time.sleep(0.05)


def _rmdir_tree(top: Path, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its children, deepest first (cgroupfs takes only rmdir)."""
    if not top.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        failed = None
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                failed = e
        if not top.exists():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot remove cgroup {top}: {failed}")
        time.sleep(0.05)


def _make_cgroup(path: Path) -> None:
    """mkdir -p for a cgroup, giving new cpuset groups their parent's CPUs and memory nodes."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        for f in ("cpuset.cpus", "cpuset.mems"):
            if (d / f).exists() and not (d / f).read_text().strip():
                (d / f).write_text((d.parent / f).read_text())


# --- the lab --------------------------------------------------------------------------------
class LabHost:
    """One host of a :class:`Lab`: a view of its entry in the lab state."""

    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self._popen: dict[str, subprocess.Popen] = {}
        self._libvirtd: PrivateLibvirtd | None = None

    @property
    def record(self) -> dict:
        return self.lab.state["hosts"][self.name]

    # --- facts ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.record["address"]

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def root_link(self) -> str:
        """The bridge-side end of the host's veth (in the root namespace)."""
        return f"{PREFIX}-{self.name}"

    inner_link = "eth0"

    @property
    def uplink_root_link(self) -> str:
        """The lab switch's end of the host's uplink NIC (in the root namespace)."""
        return f"{PREFIX}u{self.name}"

    uplink_nic = UPLINK_NIC

    @property
    def capacity(self) -> Capacity:
        return Capacity(**self.record["capacity"])

    @property
    def workdir(self) -> Path:
        return Path(self.record["workdir"])

    @property
    def uri(self) -> str:
        """How the lab's own tools reach the host's libvirtd over the lab network (no auth)."""
        return f"qemu+tcp://{self.address}/system"

    @property
    def tls_uri(self) -> str:
        """How other hosts' libvirtd reach this one for migrations: TLS with certificates of
        the cluster CA (the host's libvirt_uri in the inventory)."""
        return f"qemu+tls://{self.address}/system"

    @property
    def local_uri(self) -> str:
        """The host's libvirtd through its unix socket, as seen from the root namespace."""
        return self.libvirtd.uri

    @property
    def host_uuid(self) -> str:
        return self.libvirtd.host_uuid

    def path(self, inside: str) -> Path:
        """The backing path in the root namespace of a path as the host sees it, for the
        host's private directories (its install's and its libvirtd's)."""
        for mount_point in INSTALL_DIRS:
            if inside == mount_point or inside.startswith(mount_point + "/"):
                return self.workdir / "install" / mount_point.strip("/").replace("/", "-") / inside[len(mount_point) + 1 :]
        return self.libvirtd.path(inside)

    @property
    def cgroup_dirs(self) -> list[Path]:
        return [Path(d) for d in self.record["cgroups"]]

    @property
    def anchor_pid(self) -> int | None:
        pid = self.record.get("anchor_pid")
        if not pid or process_name(pid) != "sleep":
            return None
        try:  # pid reuse: the anchor is the sleep in our network namespace
            if os.readlink(f"/proc/{pid}/ns/net") != f"net:[{os.stat(f'/run/netns/{self.netns}').st_ino}]":
                return None
        except OSError:
            return None
        return pid

    @property
    def powered(self) -> bool:
        return self.anchor_pid is not None

    @property
    def libvirtd(self) -> PrivateLibvirtd:
        if self._libvirtd is None:
            self._libvirtd = PrivateLibvirtd(self.workdir, self.name, tcp_port=LIBVIRT_TCP_PORT, listen_addr=self.address, enter=lambda: self.enter_argv("/"))
        return self._libvirtd

    # --- running things inside ----------------------------------------------------------------
    def enter_argv(self, cwd: str = "/") -> list[str]:
        """An argv prefix that runs a command inside this host: moved into its cgroup, then
        into its network, mount, UTS and cgroup namespaces (execs in place, same pid)."""
        pid = self.anchor_pid
        if pid is None:
            raise RuntimeError(f"lab host {self.name} is powered off")
        moves = "; ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.cgroup_dirs)
        return ["sh", "-c", f'{moves}; exec "$@"', "vclab-enter", "nsenter", "-t", str(pid), "--net", "--mount", "--uts", "--cgroup", f"--wd={cwd}", "--"]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30, input: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a short command in the host's namespaces (not its cgroup): admin work; with
        ``env`` in that environment only (an administrator's shell on the host)."""
        pid = self.anchor_pid
        if pid is None:
            raise RuntimeError(f"lab host {self.name} is powered off")
        argv = ["nsenter", "-t", str(pid), "--net", "--mount", "--uts", "--", *argv]
        if env is None:
            return net.run_local(argv, check=check, timeout=timeout, input=input)
        return subprocess.run(argv, check=check, timeout=timeout, input=input, env=dict(env), capture_output=True, text=True)

    @property
    def net_run(self) -> net.Runner:
        """A runner for vcenter.lab.network functions in this host's network namespace."""
        return net.netns_runner(self.netns)

    def start_process(self, argv: Sequence[str], env: Mapping[str, str] | None = None, name: str = "agent", cwd: str | None = None, boot: bool = True) -> int:
        """Start ``argv`` inside the host (e.g. ``python -m vcenter.cli agent`` with its
        VCENTER_* variables; ``env`` is the whole environment, default this process's). With
        ``boot`` it is started again whenever the host powers on. Output goes to
        ``<host workdir>/<name>.log``. Returns the pid."""
        self.stop_process(name)
        cwd = cwd or os.getcwd()
        env = dict(os.environ if env is None else env)
        with open(self.workdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(self.enter_argv(cwd) + list(argv), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._popen[name] = proc
        self.record["processes"][name] = {"pid": proc.pid, "argv": list(argv), "env": env, "cwd": cwd, "boot": boot}
        self.lab._save()
        return proc.pid

    def process_pid(self, name: str) -> int | None:
        entry = self.record["processes"].get(name)
        if not entry:
            return None
        pid = entry["pid"]
        self._reap()
        return pid if process_name(pid) and pid in _cgroup_pids(self.cgroup_dirs) else None

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        pid = self.process_pid(name)
        if pid is not None:
            try:
                os.killpg(pid, sig)
            except OSError:
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self.process_pid(name) is not None:
                if time.monotonic() > deadline:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                    deadline += timeout
                time.sleep(0.05)
        entry = self.record["processes"].get(name)
        if entry and not entry.get("boot"):
            del self.record["processes"][name]
            self.lab._save()

    def pids(self) -> set[int]:
        """Every live process of the host (its cgroup subtree)."""
        return {p for p in _cgroup_pids(self.cgroup_dirs) if process_name(p)}

    def _reap(self) -> None:
        for proc in self._popen.values():
            proc.poll()
        if self._libvirtd is not None and self._libvirtd._proc is not None:
            self._libvirtd._proc.poll()

    # --- power --------------------------------------------------------------------------------
    def power_on(self) -> None:
        """Boot the host: anchor with its namespaces and mounts, libvirtd, datastores, boot
        processes. /run/libvirt starts empty, as after a reboot."""
        if self.powered:
            return
        self._kill_everything()
        run_dir = self.workdir / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        # What a real host's boot makes in /run before any service (Debian's tmpfiles
        # legacy.conf): /run/lock, which /var/lock names; libvirt locks a VM's console pty there
        # (without it: "Couldn't create lock file for device '/dev/pts/N'", no console).
        (run_dir / "lock").mkdir(parents=True)
        os.chmod(run_dir / "lock", 0o1777)
        daemon = self.libvirtd
        daemon._proc = None
        daemon._namespaces.clear()
        daemon.prepare()
        for d in self.cgroup_dirs:
            _make_cgroup(d)
        self._start_anchor()
        if not self.record["net"]["isolated"]:
            net.set_link(self.root_link, True)
        daemon.start()
        self.record["libvirtd_pid"] = daemon.pid
        self.lab._save()
        for ds in self.lab.state["datastores"].values():
            if self.name in ds["hosts"] and self.name not in ds["gone"]:
                self.lab._mount_datastore(ds, self)
        for name, entry in list(self.record["processes"].items()):
            if entry.get("boot"):
                self.start_process(entry["argv"], entry["env"], name=name, cwd=entry["cwd"])

    def _start_anchor(self) -> None:
        setup = [
            "set -e",
            f"hostname {shlex.quote(self.name)}",
            # A sysfs of the host's network namespace (/sys/class/net) ...
            "mount -t sysfs sysfs /sys",
            # ... and the cgroup hierarchies, rooted at the host's subtree by the cgroupns.
            "mount -t tmpfs -o mode=755,size=1m cgroup /sys/fs/cgroup",
        ]
        for h in self.lab.hierarchies:
            target = f"/sys/fs/cgroup/{Path(h.mountpoint).name}"
            setup += [f"mkdir -p {target}", f"mount {' '.join(h.mount_args)} {target}"]
        setup += PrivateLibvirtd.mount_commands(shlex.quote(str(self.workdir)))
        # What the host's install writes, private like a machine's disk (kept across reboots).
        backing = {inside: self.path(inside) for inside in INSTALL_DIRS}
        for d in backing.values():
            d.mkdir(parents=True, exist_ok=True)
        setup += private_mounts(backing)
        image = self.lab.state.get("host_image")
        if image:
            upper, work = self.workdir / "install/opt-up", self.workdir / "install/opt-work"
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            setup += ["mkdir -p /opt/virtcenter", f"mount -t overlay overlay -o {shlex.quote(f'lowerdir={image},upperdir={upper},workdir={work}')} /opt/virtcenter"]
        # A /run of its own, emptied at every power-on, last: the sources above may live under
        # the machine's /run (the lab's default workdir). Its libvirt/ is the directory the
        # /run/libvirt bind above shows, so clients in the root namespace keep reaching the
        # daemon's sockets through the workdir.
        setup.append(f"mount --bind {shlex.quote(str(self.workdir / 'run'))} /run")
        setup.append("exec sleep infinity")
        moves = "; ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.cgroup_dirs)
        script = f"{moves}; exec nsenter --net=/run/netns/{self.netns} unshare --mount --uts --cgroup --propagation private sh -c {shlex.quote(chr(10).join(setup))}"
        with open(self.workdir / "anchor.log", "ab") as out:
            proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._popen["anchor"] = proc
        deadline = time.monotonic() + 10
        while process_name(proc.pid) != "sleep":
            if proc.poll() is not None:
                raise RuntimeError(f"lab host {self.name}: namespace set-up failed; see {self.workdir / 'anchor.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"lab host {self.name}: namespace set-up did not finish")
            time.sleep(0.01)
        self.record["anchor_pid"] = proc.pid
        self.lab._save()

    def power_off(self) -> None:
        """Power loss: SIGKILL every process of the host (agent, libvirtd, QEMU, anchor). Its
        link goes down too: a dead machine answers nothing (no ARP, no TCP reset)."""
        self._kill_everything()
        net.set_link(self.root_link, False)
        self.record["anchor_pid"] = None
        self.record["libvirtd_pid"] = None
        self.lab._save()

    def _kill_everything(self) -> None:
        _kill_all(self.cgroup_dirs)
        self._reap()

    # --- libvirtd alone -----------------------------------------------------------------------
    def crash_libvirtd(self) -> None:
        self.libvirtd.kill_daemon()
        self._reap()

    def restart_libvirtd(self) -> None:
        if self.libvirtd._pid_from_file() is None:
            self.libvirtd._proc = None
            self.libvirtd.start()
            self.record["libvirtd_pid"] = self.libvirtd.pid
            self.lab._save()

    def listen_tls(self) -> bool:
        """Restart libvirtd when the host got its TLS files (from the cluster CA, by its agent)
        and the daemon does not listen on TLS yet: what a host's install does after the
        registration. Guests keep running. Answers whether it restarted."""
        # The running daemon, not its config file, says whether it listens: the host's install
        # writes listen_tls into that file too, for libvirtd's next start.
        pid = self.libvirtd._pid_from_file()
        if not self.libvirtd.tls_ready or (pid is not None and self.libvirtd._tls_listening(pid)):
            return False
        self.crash_libvirtd()
        self.restart_libvirtd()
        return True

    def libvirtd_running(self) -> bool:
        return self.libvirtd._pid_from_file() is not None

    def guests(self, timeout: float = 5) -> list[str] | None:
        """Names of the running domains (None when libvirtd does not answer)."""
        if not self.libvirtd_running():
            return None
        try:
            proc = subprocess.run(["virsh", "-c", self.local_uri, "list", "--name"], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return [line for line in proc.stdout.split() if line] if proc.returncode == 0 else None


_MACHINE_FD: int | None = None  # the machine-wide lab lock, held per process


class Lab:
    """The lab of this machine: create with a workdir, then ``up``/``down``/``status``."""

    def __init__(self, workdir: Path | str = DEFAULT_WORKDIR):
        self.workdir = Path(workdir).resolve()
        self.state_file = self.workdir / "lab.json"
        self.state: dict = self._load()
        self._hosts: dict[str, LabHost] = {}
        self._lock_depth = 0

    # --- state --------------------------------------------------------------------------------
    def _empty_state(self) -> dict:
        hierarchies = [h.__dict__ for h in cgroup_hierarchies()]
        return {"version": 1, "bridge": BRIDGE, "subnet": SUBNET, "gateway": GATEWAY, "hierarchies": hierarchies, "hosts": {}, "datastores": {}, "portgroups": {}}

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return self._empty_state()

    def _save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_file.with_suffix(f".tmp{os.getpid()}")
        # Boot processes' environments (agent tokens) are in here: owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.state_file)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One changer of the lab at a time, across processes (re-entrant within one)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.workdir / "lab.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                self.state = self._load() if self.state_file.exists() else self.state
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def hierarchies(self) -> list[Hierarchy]:
        return [Hierarchy(**h) for h in self.state["hierarchies"]]

    def host(self, name: str) -> LabHost:
        if name not in self.state["hosts"]:
            raise KeyError(f"no lab host {name!r}; hosts: {', '.join(self.state['hosts']) or 'none'}")
        if name not in self._hosts:
            self._hosts[name] = LabHost(self, name)
        return self._hosts[name]

    @property
    def hosts(self) -> list[LabHost]:
        return [self.host(n) for n in self.state["hosts"]]

    # --- up / down ----------------------------------------------------------------------------
    def up(self, n_hosts: int = 3, capacity: Capacity | Sequence[Capacity] = Capacity(), names: Sequence[str] | None = None) -> list[LabHost]:
        """Clean up whatever a previous lab left, then create ``n_hosts`` powered-on hosts."""
        names = list(names) if names else [f"host{i}" for i in range(1, n_hosts + 1)]
        if len(names) != n_hosts or len(set(names)) != n_hosts:
            raise ValueError("need n_hosts distinct names")
        for n in names:
            if not _NAME.match(n):
                raise ValueError(f"invalid host name {n!r} (a letter, then up to 8 of [a-z0-9])")
        caps = [capacity] * n_hosts if isinstance(capacity, Capacity) else list(capacity)
        image = host_image()  # minutes the first time: before the lab is held
        self._hold_machine()
        with self._locked():
            self._cleanup()
            for sub in ("hosts", "images", "datastores", "ca"):  # a new lab starts from blank disks
                shutil.rmtree(self.workdir / sub, ignore_errors=True)
            self.state = self._empty_state()
            self.state["host_image"] = str(image)
            net.check_subnet_free(SUBNET, BRIDGE)
            net.ensure_bridge(BRIDGE, f"{GATEWAY}/24")
            net.ensure_bridge(UPLINK_SWITCH)
            self._save()
            for i, (name, cap) in enumerate(zip(names, caps), start=1):
                workdir = self.workdir / "hosts" / name
                workdir.mkdir(parents=True, exist_ok=True)
                self.state["hosts"][name] = {
                    "address": host_address(i),
                    "capacity": cap.__dict__,
                    "workdir": str(workdir),
                    "cgroups": [str(h.base / name) for h in self.hierarchies],
                    "anchor_pid": None,
                    "libvirtd_pid": None,
                    "processes": {},
                    "net": {"isolated": False, "loss": 0, "kbit": None},
                }
                self._save()
                host = self.host(name)
                run_local = net.run_local
                run_local(["ip", "netns", "add", host.netns])
                net.create_host_link(host.netns, host.root_link, BRIDGE, f"{host.address}/24", host.inner_link)
                net.create_host_nic(host.netns, host.uplink_root_link, UPLINK_SWITCH, host.uplink_nic)
                host.power_on()
        return self.hosts

    # One lab per machine (fixed bridge and subnet). A process that brings a lab up holds this
    # lock until it takes the lab down or exits, so another process's `up` (a second test run,
    # a benchmark) waits instead of tearing down a lab in use. `vcenter lab up` exits at once,
    # so a lab made by hand never blocks anyone.
    MACHINE_LOCK = Path("/run/virtcenter-lab.machine.lock")

    def _hold_machine(self, timeout: float = 1800.0) -> None:
        global _MACHINE_FD
        if _MACHINE_FD is not None:
            return  # this process holds the lab already (any Lab object of it)
        fd = os.open(self.MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.warning("another process holds the lab of this machine; waiting for it")
                    announced = True
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError("the lab of this machine stayed in use by another process")
                time.sleep(0.5)
        _MACHINE_FD = fd

    def _release_machine(self) -> None:
        global _MACHINE_FD
        if _MACHINE_FD is not None:
            os.close(_MACHINE_FD)  # closing drops the flock
            _MACHINE_FD = None

    def down(self) -> None:
        """Remove every namespace, link, process, mount, loop device and cgroup of the lab."""
        with self._locked():
            self._cleanup()
            # The hosts' process logs (agents, libvirtd) outlive the lab, in <workdir>/logs: a
            # failed test's teardown must not take the evidence with it.
            for log_file in sorted((self.workdir / "hosts").glob("*/*.log")):
                (self.workdir / "logs").mkdir(exist_ok=True)
                shutil.move(str(log_file), str(self.workdir / "logs" / f"{log_file.parent.name}-{log_file.name}"))
            for sub in ("hosts", "images", "datastores", "ca"):
                shutil.rmtree(self.workdir / sub, ignore_errors=True)
            self.state_file.unlink(missing_ok=True)
            self.state = self._empty_state()
            self._hosts.clear()
        (self.workdir / "lab.lock").unlink(missing_ok=True)
        try:
            self.workdir.rmdir()
        except OSError:
            pass
        self._release_machine()

    def _cleanup(self) -> None:
        """Tear down by the recorded state and then by name (a crashed run, a lost state)."""
        hierarchies = self.hierarchies or cgroup_hierarchies()
        for name, rec in self.state.get("hosts", {}).items():
            _kill_all([Path(d) for d in rec.get("cgroups", [])], f"{PREFIX}-{name}")
        tops = [h.base for h in hierarchies] + [h.base for h in cgroup_hierarchies()]
        stale = sorted({d for top in set(tops) if top.is_dir() for d in top.iterdir() if d.is_dir()})
        netns = [line.split()[0] for line in net.run_local(["ip", "netns", "list"]).stdout.splitlines() if line.startswith(f"{PREFIX}-")]
        _kill_all(stale)
        for ns in netns:
            _kill_all([], ns)
        for ds in self.state.get("datastores", {}).values():
            if ds.get("loop"):
                net.run_local(["losetup", "-d", ds["loop"]], check=False)
        images = self.workdir / "images"
        if images.is_dir():
            for img in images.glob("*.img"):
                out = net.run_local(["losetup", "-j", str(img)], check=False).stdout
                for line in out.splitlines():
                    net.run_local(["losetup", "-d", line.split(":")[0]], check=False)
        for ns in netns:
            net.run_local(["ip", "netns", "del", ns], check=False)
        links = json.loads(net.run_local(["ip", "-j", "link", "show"]).stdout or "[]")
        for link in links:
            if link["ifname"].startswith(PREFIX):
                net.delete_link(link["ifname"])
        for top in set(tops):
            _rmdir_tree(top)
        for host in self._hosts.values():
            host._reap()

    # --- status -------------------------------------------------------------------------------
    def status(self) -> dict:
        hosts = []
        for h in self.hosts:
            powered = h.powered
            guests = h.guests() if powered else None
            state = "poweredOff" if not powered else ("running" if h.libvirtd_running() else "libvirtdDown")
            hosts.append(
                {
                    "name": h.name,
                    "address": h.address,
                    "state": state,
                    "uri": h.uri,
                    "host_uuid": h.host_uuid,
                    "capacity": h.record["capacity"],
                    "net": h.record["net"],
                    "guests": guests,
                    "processes": {n: h.process_pid(n) for n in h.record["processes"]},
                }
            )
        return {
            "workdir": str(self.workdir),
            "bridge": self.state["bridge"] if hosts else None,
            "gateway": GATEWAY,
            "hosts": hosts,
            "datastores": {n: {k: ds[k] for k in ("path", "size_mib", "hosts", "gone")} for n, ds in self.state["datastores"].items()},
            "portgroups": self.state["portgroups"],
        }

    # --- datastores ---------------------------------------------------------------------------
    def create_datastore(self, name: str, size_mib: int, hosts: Sequence[str], path: str | None = None) -> str:
        """A loop-mounted ext4 filesystem of ``size_mib`` mounted at ``path`` (default
        <workdir>/datastores/<name>) in each of ``hosts``; the same filesystem in all of them.
        Returns the path."""
        if not _DS_NAME.match(name):
            raise ValueError(f"invalid datastore name {name!r}")
        with self._locked():
            if name in self.state["datastores"]:
                raise ValueError(f"datastore {name} exists")
            image = self.workdir / "images" / f"{name}.img"
            image.parent.mkdir(parents=True, exist_ok=True)
            with open(image, "wb") as f:
                f.truncate(size_mib * 1024 * 1024)
            net.run_local(["mkfs.ext4", "-q", "-F", "-L", name[:16], str(image)], timeout=120)
            loop = net.run_local(["losetup", "--find", "--show", str(image)]).stdout.strip()
            mountpoint = path or str(self.workdir / "datastores" / name)
            Path(mountpoint).mkdir(parents=True, exist_ok=True)  # an empty directory in the root ns
            ds = {"name": name, "image": str(image), "loop": loop, "path": mountpoint, "size_mib": size_mib, "hosts": list(hosts), "gone": []}
            self.state["datastores"][name] = ds
            self._save()
            for h in hosts:
                if self.host(h).powered:
                    self._mount_datastore(ds, self.host(h))
            return mountpoint

    def _mount_datastore(self, ds: dict, host: LabHost) -> None:
        # The mount point inside the host: under its private /run it is the host's own directory.
        host.run(["sh", "-c", 'mkdir -p "$2" && mount "$1" "$2"', "mount-datastore", ds["loop"], ds["path"]])

    def datastore_gone(self, name: str, hosts: Sequence[str] | None = None) -> None:
        """The datastore disappears from ``hosts`` (default all of its hosts): lazily detached,
        so new opens fail while open files (a running guest's disk) keep their handles."""
        with self._locked():
            ds = self.state["datastores"][name]
            for h in hosts or ds["hosts"]:
                if h not in ds["gone"]:
                    host = self.host(h)
                    if host.powered:
                        host.run(["umount", "-l", ds["path"]], check=False)
                    ds["gone"].append(h)
            self._save()

    def datastore_back(self, name: str, hosts: Sequence[str] | None = None) -> None:
        with self._locked():
            ds = self.state["datastores"][name]
            for h in list(hosts or ds["hosts"]):
                if h in ds["gone"]:
                    host = self.host(h)
                    if host.powered:
                        self._mount_datastore(ds, host)
                    ds["gone"].remove(h)
            self._save()

    # --- port groups --------------------------------------------------------------------------
    def ensure_portgroup(self, host: str, bridge_name: str, vlan_id: int) -> None:
        """Port group ``bridge_name`` (VLAN ``vlan_id``) on ``host``, joined by VXLAN to the
        hosts that carry the same VLAN id and to no other."""
        with self._locked():
            pgs = self.state["portgroups"].setdefault(host, {})
            pgs[bridge_name] = vlan_id
            self._save()
            self._sync_vlan(vlan_id)

    def remove_portgroup(self, host: str, bridge_name: str) -> None:
        with self._locked():
            vlan_id = self.state["portgroups"].get(host, {}).pop(bridge_name, None)
            self._save()
            if vlan_id is not None:
                net.remove_vxlan_portgroup(bridge_name, vlan_id, self.host(host).net_run)
                self._sync_vlan(vlan_id)

    def _sync_vlan(self, vlan_id: int) -> None:
        carriers = {h: br for h, pgs in self.state["portgroups"].items() for br, v in pgs.items() if v == vlan_id}
        addresses = {h: self.host(h).address for h in carriers}
        for h, br in carriers.items():
            peers = [a for other, a in addresses.items() if other != h]
            net.ensure_vxlan_portgroup(br, vlan_id, addresses[h], peers, self.host(h).inner_link, self.host(h).net_run)


def ensure_portgroup(host: LabHost, bridge_name: str, vlan_id: int) -> None:
    """Lab-side wrapper: port group ``bridge_name`` with ``vlan_id`` on lab host ``host``."""
    host.lab.ensure_portgroup(host.name, bridge_name, vlan_id)
