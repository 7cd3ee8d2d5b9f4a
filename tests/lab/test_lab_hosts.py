"""The lab of real hosts: namespaces, private libvirtds on TCP, per-host cgroups, faults,
VXLAN port groups, loop datastores, and a clean `down`.

One lab of three hosts for the module. Guests are firmware-only (no OS), which is all that
cgroups, crashes and re-attachment need. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vcenter.lab import faults
from vcenter.lab import network as net
from vcenter.lab.hosts import BRIDGE, GATEWAY, LIBVIRT_TCP_PORT, Lab, ensure_portgroup
from vcenter.lab.libvirtd import process_name

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("libvirtd") or not shutil.which("nft"), reason="the lab needs root, libvirtd and nftables"),
]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("lab"))
    t0 = time.monotonic()
    lab.up(3)
    print(f"\nlab up (3 hosts): {time.monotonic() - t0:.2f} s")
    try:
        yield lab
    finally:
        t0 = time.monotonic()
        lab.down()
        print(f"\nlab down: {time.monotonic() - t0:.2f} s")


@pytest.fixture(scope="module")
def redis_port(lab):
    """A throwaway Redis listening on the lab gateway address only."""
    with socket.socket() as s:
        s.bind((GATEWAY, 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--bind", GATEWAY, "--port", str(port), "--save", "", "--appendonly", "no", "--protected-mode", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: redis(port, "ping") == "PONG", 10, "redis on the lab network")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def redis(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-h", GATEWAY, "-p", str(port), *args], capture_output=True, text=True, timeout=5).stdout.strip()


def virsh(uri: str, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=timeout)


def tcp_reachable(address: str, port: int, timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def guest_xml(name: str) -> str:
    """A firmware-only guest (no disk, no OS) of the type this machine runs."""
    from vcenter.hypervisor.libvirt.xml import TCG_TB_CACHE_MIB, detect_domain_type

    kind = detect_domain_type()
    dom = ET.Element("domain", type=kind)
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "uuid").text = str(uuid.uuid4())
    ET.SubElement(dom, "memory", unit="MiB").text = "32"
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    if kind == "qemu":
        ET.SubElement(ET.SubElement(ET.SubElement(dom, "features"), "tcg"), "tb-cache", unit="MiB").text = str(TCG_TB_CACHE_MIB)
    ET.SubElement(ET.SubElement(dom, "devices"), "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def start_guest(host, name: str, tmp_path: Path) -> int:
    xml = tmp_path / f"{name}.xml"
    xml.write_text(guest_xml(name))
    assert virsh(host.uri, "define", str(xml)).returncode == 0
    started = virsh(host.uri, "start", name)
    assert started.returncode == 0, started.stderr
    pid_file = host.libvirtd.path(f"/run/libvirt/qemu/{name}.pid")
    return int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "QEMU pid file"))


def in_netns(host, code: str, timeout: float = 15) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a lab host's network namespace (there is no ping here)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def guest1(lab, tmp_path_factory):
    """A running firmware-only guest on host1: (name, QEMU pid)."""
    return "g1", start_guest(lab.host("host1"), "g1", tmp_path_factory.mktemp("xml"))


# --- hosts --------------------------------------------------------------------------------------
def test_every_host_answers_libvirt_over_tcp_with_its_own_identity(lab):
    uuids, names = set(), set()
    for host in lab.hosts:
        assert host.uri == f"qemu+tcp://{host.address}/system"
        listed = virsh(host.uri, "list", "--all")
        assert listed.returncode == 0, listed.stderr
        names.add(virsh(host.uri, "hostname").stdout.strip())
        caps = ET.fromstring(virsh(host.uri, "capabilities").stdout)
        uuids.add(caps.findtext("host/uuid"))
        assert caps.findtext("host/uuid") == host.host_uuid
        assert host.capacity.cpus >= 1 and host.capacity.memory_mib > 0
    assert names == {"host1", "host2", "host3"}
    assert len(uuids) == 3
    status = lab.status()
    assert [h["state"] for h in status["hosts"]] == ["running"] * 3
    assert [h["address"] for h in status["hosts"]] == ["10.213.0.11", "10.213.0.12", "10.213.0.13"]


def test_a_process_in_a_host_reaches_redis_only_over_the_lab_network(lab, redis_port):
    host = lab.host("host2")
    code = textwrap.dedent("""
        import os, socket, redis
        r = redis.Redis.from_url(os.environ["VCENTER_REDIS_URL"], socket_timeout=3)
        try:
            socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=1).close()
            loopback = "open"
        except OSError:
            loopback = "closed"
        cgroup = [l for l in open("/proc/self/cgroup").read().splitlines() if ":pids:" in l]
        r.set("probe:" + socket.gethostname(), loopback + " " + cgroup[0])
    """)
    env = {**os.environ, "VCENTER_REDIS_URL": f"redis://{GATEWAY}:{redis_port}/0", "PORT": str(redis_port)}
    pid = host.start_process([sys.executable, "-c", code], env, name="probe", boot=False)
    assert pid
    value = wait_for(lambda: redis(redis_port, "get", "probe:host2"), 15, "the probe's key")
    # Inside, the host's own cgroup is the root; the machine's loopback is not the host's.
    assert value.startswith("closed ") and value.endswith(":pids:/"), value


def test_a_guest_runs_in_the_host_cgroup_subtree_with_cpu_stats(lab, guest1):
    host = lab.host("host1")
    name, pid = guest1
    cgroups = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    assert "/vclab/host1/machine/qemu-1-g1" in cgroups["cpu"], cgroups
    assert pid in host.pids()
    sched = virsh(host.uri, "schedinfo", name)
    assert sched.returncode == 0 and "cpu_shares" in sched.stdout, sched
    stats = virsh(host.uri, "domstats", "--cpu-total", name).stdout
    assert "cpu.time=" in stats
    assert lab.status()["hosts"][0]["guests"] == ["g1"]


# --- faults -------------------------------------------------------------------------------------
def test_crashed_libvirtd_keeps_the_guest_and_a_restart_reattaches_it(lab, guest1):
    host = lab.host("host1")
    name, pid = guest1
    faults.crash_libvirtd(lab, "host1")
    assert not host.libvirtd_running()
    assert process_name(pid).startswith("qemu")
    assert not tcp_reachable(host.address, LIBVIRT_TCP_PORT)
    assert lab.status()["hosts"][0]["state"] == "libvirtdDown"
    faults.restart_libvirtd(lab, "host1")
    assert virsh(host.uri, "domstate", name).stdout.strip() == "running"
    assert process_name(pid).startswith("qemu")


def test_isolated_host_is_unreachable_and_reconnect_restores_it(lab, guest1):
    host = lab.host("host1")
    faults.isolate(lab, "host1")
    try:
        t0 = time.monotonic()
        assert not tcp_reachable(host.address, LIBVIRT_TCP_PORT, timeout=2)
        assert time.monotonic() - t0 < 5
        assert process_name(guest1[1]).startswith("qemu")  # the guest keeps running
    finally:
        faults.reconnect(lab, "host1")
    wait_for(lambda: tcp_reachable(host.address, LIBVIRT_TCP_PORT), 10, "host1 reachable again")
    assert virsh(host.uri, "domstate", guest1[0]).stdout.strip() == "running"


def test_full_packet_loss_blocks_and_clear_restores(lab):
    host = lab.host("host2")
    faults.set_loss(lab, "host2", 100)
    try:
        assert not tcp_reachable(host.address, LIBVIRT_TCP_PORT, timeout=2)
        assert lab.status()["hosts"][1]["net"]["loss"] == 100
    finally:
        faults.clear_net(lab, "host2")
    wait_for(lambda: tcp_reachable(host.address, LIBVIRT_TCP_PORT), 10, "host2 reachable again")
    assert virsh(host.uri, "list").returncode == 0


def test_bandwidth_limit_slows_the_link_and_clear_restores(lab):
    host = lab.host("host3")
    payload = 96 * 1024

    def transfer_seconds() -> float:
        with socket.socket() as srv:
            srv.bind((GATEWAY, 0))
            srv.listen(1)
            port = srv.getsockname()[1]
            client = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{host.netns}",
                    sys.executable,
                    "-c",
                    f"import socket; s=socket.create_connection(('{GATEWAY}', {port}), timeout=10); s.sendall(b'x'*{payload}); s.close()",
                ]
            )
            srv.settimeout(10)
            conn, _ = srv.accept()
            t0, got = time.monotonic(), 0
            with conn:
                conn.settimeout(10)
                while chunk := conn.recv(65536):
                    got += len(chunk)
            client.wait(10)
            assert got == payload
            return time.monotonic() - t0

    faults.set_bandwidth(lab, "host3", 1024)  # 96 KiB at 1 Mbit/s: ~0.75 s
    try:
        slow = transfer_seconds()
    finally:
        faults.clear_net(lab, "host3")
    fast = transfer_seconds()
    assert slow > 0.4 and fast < 0.3, (slow, fast)


def test_datastore_shared_disappears_and_comes_back(lab):
    path = lab.create_datastore("ds1", 32, ["host1", "host2"])
    h1, h2, h3 = (lab.host(n) for n in ("host1", "host2", "host3"))
    h1.run(["sh", "-c", f"echo shared > {path}/marker"])
    assert h2.run(["cat", f"{path}/marker"]).stdout.strip() == "shared"  # the same filesystem
    assert h3.run(["cat", f"{path}/marker"], check=False).returncode != 0  # not mounted there
    assert not (Path(path) / "marker").exists()  # nor in the root namespace
    size_kib = int(h1.run(["df", "-k", "--output=size", path]).stdout.split()[-1])
    assert 20_000 < size_kib <= 32 * 1024
    faults.datastore_gone(lab, "ds1")
    assert h2.run(["cat", f"{path}/marker"], check=False).returncode != 0
    faults.datastore_back(lab, "ds1")
    assert h2.run(["cat", f"{path}/marker"]).stdout.strip() == "shared"


def test_port_groups_join_hosts_of_the_same_vlan_only(lab):
    h1, h2, h3 = (lab.host(n) for n in ("host1", "host2", "host3"))
    ensure_portgroup(h1, "pgA", 100)
    ensure_portgroup(h2, "pgA", 100)
    ensure_portgroup(h3, "pgB", 200)
    ensure_portgroup(h1, "pgB", 200)  # host3's VLAN 200 has a peer: what stops it is the VNI
    ensure_portgroup(h1, "pgA", 100)  # idempotent
    report = net.list_vxlan_portgroups(h1.net_run)
    assert report["pgA"] == {"vlan_id": 100, "vxlan": "vxlan100", "peers": [h2.address], "up": True}
    assert report["pgB"]["peers"] == [h3.address]
    assert net.list_vxlan_portgroups(h2.net_run).keys() == {"pgA"}
    assert net.list_vxlan_portgroups(h3.net_run)["pgB"]["peers"] == [h1.address]
    # One IP subnet across both port groups: only the VLAN decides who reaches whom.
    for host, bridge, ip in ((h1, "pgA", "10.213.77.1"), (h2, "pgA", "10.213.77.2"), (h3, "pgB", "10.213.77.3")):
        host.net_run(["ip", "addr", "add", f"{ip}/24", "dev", bridge])
    server = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{h2.netns}",
            sys.executable,
            "-c",
            textwrap.dedent("""
            import socket
            s = socket.socket(); s.bind(("10.213.77.2", 7000)); s.listen(4); s.settimeout(20)
            print("ready", flush=True)
            while True:
                c, _ = s.accept(); c.sendall(b"pong"); c.close()
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        probe = "import socket; print(socket.create_connection(('10.213.77.2', 7000), timeout=2).recv(4).decode())"
        same = in_netns(h1, probe)
        assert same.stdout.strip() == "pong", same.stderr
        other = in_netns(h3, probe)
        assert other.returncode != 0 and "pong" not in other.stdout
    finally:
        server.kill()
        server.wait(5)


def test_kill_host_kills_that_host_only_and_start_boots_it_fresh(lab, redis_port, tmp_path):
    h1, h2 = lab.host("host1"), lab.host("host2")
    g2 = start_guest(h2, "g2", tmp_path)
    code = "import os, socket, time, redis; r = redis.Redis.from_url(os.environ['VCENTER_REDIS_URL']); r.set('agent:' + socket.gethostname(), os.getpid()); time.sleep(600)"
    env = {**os.environ, "VCENTER_REDIS_URL": f"redis://{GATEWAY}:{redis_port}/0"}
    agent = h1.start_process([sys.executable, "-c", code], env, name="agent")
    wait_for(lambda: redis(redis_port, "get", "agent:host1") == str(agent), 15, "agent on host1")
    doomed = h1.pids()
    qemu1 = int(h1.libvirtd.path("/run/libvirt/qemu/g1.pid").read_text())
    assert {qemu1, agent, h1.libvirtd._pid_from_file()} <= doomed
    others = h2.pids()

    t0 = time.monotonic()
    faults.kill_host(lab, "host1")
    assert time.monotonic() - t0 < 5
    assert not any(process_name(p) for p in doomed)
    assert h1.pids() == set() and not h1.powered
    assert not tcp_reachable(h1.address, LIBVIRT_TCP_PORT, timeout=1)  # a dead host answers nothing
    assert all(process_name(p) for p in others) and process_name(g2).startswith("qemu")
    assert virsh(h2.uri, "domstate", "g2").stdout.strip() == "running"
    assert lab.status()["hosts"][0]["state"] == "poweredOff"

    redis(redis_port, "del", "agent:host1")
    faults.start_host(lab, "host1")
    assert virsh(h1.uri, "domstate", "g1").stdout.strip() == "shut off"  # defined, not running
    assert virsh(h1.uri, "hostname").stdout.strip() == "host1"
    # The agent is a boot process: it runs again, inside the new namespaces.
    new_agent = int(wait_for(lambda: redis(redis_port, "get", "agent:host1"), 15, "agent restarted"))
    assert new_agent != agent and new_agent in h1.pids()
    # The datastore came back with the host.
    assert h1.run(["cat", f"{lab.state['datastores']['ds1']['path']}/marker"]).stdout.strip() == "shared"


def _leftovers(lab: Lab) -> list[str]:
    found = []
    found += [f"netns {line}" for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines() if "vclab" in line]
    found += [f"link {line}" for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines() if "vclab" in line]
    found += [f"mount {line}" for line in Path("/proc/mounts").read_text().splitlines() if "vclab" in line]
    found += [f"cgroup {h.base}" for h in lab.hierarchies if h.base.exists()]
    found += [f"loop {line}" for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines() if str(lab.workdir) in line]
    return found


def test_up_after_a_crash_cleans_up_first_and_down_leaves_nothing(lab):
    # A crashed run: its state file is lost, its namespaces, processes and cgroups remain.
    pids = set().union(*(h.pids() for h in lab.hosts))
    lab.state_file.unlink()
    again = Lab(lab.workdir)
    again.up(2)
    assert not any(process_name(p) for p in pids)
    assert [h.name for h in again.hosts] == ["host1", "host2"]
    assert virsh(again.host("host2").uri, "hostname").stdout.strip() == "host2"
    pids = set().union(*(h.pids() for h in again.hosts))
    t0 = time.monotonic()
    again.down()
    print(f"\nlab down (2 hosts): {time.monotonic() - t0:.2f} s")
    assert not any(process_name(p) for p in pids)
    assert _leftovers(again) == []
    assert not net.link_exists(BRIDGE)
    # The hosts' process logs are kept for a post-mortem (libvirtd's and agents' logs).
    assert any(p.name.startswith("host2-") for p in (again.workdir / "logs").glob("*.log"))
    lab.state = again.state  # the module fixture's down() is then a no-op
