"""The hypervisor driver contract: what every HypervisorDriver does, run against both drivers.

Each test runs twice, on the simulated driver ("simulated") and on the libvirt driver against a
private libvirtd shared by the module ("libvirt": real QEMU under TCG, firmware-only guests of
32 MiB). The tests call only the methods of the Protocol (vcenter.hypervisor.base); only the
fixture knows which driver it built. Where the drivers disagreed, the libvirt driver's behaviour
is the contract and the simulated driver was made to follow it.

The simulated host is set up as the private libvirtd's host is: it writes real files
(``create_files``), has no bridges, and its guests ignore an ACPI shutdown request as a
firmware-only guest does.

Disagreements left out of the contract (the libvirt driver would have to change):
- job_progress of a powered-off or suspended domain: the libvirt driver raises VM_POWERED_OFF
  (libvirt's job stats of an inactive domain), the simulated one answers None as the Protocol
  says ("None when none runs"). Here: a running domain without a job.
- compare_cpu of a model libvirt's CPU map does not know: INVALID_SPEC from libvirt; the
  simulated driver has no CPU map and answers "incompatible".
- Lifecycle events: libvirt also sends companions of the events tested here (resumed/unpaused
  with a start, suspended/paused before a managed save, shutdown/host before a destroy); the
  simulated driver sends only the ones tested. Subscribers must accept both.

Not covered here (each has its own tests): live migration between two hosts, Storage VMotion,
snapshots and backups, the guest channel and console.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.libvirtd.test_libvirt_driver_real import Recorder  # waits on a condition with a deadline
from vcenter.hypervisor.base import DriverError, HypervisorDriver
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.simulated import SimulatedDriver
from vcenter.lab.libvirtd import PrivateLibvirtd
from vcenter.messaging.contracts import DiskSpec, MigrationOptions, NicSpec, VmSpec


ABSENT_BRIDGE = "ctnobr0"  # no such bridge on either host


@dataclass
class Backend:
    """One driver under test and what its host offers the tests."""

    drv: HypervisorDriver
    events: Recorder  # subscribed to drv
    datastore: Path  # a directory both the test and the host see
    new_driver: Callable[[], HypervisorDriver]  # another, unconnected driver (of this host: libvirt)
    uri: str  # this host as domain_state_on / migrate name it
    absent_uri: str  # a host URI nobody answers on


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory) -> Iterator[PrivateLibvirtd]:
    d = PrivateLibvirtd(tmp_path_factory.mktemp("contract-host"), "contract-host")
    d.start()
    yield d
    d.stop()
    assert d.qemu_pids() == []


def _simulated(tmp: Path) -> Backend:
    names = itertools.count()

    def make() -> SimulatedDriver:
        # Set up like the private libvirtd's host: real files, no bridges, firmware-only guests.
        # Each simulated driver is a host of its own (its domains live in it): a distinct name
        # keeps the first one registered under its URI.
        return SimulatedDriver(hostname=f"contract-sim{next(names)}", create_files=True, existing_bridges=set(), guest_shuts_down=False)

    drv = make()
    return Backend(drv=drv, events=Recorder(), datastore=tmp, new_driver=make, uri=drv.uri, absent_uri="sim://contract-absent/system")


def _libvirt(tmp: Path, libvirtd: PrivateLibvirtd) -> Backend:
    def make() -> LibvirtDriver:
        return LibvirtDriver(libvirtd.uri, connect_timeout=5)

    return Backend(drv=make(), events=Recorder(), datastore=tmp, new_driver=make, uri=libvirtd.uri, absent_uri=f"qemu+unix:///system?socket={tmp}/absent/libvirt-sock")


@pytest.fixture(scope="module", params=["simulated", "libvirt"])
def backend(request, tmp_path_factory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"contract-{request.param}")
    if request.param == "libvirt":
        b = _libvirt(tmp, request.getfixturevalue("libvirtd"))
    else:
        b = _simulated(tmp)
    b.drv.connect()
    b.drv.subscribe_lifecycle(b.events)
    yield b
    for d in b.drv.list_domains():  # a failed test's leftovers
        b.drv.undefine(d.uuid, [])
    b.drv.close()


@pytest.fixture
def drv(backend) -> HypervisorDriver:
    return backend.drv


def make_spec(backend: Backend, disks: int = 0, **kw) -> VmSpec:
    u = str(uuid.uuid4())
    base = dict(
        name=f"ct-{u[:8]}",
        uuid=u,
        vcpus=1,
        memory_mib=32,
        disks=[DiskSpec(index=i, datastore_id=1, datastore_path=str(backend.datastore), file=f"ct-{u[:8]}-{i}.qcow2", capacity_mib=16) for i in range(disks)],
    )
    base.update(kw)
    return VmSpec(**base)


@pytest.fixture
def guest(backend) -> Iterator[VmSpec]:
    """A defined, powered-off guest, undefined after the test."""
    spec = make_spec(backend)
    backend.drv.define(spec)
    yield spec
    backend.drv.undefine(spec.uuid, [])


def code_of(call: Callable[[], object]) -> str:
    with pytest.raises(DriverError) as e:
        call()
    return e.value.code


def image_info(path: Path | str) -> dict:
    r = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


# --- the host ------------------------------------------------------------------------------


def test_host_facts_are_sane(drv):
    f = drv.host_facts()
    assert f.hostname
    assert str(uuid.UUID(f.host_uuid)) == f.host_uuid
    assert f.cpu_cores >= 1 and f.cpu_mhz >= 1 and f.memory_mib >= 16
    assert f.cpu_model and f.hypervisor
    assert f.cpu_features == sorted(f.cpu_features)
    assert f.cpu_xml == drv.host_cpu_xml()


def test_host_counters_list_running_domains_only(drv, guest):
    assert guest.uuid not in {d.uuid for d in drv.host_counters().domains}
    drv.start(guest.uuid)
    c = drv.host_counters()
    assert c.cpus >= 1 and c.cpu_mhz >= 1
    mine = [d for d in c.domains if d.uuid == guest.uuid]
    assert len(mine) == 1 and mine[0].vcpus == 1
    drv.stop(guest.uuid)
    assert guest.uuid not in {d.uuid for d in drv.host_counters().domains}


def test_host_cpu_is_compatible_with_itself(drv):
    own = drv.host_cpu_xml()
    ok, detail = drv.compare_cpu(own)
    assert ok, detail
    baseline = drv.cpu_baseline([own])
    ok, detail = drv.compare_cpu(baseline)
    assert ok, detail
    assert code_of(lambda: drv.cpu_baseline([])) == "INVALID_SPEC"


# --- define and list -----------------------------------------------------------------------


def test_define_is_powered_off_listed_and_idempotent(backend, drv):
    spec = make_spec(backend)
    n = len(backend.events.events)
    st = drv.define(spec)
    assert (st.uuid, st.name, st.power_state, st.vcpus, st.memory_mib) == (spec.uuid, spec.name, "poweredOff", 1, 32)
    ev = backend.events.wait(spec.uuid, "defined", after=n)
    assert (ev.name, ev.reason, ev.power_state) == (spec.name, "added", None)
    assert drv.define(spec) == st
    assert drv.domain_state(spec.uuid) == st
    assert drv.domain_state(spec.uuid.upper()) == st  # UUIDs compare case-insensitively
    assert [d for d in drv.list_domains() if d.uuid == spec.uuid] == [st]
    drv.undefine(spec.uuid, [])


def test_define_conflicts(backend, drv, guest):
    same_uuid = guest.model_copy(update={"name": guest.name + "-other"})
    assert code_of(lambda: drv.define(same_uuid)) == "VM_UUID_CONFLICT"
    same_name = guest.model_copy(update={"uuid": str(uuid.uuid4())})
    assert code_of(lambda: drv.define(same_name)) == "VM_NAME_CONFLICT"
    assert drv.domain_state(same_name.uuid) is None
    assert drv.domain_state(guest.uuid).name == guest.name


def test_define_refuses_a_port_group_without_bridge(backend, drv):
    spec = make_spec(backend, nics=[NicSpec(index=0, portgroup="pg-none", bridge=ABSENT_BRIDGE, mac="52:54:00:c7:00:01")])
    assert code_of(lambda: drv.define(spec)) == "PORTGROUP_ABSENT"
    assert drv.domain_state(spec.uuid) is None


def test_define_refuses_an_invalid_spec(backend, drv):
    for bad in (make_spec(backend, name="no spaces"), make_spec(backend, vcpus=0), make_spec(backend, memory_mib=8)):
        assert code_of(lambda: drv.define(bad)) == "INVALID_SPEC", bad
        assert drv.domain_state(bad.uuid) is None


# --- power ---------------------------------------------------------------------------------


def test_start_powers_on_and_delivers_started(backend, drv, guest):
    n = len(backend.events.events)
    assert drv.start(guest.uuid).power_state == "poweredOn"
    ev = backend.events.wait(guest.uuid, "started", after=n)
    assert (ev.name, ev.reason, ev.power_state) == (guest.name, "started", "poweredOn")
    assert drv.start(guest.uuid).power_state == "poweredOn"  # a redelivered start: no-op
    assert drv.domain_state(guest.uuid).power_state == "poweredOn"
    assert drv.reset(guest.uuid).power_state == "poweredOn"


def test_stop_powers_off_and_delivers_destroyed(backend, drv, guest):
    drv.start(guest.uuid)
    n = len(backend.events.events)
    assert drv.stop(guest.uuid).power_state == "poweredOff"
    ev = backend.events.wait(guest.uuid, "stopped", after=n)
    assert (ev.reason, ev.power_state) == ("destroyed", "poweredOff")
    assert drv.stop(guest.uuid).power_state == "poweredOff"  # a redelivered stop: no-op
    assert drv.domain_state(guest.uuid).power_state == "poweredOff"


def test_suspend_and_resume(backend, drv, guest):
    drv.start(guest.uuid)
    n = len(backend.events.events)
    assert drv.suspend(guest.uuid).power_state == "suspended"
    ev = backend.events.wait(guest.uuid, "stopped", after=n)
    assert (ev.reason, ev.power_state) == ("saved", "suspended")
    assert drv.suspend(guest.uuid).power_state == "suspended"  # no-op
    assert drv.domain_state(guest.uuid).power_state == "suspended"

    n = len(backend.events.events)
    assert drv.resume(guest.uuid).power_state == "poweredOn"
    assert backend.events.wait(guest.uuid, "started", after=n).power_state == "poweredOn"
    assert drv.resume(guest.uuid).power_state == "poweredOn"  # no-op

    drv.suspend(guest.uuid)
    assert drv.start(guest.uuid).power_state == "poweredOn"  # start restores a suspended guest too
    drv.suspend(guest.uuid)
    assert drv.stop(guest.uuid).power_state == "poweredOff"  # the saved memory is discarded
    assert code_of(lambda: drv.resume(guest.uuid)) == "VM_POWERED_OFF"


def test_operations_refused_in_the_wrong_power_state(drv, guest):
    for op in (drv.reset, drv.suspend, drv.resume):
        assert code_of(lambda: op(guest.uuid)) == "VM_POWERED_OFF", op.__name__
    assert drv.shutdown(guest.uuid, 1).power_state == "poweredOff"  # already off: done
    drv.start(guest.uuid)
    assert code_of(lambda: drv.reconfigure(guest.uuid, 2, None)) == "VM_POWERED_ON"
    drv.suspend(guest.uuid)
    assert code_of(lambda: drv.reconfigure(guest.uuid, 2, None)) == "VM_SUSPENDED"
    drv.stop(guest.uuid)


def test_shutdown_of_a_guest_that_ignores_it_times_out(drv, guest):
    drv.start(guest.uuid)
    t0 = time.monotonic()
    assert code_of(lambda: drv.shutdown(guest.uuid, 1)) == "GUEST_SHUTDOWN_TIMEOUT"
    assert time.monotonic() - t0 >= 1  # it waited the timeout out
    assert drv.domain_state(guest.uuid).power_state == "poweredOn"
    drv.stop(guest.uuid)


def test_reconfigure_while_powered_off(drv, guest):
    st = drv.reconfigure(guest.uuid, 2, 48)
    assert (st.power_state, st.vcpus, st.memory_mib) == ("poweredOff", 2, 48)
    assert drv.domain_state(guest.uuid) == st
    assert [d for d in drv.list_domains() if d.uuid == guest.uuid] == [st]
    st = drv.reconfigure(guest.uuid, None, 32)
    assert (st.vcpus, st.memory_mib) == (2, 32)
    st = drv.reconfigure(guest.uuid, 1, None)
    assert (st.vcpus, st.memory_mib) == (1, 32)
    assert code_of(lambda: drv.reconfigure(guest.uuid, 0, None)) == "INVALID_SPEC"
    assert code_of(lambda: drv.reconfigure(guest.uuid, None, 8)) == "INVALID_SPEC"
    assert drv.start(guest.uuid).vcpus == 1
    drv.stop(guest.uuid)


# --- undefine ------------------------------------------------------------------------------


def test_undefine_removes_the_domain_and_deletes_its_disks(backend, drv):
    spec = make_spec(backend, disks=2)
    paths = drv.create_disks(spec)
    drv.define(spec)
    drv.start(spec.uuid)
    n = len(backend.events.events)
    drv.undefine(spec.uuid, paths)
    assert backend.events.wait(spec.uuid, "stopped", after=n).reason == "destroyed"
    assert backend.events.wait(spec.uuid, "undefined", after=n).reason == "removed"
    assert drv.domain_state(spec.uuid) is None
    assert spec.uuid not in {d.uuid for d in drv.list_domains()}
    assert [p for p in paths if os.path.exists(p)] == []
    drv.undefine(spec.uuid, paths)  # idempotent


def test_undefine_of_a_suspended_domain(backend, drv):
    spec = make_spec(backend)
    drv.define(spec)
    drv.start(spec.uuid)
    drv.suspend(spec.uuid)
    drv.undefine(spec.uuid, [])  # the managed save image goes with it
    assert drv.domain_state(spec.uuid) is None


def test_undefine_checks_the_disk_paths(backend, drv, guest):
    assert code_of(lambda: drv.undefine(guest.uuid, ["relative/disk.qcow2"])) == "INVALID_SPEC"
    assert drv.domain_state(guest.uuid) is not None  # refused before anything was done
    a_directory = backend.datastore / f"dir-{guest.name}"
    a_directory.mkdir()
    assert code_of(lambda: drv.undefine(guest.uuid, [str(a_directory)])) == "DISK_DELETE_FAILED"
    assert drv.domain_state(guest.uuid) is None
    assert a_directory.is_dir()


# --- unknown domains -----------------------------------------------------------------------

_ON_UNKNOWN: dict[str, Callable[[HypervisorDriver, str], object]] = {
    "start": lambda d, u: d.start(u),
    "stop": lambda d, u: d.stop(u),
    "shutdown": lambda d, u: d.shutdown(u, 1),
    "reset": lambda d, u: d.reset(u),
    "suspend": lambda d, u: d.suspend(u),
    "resume": lambda d, u: d.resume(u),
    "reconfigure": lambda d, u: d.reconfigure(u, 1, 32),
    "job_progress": lambda d, u: d.job_progress(u),
    "abort_job": lambda d, u: d.abort_job(u),
    "move_disk": lambda d, u: d.move_disk(u, "vda", "/nonexistent/ct.qcow2", "qcow2"),
    "move_disk_offline": lambda d, u: d.move_disk_offline(u, "vda", "/nonexistent/ct.qcow2", "qcow2"),
}


@pytest.mark.parametrize("op", sorted(_ON_UNKNOWN))
def test_an_unknown_domain_is_vm_not_found(drv, op):
    assert code_of(lambda: _ON_UNKNOWN[op](drv, str(uuid.uuid4()))) == "VM_NOT_FOUND"


def test_an_unknown_domain_is_absent_and_undefine_is_a_no_op(drv):
    unknown = str(uuid.uuid4())
    assert drv.domain_state(unknown) is None
    drv.undefine(unknown, [])


def test_a_malformed_uuid_is_invalid_spec(drv):
    assert code_of(lambda: drv.domain_state("not-a-uuid")) == "INVALID_SPEC"
    assert code_of(lambda: drv.start("not-a-uuid")) == "INVALID_SPEC"
    assert code_of(lambda: drv.undefine("not-a-uuid", [])) == "INVALID_SPEC"


# --- disks and pools -----------------------------------------------------------------------


def test_create_disks_makes_files_of_the_requested_size_and_format(backend, drv):
    u = str(uuid.uuid4())
    ds = str(backend.datastore / f"create-{u[:8]}")
    os.mkdir(ds)
    spec = VmSpec(
        name=f"ct-{u[:8]}",
        uuid=u,
        vcpus=1,
        memory_mib=32,
        disks=[
            DiskSpec(index=0, datastore_id=1, datastore_path=ds, file=f"ct-{u[:8]}.qcow2", capacity_mib=16),
            DiskSpec(index=1, datastore_id=1, datastore_path=ds, file=f"ct-{u[:8]}.raw", capacity_mib=8, format="raw"),
        ],
    )
    paths = drv.create_disks(spec)
    assert paths == [f"{ds}/ct-{u[:8]}.qcow2", f"{ds}/ct-{u[:8]}.raw"]
    for path, fmt, mib in zip(paths, ("qcow2", "raw"), (16, 8)):
        info = image_info(path)
        assert (info["format"], info["virtual-size"]) == (fmt, mib << 20), path
    assert subprocess.run(["qemu-img", "check", "-q", paths[0]]).returncode == 0
    assert sorted(os.listdir(ds)) == sorted(os.path.basename(p) for p in paths)  # no temporary left

    before = [os.stat(p) for p in paths]
    assert drv.create_disks(spec) == paths  # a redelivered create keeps the files
    assert [(s.st_ino, s.st_mtime_ns) for s in before] == [(s.st_ino, s.st_mtime_ns) for s in map(os.stat, paths)]
    drv.undefine(spec.uuid, paths)

    missing = spec.model_copy(update={"disks": [spec.disks[0].model_copy(update={"datastore_path": f"{ds}/absent"})]})
    assert code_of(lambda: drv.create_disks(missing)) == "DATASTORE_ABSENT"


def test_pool_lifecycle(backend, drv):
    path = backend.datastore / "pools" / "ct-pool"
    drv.ensure_pool("ct-pool", str(path))
    assert path.is_dir()  # built
    drv.ensure_pool("ct-pool", str(path))  # idempotent
    capacity, available = drv.pool_usage("ct-pool")
    assert 0 < available <= capacity
    assert code_of(lambda: drv.ensure_pool("ct-pool", str(backend.datastore / "elsewhere"))) == "POOL_CONFLICT"
    assert code_of(lambda: drv.ensure_pool("ct-pool2", str(path))) == "POOL_CONFLICT"
    assert code_of(lambda: drv.ensure_pool("bad name", str(path))) == "INVALID_SPEC"
    assert code_of(lambda: drv.ensure_pool("ct-pool3", "relative")) == "INVALID_SPEC"

    (path / "keep").write_text("x")
    drv.remove_pool("ct-pool")
    assert (path / "keep").read_text() == "x"  # removing a pool never deletes files
    assert code_of(lambda: drv.pool_usage("ct-pool")) == "DATASTORE_ABSENT"
    drv.remove_pool("ct-pool")  # idempotent


# --- jobs, other hosts, the connection --------------------------------------------------------


def test_job_progress_and_abort_job_without_a_job(drv, guest):
    drv.start(guest.uuid)
    assert drv.job_progress(guest.uuid) is None
    assert drv.abort_job(guest.uuid) is False
    assert drv.domain_state(guest.uuid).power_state == "poweredOn"
    drv.stop(guest.uuid)
    assert drv.abort_job(guest.uuid) is False


def test_domain_state_on_a_host(backend, drv, guest):
    assert drv.domain_state_on(backend.uri, guest.uuid) == drv.domain_state(guest.uuid)
    assert drv.domain_state_on(backend.uri, str(uuid.uuid4())) is None
    assert code_of(lambda: drv.domain_state_on(backend.absent_uri, guest.uuid)) == "HOST_UNREACHABLE"


def test_migrate_to_a_host_that_does_not_answer(backend, drv, guest):
    drv.start(guest.uuid)
    options = MigrationOptions(dest_uri=backend.absent_uri)
    assert code_of(lambda: drv.migrate(guest.uuid, options)) == "HOST_UNREACHABLE"
    assert drv.domain_state(guest.uuid).power_state == "poweredOn"  # still here, still running
    drv.stop(guest.uuid)


def test_close_and_reconnect_keep_subscriptions(backend):
    other = backend.new_driver()
    assert not other.is_alive()
    other.connect()
    assert other.is_alive()
    events = Recorder()
    other.subscribe_lifecycle(events)
    other.close()
    assert not other.is_alive()
    assert code_of(other.list_domains) == "HYPERVISOR_UNREACHABLE"
    assert code_of(other.host_facts) == "HYPERVISOR_UNREACHABLE"
    other.connect()
    assert other.is_alive()
    spec = make_spec(backend)
    try:
        n = len(events.events)
        other.define(spec)
        other.start(spec.uuid)
        assert events.wait(spec.uuid, "started", after=n).power_state == "poweredOn"
    finally:
        other.undefine(spec.uuid, [])
        other.close()
