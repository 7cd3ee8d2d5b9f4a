"""TLS migration streams between lab hosts (VIR_MIGRATE_TLS), at the driver level.

Every lab host has certificates of the lab CA (vcenter.lab.pki) and qemu.conf
``migrate_tls_x509_cert_dir``/``migrate_tls_x509_verify = 1``. Checked here: a TLS migration
moves a running guest; QEMU's migration parameters carry the TLS credentials object while a
(bandwidth-capped) TLS migration runs; and with the target's CA replaced by another one, a TLS
migration fails (MIGRATION_FAILED, the guest stays on the source) while a plain one still works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.libvirt.guestchannel import GuestChannel
from vcenter.lab import pki
from vcenter.lab.guest import build_guest
from vcenter.lab.hosts import Lab
from vcenter.messaging.contracts import MigrationOptions, VmSpec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("libvirtd"), reason="the lab needs root and libvirtd"),
]


@pytest.fixture(scope="module")
def image():
    return build_guest()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, image):
    lab = Lab(tmp_path_factory.mktemp("tlslab"))
    t0 = time.monotonic()
    lab.up(2)
    print(f"\nlab up (2 hosts, with certificates) in {time.monotonic() - t0:.2f}s")
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def drivers(lab):
    drvs = [LibvirtDriver(h.uri, connect_timeout=10) for h in lab.hosts]
    for d in drvs:
        d.connect()
    yield drvs
    for d in drvs:
        d.close()


@pytest.fixture
def guest(drivers, image):
    """A tiny diskless guest (direct kernel boot, 96 MiB) running on host1."""
    d1, _ = drivers
    u = str(uuid.uuid4())
    spec = VmSpec(name=f"tls-{u[:8]}", uuid=u, vcpus=1, memory_mib=96, kernel=str(image.kernel), initrd=str(image.initrd), cmdline=image.cmdline_for(hostname="gtls"))
    d1.define(spec)
    d1.start(u)
    yield spec
    for d in drivers:
        try:
            d.undefine(u, [])
        except DriverError:
            pass


def opts(lab, dest: int = 1, **kw) -> MigrationOptions:
    h = lab.hosts[dest]
    return MigrationOptions(dest_uri=h.uri, dest_address=h.address, **kw)


def state_of(drv: LibvirtDriver, u: str) -> str | None:
    st = drv.domain_state(u)
    return None if st is None else st.power_state


def heartbeat(lab, index: int, drv: LibvirtDriver, u: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not (path := drv.guest_channel_path(u)):
        assert time.monotonic() < deadline, "no heartbeat channel"
        time.sleep(0.2)
    ch = GuestChannel(lab.hosts[index].libvirtd.path(path))
    try:
        return ch.read_heartbeat(timeout=timeout)["seq"]
    finally:
        ch.close()


def migrate_parameters(host, name: str) -> str:
    return subprocess.run(["virsh", "-c", host.local_uri, "qemu-monitor-command", name, "--hmp", "info migrate_parameters"], capture_output=True, text=True, timeout=10).stdout


def test_hosts_have_certificates_and_qemu_conf(lab):
    for h in lab.hosts:
        for f in pki.FILES:
            assert (h.tls_dir / f).is_file(), f
        conf = (h.workdir / "etc/libvirt/qemu.conf").read_text()
        assert f'migrate_tls_x509_cert_dir = "{h.tls_dir}"' in conf
        assert "migrate_tls_x509_verify = 1" in conf


def test_tls_migration_moves_a_running_guest_and_back(lab, drivers, guest):
    d1, d2 = drivers
    before = heartbeat(lab, 0, d1, guest.uuid)
    t0 = time.monotonic()
    result = d1.migrate(guest.uuid, opts(lab, tls=True, max_downtime_ms=300))
    took = time.monotonic() - t0
    print(f"\nTLS migration host1->host2 {took:.2f}s: {result}")
    assert result.phase == "completed" and not result.already_done
    assert state_of(d1, guest.uuid) is None
    assert state_of(d2, guest.uuid) == "poweredOn"
    assert guest.name in (lab.hosts[1].guests() or [])
    after = heartbeat(lab, 1, d2, guest.uuid, timeout=15)
    assert after > before, "the guest restarted instead of moving"
    back = d2.migrate(guest.uuid, opts(lab, dest=0, tls=True))
    assert back.phase == "completed"
    assert state_of(d1, guest.uuid) == "poweredOn" and state_of(d2, guest.uuid) is None
    assert heartbeat(lab, 0, d1, guest.uuid, timeout=15) > after


def test_capped_tls_migration_runs_with_tls_credentials(lab, drivers, guest):
    d1, d2 = drivers
    h1 = lab.hosts[0]
    cancel = threading.Event()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = d1.migrate(guest.uuid, opts(lab, tls=True, bandwidth_mibps=1), None, cancel)
        except DriverError as e:
            outcome["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    params = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and t.is_alive():
        params = migrate_parameters(h1, guest.name)
        line = next((ln for ln in params.splitlines() if ln.startswith("tls-creds:")), "")
        if "objlibvirt" in line:
            break
        time.sleep(0.2)
    print(f"\nsource migration parameters during the capped TLS migration:\n{params}")
    cancel.set()
    t.join(60)
    assert not t.is_alive()
    tls_line = next(ln for ln in params.splitlines() if ln.startswith("tls-creds:"))
    assert "objlibvirt" in tls_line, tls_line
    assert "tls-hostname:" in params and lab.hosts[1].address in params
    assert outcome.get("error") is not None and outcome["error"].code == "MIGRATION_CANCELLED", outcome
    assert state_of(d1, guest.uuid) == "poweredOn" and state_of(d2, guest.uuid) is None


def test_tls_migration_fails_when_the_target_trusts_another_ca(lab, drivers, guest, tmp_path):
    """host2 gets a consistent identity from another CA (its own certificates validate, so
    QEMU accepts its credentials object): the TLS handshake itself must fail, both ways."""
    d1, d2 = drivers
    h2 = lab.hosts[1]
    saved = {f: (h2.tls_dir / f).read_bytes() for f in pki.FILES}
    other = pki.LabCA.create("some other CA").install_host(tmp_path / "other", h2.name, [h2.address])
    for f in pki.FILES:  # QEMU reads the directory at each migration
        (h2.tls_dir / f).write_bytes((other / f).read_bytes())
    try:
        t0 = time.monotonic()
        with pytest.raises(DriverError) as e:
            d1.migrate(guest.uuid, opts(lab, tls=True))
        print(f"\nTLS migration to a host of another CA failed after {time.monotonic() - t0:.2f}s: {e.value.code}: {e.value}")
        assert e.value.code == "MIGRATION_FAILED"
        assert "object-add" not in str(e.value), "failed before the handshake"
        assert state_of(d1, guest.uuid) == "poweredOn" and state_of(d2, guest.uuid) is None
        heartbeat(lab, 0, d1, guest.uuid, timeout=15)
        # The stream without TLS does not care about certificates.
        plain = d1.migrate(guest.uuid, opts(lab))
        assert plain.phase == "completed"
        assert state_of(d1, guest.uuid) is None and state_of(d2, guest.uuid) == "poweredOn"
    finally:
        for f, data in saved.items():
            (h2.tls_dir / f).write_bytes(data)
    # With the genuine certificates back, TLS works again (host2 -> host1).
    back = d2.migrate(guest.uuid, opts(lab, dest=0, tls=True))
    assert back.phase == "completed" and state_of(d1, guest.uuid) == "poweredOn"
