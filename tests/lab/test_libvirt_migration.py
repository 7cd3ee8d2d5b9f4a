"""VMotion and Storage VMotion at the driver level, on a real lab of two libvirt hosts.

Two lab hosts (network namespaces, private libvirtds on TCP, migration_address set), a shared
loop-mounted datastore (also mounted in the test's own namespace, so that the test sees the
disk files as the hosts do), tiny Linux guests (direct kernel boot, TCG) with a qcow2 disk and
a heartbeat channel. The guests are lightly loaded: TCG migration of a guest writing memory
heavily can corrupt it (LAB-NOTES).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid

import libvirt
import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.libvirt.guestchannel import ChannelClosed, GuestChannel
from vcenter.lab import network as net
from vcenter.lab.guest import build_guest, verify_pattern
from vcenter.lab.hosts import Lab
from vcenter.messaging.contracts import DiskSpec, MigrationOptions, MigrationProgress, VmSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("libvirtd"), reason="the lab needs root and libvirtd"),
]


@pytest.fixture(scope="module")
def image():
    return build_guest()  # in the root namespace: lab hosts have no route out


@pytest.fixture(scope="module")
def lab(tmp_path_factory, image):
    lab = Lab(tmp_path_factory.mktemp("miglab"))
    lab.up(2)
    mounted = []
    try:
        path = lab.create_datastore("shared", 384, ["host1", "host2"])
        # The same filesystem in our namespace too: the test reads the disk files directly.
        net.run_local(["mount", lab.state["datastores"]["shared"]["loop"], path])
        mounted.append(path)
        yield lab
    finally:
        for p in mounted:
            net.run_local(["umount", p], check=False)
        lab.down()


@pytest.fixture(scope="module")
def shared(lab) -> str:
    return lab.state["datastores"]["shared"]["path"]


@pytest.fixture(scope="module")
def drivers(lab):
    drvs = [LibvirtDriver(h.uri, connect_timeout=10) for h in lab.hosts]
    for d in drvs:
        d.connect()
    yield drvs
    for d in drvs:
        d.close()


class Guest:
    def __init__(self, spec: VmSpec, disk: str):
        self.spec, self.uuid, self.disk = spec, spec.uuid, disk


def make_guest(drv: LibvirtDriver, image, datastore: str, tag: str, memory_mib: int = 96, disk_mib: int = 32, create_disk=None) -> Guest:
    u = str(uuid.uuid4())
    name = f"mig-{tag}-{u[:6]}"
    spec = VmSpec(
        name=name,
        uuid=u,
        vcpus=1,
        memory_mib=memory_mib,
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=image.cmdline_for(hostname=f"g{tag}"),
        disks=[DiskSpec(index=0, datastore_id=1, datastore_path=datastore, file=f"{name}.qcow2", capacity_mib=disk_mib, format="qcow2")],
    )
    path = os.path.join(datastore, f"{name}.qcow2")
    if create_disk is None:
        drv.create_disks(spec)
    else:
        create_disk(path, disk_mib)
    drv.define(spec)
    drv.start(spec.uuid)
    return Guest(spec, path)


def channel(lab, host_index: int, drv: LibvirtDriver, u: str, timeout: float = 10) -> GuestChannel:
    deadline = time.monotonic() + timeout
    while True:
        path = drv.guest_channel_path(u)
        if path:
            return GuestChannel(lab.hosts[host_index].libvirtd.path(path))
        assert time.monotonic() < deadline, "no heartbeat channel"
        time.sleep(0.2)


class Watch(threading.Thread):
    """Reads everything from one channel until it closes: heartbeats as (arrival time, seq)
    in ``seen``, command replies in ``replies``; ``command`` sends a line and waits for its
    reply (the channel is read by this thread alone)."""

    def __init__(self, ch: GuestChannel):
        super().__init__(daemon=True)
        self.ch, self.seen, self.replies, self.stop = ch, [], [], threading.Event()
        self.cond = threading.Condition()
        self.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                msg = self.ch._read_message(time.monotonic() + 1)
            except TimeoutError:
                continue
            except (ChannelClosed, OSError):
                return
            with self.cond:
                if "reply" in msg:
                    self.replies.append(msg)
                elif "seq" in msg:
                    self.seen.append((time.monotonic(), msg["seq"]))
                self.cond.notify_all()

    def command(self, cmd: str, timeout: float = 60) -> dict:
        word = cmd.split()[0]
        with self.cond:
            n = len(self.replies)
        self.ch._sock.sendall(cmd.encode() + b"\n")
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.replies[n:]:
                    if r.get("reply") == word:
                        return r
                left = deadline - time.monotonic()
                assert left > 0, f"no reply to {cmd!r}"
                self.cond.wait(left)

    def wait_beats(self, n: int, timeout: float = 15) -> list[int]:
        """The seqs of the next ``n`` heartbeats."""
        with self.cond:
            start = len(self.seen)
            deadline = time.monotonic() + timeout
            while len(self.seen) < start + n:
                left = deadline - time.monotonic()
                assert left > 0, "heartbeats stopped"
                self.cond.wait(left)
            return [s for _, s in self.seen[start : start + n]]

    def close(self) -> None:
        self.stop.set()
        self.ch.close()
        self.join(5)


def state_of(drv: LibvirtDriver, u: str) -> str | None:
    st = drv.domain_state(u)
    return None if st is None else st.power_state


def cleanup(drivers, *guests: Guest) -> None:
    for g in guests:
        for d in drivers:
            try:
                d.undefine(g.uuid, [])
            except DriverError:
                pass


def opts(lab, dest: int = 1, **kw) -> MigrationOptions:
    h = lab.hosts[dest]
    return MigrationOptions(dest_uri=h.uri, dest_address=h.address, **kw)


# --- VMotion ----------------------------------------------------------------------------------


def test_live_migration_keeps_the_heartbeat_and_moves_the_definition(lab, drivers, image, shared):
    d1, d2 = drivers
    g = make_guest(d1, image, shared, "a", memory_mib=96)
    try:
        ch = channel(lab, 0, d1, g.uuid)
        first = ch.read_heartbeat(timeout=20)
        w = Watch(ch)
        w.wait_beats(1)
        seen: list[MigrationProgress] = []
        t0 = time.monotonic()
        result = d1.migrate(g.uuid, opts(lab, unsafe=True, max_downtime_ms=300), seen.append)
        took = time.monotonic() - t0
        w.join(5)
        ch.close()
        print(f"\nmigration {took:.2f}s: {result}")
        assert result.phase == "completed" and not result.already_done
        assert result.downtime_ms is not None and 0 < result.downtime_ms < 5000
        assert result.elapsed_ms is not None and result.elapsed_ms > 0
        assert state_of(d1, g.uuid) is None
        assert state_of(d2, g.uuid) == "poweredOn"
        assert lab.hosts[1].guests() and g.spec.name in lab.hosts[1].guests()
        assert g.spec.name not in (lab.hosts[0].guests() or [])
        # persistent on the target
        assert d2._get(g.uuid).isPersistent() == 1
        last_src = w.seen[-1][1] if w.seen else first["seq"]
        ch2 = channel(lab, 1, d2, g.uuid)
        after = [ch2.read_heartbeat(timeout=10)["seq"] for _ in range(3)]
        ch2.close()
        print(f"heartbeat: last on source {last_src}, first on target {after[0]}")
        assert after[0] > last_src and after[0] <= last_src + 5, "the heartbeat restarted or stalled"
        assert after == sorted(after) and after[-1] > after[0]
    finally:
        cleanup(drivers, g)


@pytest.fixture(scope="module")
def slow_guest(lab, drivers, image, shared):
    d1, _ = drivers
    g = make_guest(d1, image, shared, "b", memory_mib=128)
    ch = channel(lab, 0, d1, g.uuid)
    ch.read_heartbeat(timeout=20)  # booted
    ch.close()
    yield g
    cleanup(drivers, g)


def test_capped_migration_reports_progress_and_cancel_keeps_the_vm_on_the_source(lab, drivers, slow_guest):
    d1, d2 = drivers
    g = slow_guest
    cancel = threading.Event()
    seen: list[MigrationProgress] = []

    def on_progress(p: MigrationProgress) -> None:
        seen.append(p)
        rising = sorted({x.data_processed for x in seen if x.data_processed})
        if len(rising) >= 4:
            cancel.set()

    t0 = time.monotonic()
    with pytest.raises(DriverError) as e:
        d1.migrate(g.uuid, opts(lab, unsafe=True, bandwidth_mibps=1), on_progress, cancel)
    took = time.monotonic() - t0
    assert e.value.code == "MIGRATION_CANCELLED", e.value
    for p in seen:
        print(p.model_dump(exclude_none=True))
    values = [p.data_processed for p in seen if p.data_processed]
    assert len(set(values)) >= 3 and values == sorted(values)
    last = [p for p in seen if p.data_processed][-1]
    total = last.memory_total
    assert total and abs(total - 128 * 2**20) < 8 * 2**20
    covered = last.memory_processed + last.memory_remaining + (last.memory_zero_bytes or 0)
    print(f"cancelled after {took:.2f}s; processed+zero+remaining = {covered} of {total}")
    assert abs(covered - total) < 0.1 * total
    # At 1 MiB/s the non-zero memory left would take well over 10 s.
    assert last.memory_remaining > 10 * 2**20
    assert state_of(d1, g.uuid) == "poweredOn"
    assert d1._get(g.uuid).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert state_of(d2, g.uuid) is None
    assert d1.job_progress(g.uuid) is None


def test_second_migrate_of_a_migrated_domain_is_a_noop(lab, drivers, slow_guest):
    d1, d2 = drivers
    g = slow_guest
    first = d1.migrate(g.uuid, opts(lab, unsafe=True))
    assert first.phase == "completed" and not first.already_done
    again = d1.migrate(g.uuid, opts(lab, unsafe=True))
    assert again.phase == "completed" and again.already_done
    assert state_of(d1, g.uuid) is None and state_of(d2, g.uuid) == "poweredOn"
    assert d1.domain_state_on(lab.hosts[1].uri, g.uuid).power_state == "poweredOn"
    # and back, so that the module leaves things where it found them
    back = d2.migrate(g.uuid, opts(lab, dest=0, unsafe=True))
    assert back.phase == "completed" and state_of(d1, g.uuid) == "poweredOn" and state_of(d2, g.uuid) is None


def test_unreachable_target_is_host_unreachable(lab, drivers, slow_guest):
    d1, _ = drivers
    with pytest.raises(DriverError) as e:
        d1.migrate(slow_guest.uuid, MigrationOptions(dest_uri="qemu+tcp://10.213.0.99/system", unsafe=True))
    assert e.value.code == "HOST_UNREACHABLE"
    assert state_of(d1, slow_guest.uuid) == "poweredOn"


# --- Storage VMotion ----------------------------------------------------------------------------


def test_move_disk_while_the_guest_writes_a_pattern(lab, drivers, image, shared):
    d1, _ = drivers
    g = make_guest(d1, image, shared, "d", disk_mib=64)
    new_dir = os.path.join(shared, "moved")
    os.makedirs(new_dir, exist_ok=True)
    new_path = os.path.join(new_dir, os.path.basename(g.disk))
    try:
        w = Watch(channel(lab, 0, d1, g.uuid))
        w.wait_beats(1, timeout=20)
        t0 = time.monotonic()
        reply: dict = {}
        writer = threading.Thread(target=lambda: reply.update(w.command("write-pattern 8", timeout=120)), daemon=True)
        writer.start()
        time.sleep(0.3)
        seen: list[MigrationProgress] = []
        states: list[int] = []

        def on_progress(p: MigrationProgress) -> None:
            seen.append(p)
            states.append(d1._get(g.uuid).state()[0])

        # No cap: the production path (frozen base, qemu-img convert, top copied and folded).
        d1.move_disk(g.uuid, "vda", new_path, "qcow2", on_progress)
        moved = time.monotonic()
        writer.join(120)
        assert reply.get("ok") is True, reply
        w.wait_beats(2)
        during = [(t, s) for t, s in w.seen if t0 - 1 <= t]
        gaps = [b[0] - a[0] for a, b in zip(during, during[1:])]
        seqs = [s for _, s in during]
        print(f"\nmove_disk: {len(seen)} progress readings in {moved - t0:.1f}s, last {seen[-1]}; heartbeats {seqs}, largest gap {max(gaps):.2f}s")
        assert seen[-1].phase == "completed" and any(p.phase == "copying" for p in seen)
        assert set(states) == {libvirt.VIR_DOMAIN_RUNNING}, "the guest was paused"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the heartbeat restarted or skipped"
        assert max(gaps) < 2.5, "the heartbeat stalled"
        src, mirror, fmt = d1._disk_of(d1._get(g.uuid), "vda")
        assert src == new_path and mirror is None and fmt == "qcow2"
        src, _, _ = d1._disk_of(d1._get(g.uuid), "vda", libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert src == new_path
        assert d1._backing_of_live(d1._get(g.uuid), "vda") is None, "the temporary overlay was not folded"
        assert os.path.exists(g.disk)
        assert not [f for d in (shared, new_dir) for f in os.listdir(d) if f.endswith(".vcmove.qcow2")]
        # redelivered: no-op
        d1.move_disk(g.uuid, "vda", new_path, "qcow2")
        w.close()
        d1.stop(g.uuid)
        assert verify_pattern(new_path, 8)
    finally:
        cleanup(drivers, g)


def test_cancelled_block_copy_leaves_the_old_disk_in_use(lab, drivers, image, shared):
    d1, _ = drivers
    g = make_guest(d1, image, shared, "e", disk_mib=64)
    new_path = os.path.join(shared, f"cancelled-{g.spec.name}.qcow2")
    try:
        ch = channel(lab, 0, d1, g.uuid)
        ch.read_heartbeat(timeout=20)
        assert ch.send("write-pattern 16", timeout=120)["ok"] is True
        cancel = threading.Event()
        seen: list[MigrationProgress] = []

        def on_progress(p: MigrationProgress) -> None:
            seen.append(p)
            if p.data_processed and p.data_processed > 0 and len(seen) >= 2:
                cancel.set()

        with pytest.raises(DriverError) as e:
            d1.move_disk(g.uuid, "vda", new_path, "qcow2", on_progress, cancel, bandwidth_mibps=1)
        assert e.value.code == "MIGRATION_CANCELLED"
        print(f"\ncancelled block copy at {seen[-1]}")
        assert seen[-1].data_processed < seen[-1].data_total
        dom = d1._get(g.uuid)
        src, mirror, _ = d1._disk_of(dom, "vda")
        assert src == g.disk and mirror is None
        assert d1._disk_of(dom, "vda", libvirt.VIR_DOMAIN_XML_INACTIVE)[0] == g.disk
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING and d1.job_progress(g.uuid) is None
        seq = ch.read_heartbeat(timeout=10)["seq"]
        assert ch.read_heartbeat(timeout=10)["seq"] > seq
        ch.close()
    finally:
        cleanup(drivers, g)


def _freeze(d, uuid: str, top: str) -> None:
    """What an agent killed mid-move leaves: the disk running on a temporary overlay."""
    xml = f"<domainsnapshot><disks><disk name='vda' snapshot='external'><driver type='qcow2'/><source file='{top}'/></disk></disks></domainsnapshot>"
    d._get(uuid).snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)


def test_frozen_move_cancel_and_interrupted_moves(lab, drivers, image, shared):
    """The fast path's cancel (back on the old disk, nothing left on the destination) and a
    redelivered move after an agent died on either temporary overlay."""
    from vcenter.hypervisor.libvirt.storagemove import top_of

    d1, _ = drivers
    g = make_guest(d1, image, shared, "f", disk_mib=64)
    new_dir = os.path.join(shared, "frozen")
    os.makedirs(new_dir, exist_ok=True)
    dest = os.path.join(new_dir, os.path.basename(g.disk))
    try:
        ch = channel(lab, 0, d1, g.uuid)
        ch.read_heartbeat(timeout=20)
        assert ch.send("write-pattern 6", timeout=120)["ok"] is True
        cancel = threading.Event()
        seen: list[MigrationProgress] = []

        def on_progress(p: MigrationProgress) -> None:
            seen.append(p)
            cancel.set()  # during the copy of the frozen base

        with pytest.raises(DriverError) as e:
            d1.move_disk(g.uuid, "vda", dest, "qcow2", on_progress, cancel)
        assert e.value.code == "MIGRATION_CANCELLED"
        assert seen and seen[0].phase == "copying" and seen[0].data_processed == 0
        dom = d1._get(g.uuid)
        assert d1._disk_of(dom, "vda")[:2] == (g.disk, None) and d1._backing_of_live(dom, "vda") is None
        assert d1._disk_of(dom, "vda", libvirt.VIR_DOMAIN_XML_INACTIVE)[0] == g.disk
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING and not dom.blockJobInfo("vda", 0)
        assert not os.listdir(new_dir) and not os.path.exists(top_of(g.disk))

        # Killed after freezing the old file: the redelivered move rolls back, then moves.
        _freeze(d1, g.uuid, top_of(g.disk))
        assert ch.send("write-pattern 7", timeout=120)["ok"] is True  # lands in the overlay
        assert d1._disk_of(dom, "vda")[0] == top_of(g.disk)
        d1.move_disk(g.uuid, "vda", dest, "qcow2")
        assert d1._disk_of(dom, "vda")[0] == dest and d1._backing_of_live(dom, "vda") is None
        assert not os.path.exists(top_of(g.disk)) and not os.path.exists(top_of(dest))

        # Killed after the pivot onto the destination's overlay: the redelivered move folds it.
        _freeze(d1, g.uuid, top_of(dest))
        assert ch.send("write-pattern 8", timeout=120)["ok"] is True
        d1.move_disk(g.uuid, "vda", dest, "qcow2")
        assert d1._disk_of(dom, "vda")[0] == dest and d1._backing_of_live(dom, "vda") is None
        assert d1._disk_of(dom, "vda", libvirt.VIR_DOMAIN_XML_INACTIVE)[0] == dest
        assert sorted(os.listdir(new_dir)) == [os.path.basename(dest)]
        seq = ch.read_heartbeat(timeout=10)["seq"]
        assert ch.read_heartbeat(timeout=10)["seq"] > seq
        ch.close()
        d1.stop(g.uuid)
        assert verify_pattern(dest, 8)
    finally:
        cleanup(drivers, g)


def test_move_disk_offline(lab, drivers, image, shared):
    d1, _ = drivers
    g = make_guest(d1, image, shared, "o", disk_mib=16)
    new_path = os.path.join(shared, f"offline-{g.spec.name}.raw")
    try:
        ch = channel(lab, 0, d1, g.uuid)
        ch.read_heartbeat(timeout=20)
        assert ch.send("write-pattern 2", timeout=60)["ok"] is True
        ch.close()
        with pytest.raises(DriverError) as e:
            d1.move_disk_offline(g.uuid, "vda", new_path, "raw")
        assert e.value.code == "VM_POWERED_ON"
        d1.stop(g.uuid)
        d1.move_disk_offline(g.uuid, "vda", new_path, "raw")
        d1.move_disk_offline(g.uuid, "vda", new_path, "raw")  # idempotent
        assert d1._disk_of(d1._get(g.uuid), "vda", libvirt.VIR_DOMAIN_XML_INACTIVE)[0] == new_path
        assert verify_pattern(new_path, 2) and os.path.exists(g.disk)
        d1.start(g.uuid)
        ch = channel(lab, 0, d1, g.uuid)
        ch.read_heartbeat(timeout=20)
        ch.close()
    finally:
        cleanup(drivers, g)


# --- VMotion with non-shared storage ------------------------------------------------------------


def in_host(host, code: str) -> str:
    out = host.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r}); {code}"], timeout=120)
    return out.stdout.strip()


def test_copy_storage_migration_of_a_host_local_disk(lab, drivers, image):
    d1, d2 = drivers
    h1, h2 = lab.hosts
    local = str(lab.workdir / "local")
    # The same path, a different filesystem on each host.
    lab.create_datastore("local1", 96, ["host1"], path=local)
    lab.create_datastore("local2", 96, ["host2"], path=local)
    g = None
    try:
        g = make_guest(d1, image, local, "f", disk_mib=32, create_disk=lambda path, mib: h1.run(["qemu-img", "create", "-q", "-f", "qcow2", path, f"{mib}M"]))
        ch = channel(lab, 0, d1, g.uuid)
        ch.read_heartbeat(timeout=20)
        assert ch.send("write-pattern 4", timeout=60)["ok"] is True
        last = ch.read_heartbeat(timeout=10)["seq"]
        ch.close()
        assert h2.run(["test", "-e", g.disk], check=False).returncode != 0
        seen: list[MigrationProgress] = []
        result = d1.migrate(g.uuid, opts(lab, copy_storage=True), seen.append)
        print(f"\ncopy-storage migration: {result}")
        assert result.phase == "completed"
        assert state_of(d1, g.uuid) is None and state_of(d2, g.uuid) == "poweredOn"
        assert h2.run(["test", "-f", g.disk], check=False).returncode == 0
        assert h1.run(["test", "-f", g.disk], check=False).returncode == 0  # never deleted
        assert not d2._c().listAllStoragePools(0) or all(not p.name().startswith("vc-migrate-") for p in d2._c().listAllStoragePools(0))
        ch = channel(lab, 1, d2, g.uuid)
        assert ch.read_heartbeat(timeout=10)["seq"] > last
        ch.close()
        d2.stop(g.uuid)
        ok = in_host(h2, f"from vcenter.lab.guest import verify_pattern; print(verify_pattern({g.disk!r}, 4))")
        assert ok == "True"
    finally:
        if g is not None:
            cleanup(drivers, g)
