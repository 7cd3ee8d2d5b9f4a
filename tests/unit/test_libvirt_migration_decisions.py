"""The pure decisions of live migration (vcenter.hypervisor.libvirt.migration): what libvirt is
asked, where copied disks land, what a failure is called, how job stats read."""

from __future__ import annotations

import pytest

import libvirt  # noqa: E402  (libvirt-python: installed by make install, never skipped)

from vcenter.hypervisor.base import DriverError  # noqa: E402
from vcenter.hypervisor.libvirt.migration import (  # noqa: E402
    copied_disk_dirs,
    failure_code,
    job_running,
    migration_flags,
    migration_params,
    progress_from_stats,
    relocate_disks,
)
from vcenter.messaging.contracts import MigrationOptions  # noqa: E402

BASE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR

DOMAIN = """<domain type='kvm'><name>g</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/ds1/g/a.qcow2'/><target dev='vda'/></disk>
  <disk type='file' device='disk'><source file='/ds1/g/b.raw'/><target dev='vdb'/></disk>
  <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdc'/></disk>
  <disk type='file' device='cdrom'><source file='/iso/boot.iso'/><target dev='hdc'/></disk>
</devices></domain>"""


def test_a_plain_migration_is_live_peer_to_peer_persistent_there_and_gone_here():
    assert migration_flags(MigrationOptions(dest_uri="qemu+tcp://h2/system")) == BASE
    assert migration_params(MigrationOptions(dest_uri="qemu+tcp://h2/system")) == {}


def test_each_option_adds_its_flag_and_parameter():
    o = MigrationOptions(dest_uri="qemu+tcp://h2/system", unsafe=True, copy_storage=True, tls=True, auto_converge=True, postcopy=True, dest_address="10.0.0.2", bandwidth_mibps=100, copy_disks=["vda"])
    assert migration_flags(o) == (BASE | libvirt.VIR_MIGRATE_UNSAFE | libvirt.VIR_MIGRATE_NON_SHARED_DISK | libvirt.VIR_MIGRATE_TLS | libvirt.VIR_MIGRATE_AUTO_CONVERGE | libvirt.VIR_MIGRATE_POSTCOPY)
    assert migration_params(o) == {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.0.0.2", libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100, libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}


def test_an_address_with_a_scheme_is_kept_and_disks_are_chosen_only_when_copying():
    o = MigrationOptions(dest_uri="qemu+tls://h2/system", dest_address="tls://h2:49152", copy_disks=["vda"])
    assert migration_params(o) == {libvirt.VIR_MIGRATE_PARAM_URI: "tls://h2:49152"}


def test_relocated_disks_point_at_their_new_files_and_nothing_else_changes():
    out = relocate_disks(DOMAIN, {"vdb": "/ds2/g/b.raw"})
    assert "/ds2/g/b.raw" in out and "/ds1/g/b.raw" not in out and "/ds1/g/a.qcow2" in out
    with pytest.raises(DriverError) as e:
        relocate_disks(DOMAIN, {"vdc": "/ds2/g/c.raw"})
    assert e.value.code == "MIGRATION_FAILED"
    with pytest.raises(DriverError) as e:
        relocate_disks(DOMAIN, {"vdq": "/ds2/x", "vdz": "/ds2/y"})
    assert e.value.code == "DISK_NOT_FOUND" and "vdq, vdz" in e.value.message


def test_the_directories_a_copy_writes_into_on_the_target():
    assert copied_disk_dirs(DOMAIN, None, None) == {"/ds1/g"}
    assert copied_disk_dirs(DOMAIN, ["vdb"], {"vdb": "/ds2/g/b.raw"}) == {"/ds2/g"}
    assert copied_disk_dirs(DOMAIN, None, {"vdb": "/ds2/g/b.raw"}) == {"/ds1/g", "/ds2/g"}
    assert copied_disk_dirs(DOMAIN, ["vdc"], None) == set()  # a block device is not copied as a file


@pytest.mark.parametrize(
    "message,code,expected",
    [
        ("unable to connect to server at 'h2:16509': Connection refused", libvirt.VIR_ERR_SYSTEM_ERROR, "HOST_UNREACHABLE"),
        ("Cannot recv data: Connection reset by peer", None, "HOST_UNREACHABLE"),
        ("migration job: unexpectedly failed: timed out", libvirt.VIR_ERR_OPERATION_FAILED, "MIGRATION_FAILED"),
        ("Requested operation is not valid: domain is not running", libvirt.VIR_ERR_OPERATION_INVALID, "VM_NOT_RUNNING"),
        ("domain is not running", libvirt.VIR_ERR_INTERNAL_ERROR, "MIGRATION_FAILED"),
        ("internal error: qemu unexpectedly closed the monitor", libvirt.VIR_ERR_INTERNAL_ERROR, "MIGRATION_FAILED"),
    ],
)
def test_what_a_failed_migration_is_called(message, code, expected):
    assert failure_code(message, code) == expected


def test_job_stats_read_as_progress():
    assert job_running({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED}) and not job_running({})
    assert not job_running({"type": libvirt.VIR_DOMAIN_JOB_COMPLETED})
    assert progress_from_stats({}, False).phase == "setup"
    p = progress_from_stats({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_iteration": 2, "memory_constant": 10, "memory_page_size": 4096, "time_elapsed": 1500, "data_total": 100}, False)
    assert (p.phase, p.memory_zero_bytes, p.elapsed_ms, p.iteration, p.data_total) == ("precopy", 40960, 1500, 2, 100)
    assert progress_from_stats({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED}, True).phase == "postcopy"
    done = progress_from_stats({"downtime": 42, "setup_time": 7}, False, completed=True)
    assert (done.phase, done.downtime_ms, done.setup_time_ms) == ("completed", 42, 7)
    assert progress_from_stats({"type": libvirt.VIR_DOMAIN_JOB_FAILED}, False).phase == "failed"
    assert progress_from_stats({"type": libvirt.VIR_DOMAIN_JOB_CANCELLED}, False).phase == "cancelled"
