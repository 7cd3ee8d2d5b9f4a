"""Snapshots, backups, restores and clones through LibvirtDriver against a real private
libvirtd with a real TCG guest (the lab's tiny Linux) writing the disk pattern.

One guest, one sequence (each step builds on the previous one, so it is one test):
snapshot at an empty disk -> the guest writes 4 MiB of pattern -> a push-mode full backup, the
guest writing 4 MiB more once it began (not in it) -> a full backup while the guest
writes 24 MiB more, its heartbeat counting on -> an incremental backup after it finished ->
revert to the snapshot (the disk is empty again, the guest runs) -> restore the backup chain
into a new domain that boots -> a full clone of the running guest boots -> the full point
restored over that (stopped) new domain -> a linked clone of the stopped guest, promoted to a
standalone image.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import uuid

import libvirt
import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.libvirt.guestchannel import GuestChannel
from vcenter.hypervisor.libvirt.vmdata import image_info
from vcenter.hypervisor.libvirt.xml import detect_domain_type
from vcenter.lab.guest import PATTERN_BLOCK, build_guest, pattern_block
from vcenter.lab.libvirtd import PrivateLibvirtd
from vcenter.messaging.contracts import DiskSpec, VmSpec


ZERO = bytes(PATTERN_BLOCK)


def read_blocks(path: str, mib: int, tmp: str) -> list[str]:
    """Each 4 KiB block of the first ``mib`` MiB: "p" pattern, "0" zeros, "x" anything else.
    Reads with -U: the image may be open by a running QEMU."""
    raw = os.path.join(tmp, f"head-{uuid.uuid4().hex[:6]}.raw")
    r = subprocess.run(["qemu-img", "dd", "-U", "-O", "raw", "bs=1M", f"count={mib}", f"if={path}", f"of={raw}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = []
    with open(raw, "rb") as f:
        for i in range(mib * (1 << 20) // PATTERN_BLOCK):
            block = f.read(PATTERN_BLOCK)
            out.append("p" if block == pattern_block(i) else "0" if block == ZERO else "x")
    os.unlink(raw)
    return out


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_for(name: str, ds: str, file: str, image) -> VmSpec:
    return VmSpec(
        name=name,
        uuid=str(uuid.uuid4()),
        vcpus=1,
        memory_mib=96,
        disks=[DiskSpec(index=0, datastore_id=1, datastore_path=ds, file=file, capacity_mib=32)],
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=image.cmdline_for(hostname=name),
    )


def test_snapshot_backup_restore_clone_on_a_real_guest(tmp_path):
    image = build_guest()
    ds = str(tmp_path / "ds")
    backups = str(tmp_path / "ds" / "backups" / "g1")
    os.makedirs(ds)
    daemon = PrivateLibvirtd(tmp_path / "h", "it-vmdata")
    daemon.start()
    drv = LibvirtDriver(daemon.uri, domain_type=detect_domain_type())
    channels: list[GuestChannel] = []

    def channel(u: str) -> GuestChannel:
        ch = GuestChannel(daemon.path(drv.guest_channel_path(u)))
        channels.append(ch)
        return ch

    try:
        drv.connect()
        g1 = spec_for("g1", ds, "g1.qcow2", image)
        drv.create_disks(g1)
        drv.define(g1)
        drv.start(g1.uuid)
        ch = channel(g1.uuid)
        ch.read_heartbeat(timeout=30)

        # A running VM's snapshot holds its memory: revertable.
        s0 = drv.snapshot_create(g1.uuid, "empty", "before any pattern")
        assert s0["memory"] and s0["state"] == "running" and s0["parent"] is None

        assert ch.send("write-pattern 4", timeout=120)["ok"] is True

        # Push mode, one point in time: the first progress report comes once backupBegin
        # returned; the guest then writes 8 MiB (the pattern's next 4 MiB). Those writes are not
        # in the backup: the 4 MiB from before are, the rest is empty. (On this 32 MiB disk the
        # job has mostly ended by then, measured: this pins the report's contract; the guest
        # writing during the job is the next backup's check.)
        reports: list = []

        def write_after_start(p) -> None:
            reports.append(p)
            if len(reports) == 1:
                assert ch.send("write-pattern 8", timeout=120)["ok"] is True

        b0 = drv.backup(g1.uuid, [{"target": "vda", "path": f"{backups}/b0-vda.qcow2"}], None, "b0", on_progress=write_after_start)
        assert b0["kind"] == "full" and b0["mode"] == "push" and drv.checkpoints(g1.uuid) == ["b0"]
        assert reports[0].data_processed == 0 and reports[0].data_total == 32 << 20
        assert read_blocks(f"{backups}/b0-vda.qcow2", 8, str(tmp_path)) == ["p"] * 1024 + ["0"] * 1024
        assert image_info(f"{backups}/b0-vda.qcow2").get("backing-filename") is None

        # Backup while the guest writes 24 MiB more: its heartbeat keeps counting meanwhile.
        seq_before = ch.read_heartbeat(timeout=10)["seq"]
        writer: dict = {}
        thread = threading.Thread(target=lambda: writer.update(ch.send("write-pattern 24", timeout=600)))
        thread.start()
        full = drv.backup(g1.uuid, [{"target": "vda", "path": f"{backups}/b1-vda.qcow2"}], None, "b1")
        thread.join(600)
        assert writer.get("ok") is True, writer
        assert full["kind"] == "full" and full["checkpoint"] == "b1" and full["running"] is True
        seq_after = ch.read_heartbeat(timeout=10)["seq"]
        assert seq_after > seq_before + 1, (seq_before, seq_after)
        assert drv.checkpoints(g1.uuid) == ["b1"]

        # Point in time: the 8 MiB written before are there (also the 4 MiB the guest wrote
        # during b0: they did reach its disk); each later block is either the pattern or still
        # empty, never anything else (no torn or foreign data).
        blocks = read_blocks(f"{backups}/b1-vda.qcow2", 24, str(tmp_path))
        assert blocks[:2048] == ["p"] * 2048
        assert "x" not in blocks
        print(f"\nfull backup: {blocks.count('p')} of {len(blocks)} pattern blocks at the backup point, {full}")

        inc = drv.backup(g1.uuid, [{"target": "vda", "path": f"{backups}/b2-vda.qcow2", "parent_path": f"{backups}/b1-vda.qcow2"}], "b1", "b2")
        assert inc["kind"] == "incremental" and drv.checkpoints(g1.uuid) == ["b2"]
        assert image_info(f"{backups}/b2-vda.qcow2")["backing-filename"] == "b1-vda.qcow2"
        assert inc["files"]["vda"] < full["files"]["vda"] + 24 * 2**20
        print(f"incremental backup: {inc}")

        # A cancelled backup leaves no file and no checkpoint; the guest runs on.
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(DriverError) as refused:
            drv.backup(g1.uuid, [{"target": "vda", "path": f"{backups}/b3-vda.qcow2"}], None, "b3", cancel=cancel)
        assert refused.value.code == "BACKUP_CANCELLED"
        assert not os.path.exists(f"{backups}/b3-vda.qcow2") and drv.checkpoints(g1.uuid) == ["b2"]
        assert drv.domain_state(g1.uuid).power_state == "poweredOn"

        # Revert: the disk is as it was (empty), the guest runs on from its saved memory. As
        # after a VMotion, the bitmap is there without libvirt's checkpoint: removed first.
        drv._get(g1.uuid).checkpointLookupByName("b2", 0).delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        reverted = drv.snapshot_revert(g1.uuid, "empty")
        assert reverted["checkpoints_dropped"] == ["b2 (bitmap)"]
        assert drv.domain_state(g1.uuid).power_state == "poweredOn"
        assert set(read_blocks(f"{ds}/g1.qcow2", 4, str(tmp_path))) == {"0"}
        assert [s["name"] for s in drv.snapshot_list(g1.uuid)] == ["empty"]

        # Restore the chain (full + incremental) into a new VM: the whole pattern is there.
        g2 = spec_for("g2", ds, "g2.qcow2", image)
        drv.restore_disks([{"source": f"{backups}/b2-vda.qcow2", "path": f"{ds}/g2.qcow2"}])
        assert set(read_blocks(f"{ds}/g2.qcow2", 24, str(tmp_path))) == {"p"}
        drv.define(g2)
        drv.start(g2.uuid)
        assert channel(g2.uuid).read_heartbeat(timeout=30)["hostname"] == "g2"
        drv.stop(g2.uuid)

        # Full clone of the running g1, which keeps running; the clone boots.
        ch = channel(g1.uuid)
        ch.read_heartbeat(timeout=10)
        drv.snapshot_create(g1.uuid, "s1")
        cloned = drv.clone_disks(g1.uuid, [{"target": "vda", "path": f"{ds}/g3.qcow2"}], linked=False)
        assert cloned["files"] == {"vda": f"{ds}/g3.qcow2"}
        assert image_info(f"{ds}/g3.qcow2").get("backing-filename") is None
        # Through a temporary external snapshot, committed back: g1 runs on its own file again.
        assert [src for _, src, _ in drv._file_disks(drv._get(g1.uuid))] == [f"{ds}/g1.qcow2"]
        assert [src for _, src, _ in drv._file_disks(drv._get(g1.uuid), inactive=True)] == [f"{ds}/g1.qcow2"]
        assert not [f for f in os.listdir(ds) if "vcclone" in f]
        g3 = spec_for("g3", ds, "g3.qcow2", image)
        drv.define(g3)
        drv.start(g3.uuid)
        assert channel(g3.uuid).read_heartbeat(timeout=30)["hostname"] == "g3"
        assert drv.domain_state(g1.uuid).power_state == "poweredOn"
        ch.read_heartbeat(timeout=10)
        drv.stop(g3.uuid)

        # Restore over the stopped g2 from the full point: its disk is as at that point, the
        # snapshot its old image held is forgotten, and it boots.
        drv.snapshot_create(g2.uuid, "before-restore")
        replaced = drv.restore_disks([{"source": f"{backups}/b1-vda.qcow2", "path": f"{ds}/g2.qcow2"}], replace_uuid=g2.uuid)
        assert replaced["snapshots_forgotten"] == ["before-restore"] and drv.snapshot_list(g2.uuid) == []
        assert read_blocks(f"{ds}/g2.qcow2", 24, str(tmp_path)) == blocks
        drv.start(g2.uuid)
        assert channel(g2.uuid).read_heartbeat(timeout=30)["hostname"] == "g2"
        drv.stop(g2.uuid)

        # Deleting a snapshot keeps its parent; a stopped VM's snapshot has no memory.
        assert drv.snapshot_delete(g1.uuid, "s1")["deleted"] == ["s1"]
        drv.stop(g1.uuid)
        off = drv.snapshot_create(g1.uuid, "off")
        assert off["memory"] is False and off["state"] == "shutoff"

        # Linked clone of the stopped g1: constant time, both on a frozen base; then promote.
        linked = drv.clone_disks(g1.uuid, [{"target": "vda", "path": f"{ds}/g4.qcow2", "base_path": f"{ds}/g1-base1.qcow2"}], linked=True)
        assert image_info(f"{ds}/g4.qcow2")["backing-filename"] == "g1-base1.qcow2"
        assert image_info(f"{ds}/g1.qcow2")["backing-filename"] == "g1-base1.qcow2"
        print(f"linked clone: {linked}")
        g4 = spec_for("g4", ds, "g4.qcow2", image)
        drv.define(g4)
        promoted = drv.promote(g4.uuid)
        assert promoted["flattened"] == ["vda"]
        assert image_info(f"{ds}/g4.qcow2").get("backing-filename") is None
        drv.start(g4.uuid)
        assert channel(g4.uuid).read_heartbeat(timeout=30)["hostname"] == "g4"
        # A second linked clone on the same base (made while g1 is stopped).
        drv.clone_disks(g1.uuid, [{"target": "vda", "path": f"{ds}/g5.qcow2", "base_path": f"{ds}/g1-base1.qcow2"}], linked=True)
        drv.start(g1.uuid)
        ch1 = channel(g1.uuid)
        assert ch1.read_heartbeat(timeout=30)["hostname"] == "g1"
        drv.stop(g4.uuid)

        # A full clone of a RUNNING linked clone: the temporary overlay is committed into the
        # clone's own overlay only (shallow), never into the base other clones share.
        base_sum = sha256_file(f"{ds}/g1-base1.qcow2")
        g5 = spec_for("g5", ds, "g5.qcow2", image)
        drv.define(g5)
        drv.start(g5.uuid)
        ch5 = channel(g5.uuid)
        ch5.read_heartbeat(timeout=30)
        assert ch5.send("write-pattern 4", timeout=120)["ok"] is True
        drv.clone_disks(g5.uuid, [{"target": "vda", "path": f"{ds}/g6.qcow2"}], linked=False)
        assert sha256_file(f"{ds}/g1-base1.qcow2") == base_sum
        assert image_info(f"{ds}/g5.qcow2")["backing-filename"] == "g1-base1.qcow2"
        assert [src for _, src, _ in drv._file_disks(drv._get(g5.uuid))] == [f"{ds}/g5.qcow2"]
        assert read_blocks(f"{ds}/g6.qcow2", 4, str(tmp_path)) == ["p"] * 1024
        # g5 writes on after the clone, into its own overlay (read once stopped: a running
        # QEMU keeps qcow2 metadata cached); g1, the other linked clone, still reads its empty
        # disk through its guest, not g5's pattern.
        ch5.read_heartbeat(timeout=10)
        assert ch5.send("write-pattern 8", timeout=120)["ok"] is True
        drv.stop(g5.uuid)
        assert read_blocks(f"{ds}/g5.qcow2", 8, str(tmp_path)) == ["p"] * 2048
        seen_by_g1 = ch1.send("checksum vda", timeout=120)
        assert seen_by_g1["sha256"] == hashlib.sha256(bytes(32 << 20)).hexdigest(), seen_by_g1
        assert sha256_file(f"{ds}/g1-base1.qcow2") == base_sum
    finally:
        for ch in channels:
            ch.close()
        for dom in drv.list_domains() if drv.is_alive() else []:
            drv.undefine(dom.uuid, [])
        drv.close()
        daemon.stop()
