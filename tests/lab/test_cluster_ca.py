"""Issue 17 item 3 on the lab: hosts get their TLS certificates from the server's CA, VMotion
runs over qemu+tls with TLS migration streams, and a host removed from the inventory is
revoked: its certificate no longer opens another host's libvirtd, so it cannot migrate in.

Replaces tests/lab/test_migration_tls.py (the lab's own CA, vcenter/lab/pki.py, is gone): the
TLS migration stream and its credentials object are checked here with the server's CA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done
from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.lab.guest import build_guest
from vcenter.messaging.contracts import VmSpec

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("libvirtd"), reason="the lab needs root and libvirtd")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with lab_stack(tmp_path_factory.mktemp("ca"), 2, agent_pki_refresh_period=1) as (stack, lab, extra):
        with stack.client() as api:
            yield stack, lab, extra, api


def _pkipath(host, directory: Path) -> str:
    """A client pki directory (libvirt's pkipath layout) holding ``host``'s own files, as its
    libvirtd uses them when it dials another host."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, inside in (("cacert.pem", "/etc/pki/CA/cacert.pem"), ("clientcert.pem", "/etc/pki/libvirt/clientcert.pem"), ("clientkey.pem", "/etc/pki/libvirt/private/clientkey.pem")):
        shutil.copy(host.libvirtd.path(inside), directory / name)
    return str(directory)


def _tls_hostname(target, pkipath: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", f"{target.tls_uri}?pkipath={pkipath}", "hostname"], capture_output=True, text=True, timeout=30)


def _serial(host) -> int:
    return x509.load_pem_x509_certificate(host.libvirtd.path("/etc/pki/libvirt/servercert.pem").read_bytes()).serial_number


def test_hosts_listen_on_tls_with_certificates_of_the_server_ca(cluster, tmp_path):
    stack, lab, extra, api = cluster
    ca = x509.load_pem_x509_certificate((Path(stack.env["VCENTER_KEY_DIR"]) / "ca/ca.crt").read_bytes())
    for h in lab.hosts:
        assert "listen_tls = 1" in h.libvirtd.path("/etc/libvirt/libvirtd.conf").read_text()
        for inside in ("/etc/pki/libvirt/servercert.pem", "/etc/pki/libvirt/clientcert.pem", "/etc/pki/qemu/server-cert.pem", "/etc/pki/qemu/client-cert.pem"):
            x509.load_pem_x509_certificate(h.libvirtd.path(inside).read_bytes()).verify_directly_issued_by(ca)
        assert api.get(f"/api/v1/hosts/{extra['ids'][h.name]}").json()["libvirt_uri"] == h.tls_uri
    h1, h2 = lab.hosts
    reached = _tls_hostname(h2, _pkipath(h1, tmp_path / "h1"))
    assert reached.returncode == 0 and reached.stdout.strip() == "host2", reached.stderr


def _migrate_parameters(host, name: str) -> str:
    return subprocess.run(["virsh", "-c", host.local_uri, "qemu-monitor-command", name, "--hmp", "info migrate_parameters"], capture_output=True, text=True, timeout=10).stdout


def _set_bandwidth(api, cluster_id: int, value) -> None:
    current = api.get(f"/api/v1/clusters/{cluster_id}").json()
    settings = {**current["settings"], "migration": {**current["settings"].get("migration", {}), "bandwidth_mibps": value}}
    assert api.patch(f"/api/v1/clusters/{cluster_id}", json={"settings": settings, "version": current["version"]}).status_code == 200


def test_vmotion_runs_over_qemu_tls_with_a_tls_migration_stream(cluster):
    stack, lab, extra, api = cluster
    h1, h2 = lab.hosts
    ids, cl = extra["ids"], extra["cl"]
    created = task_done(api, api.post("/api/v1/vms", json={"name": "tls1", "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}}).json())
    vm_id = created["object_id"]
    assert task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json())["state"] == "success"
    _set_bandwidth(api, cl["id"], 1)  # slow enough to look at the migration while it runs
    try:
        task = api.post(f"/api/v1/vms/{vm_id}/migrate", json={"host_id": ids["host2"]})
        assert task.status_code == 202, task.text
        seen = {"params": "", "clients": ""}

        def tls_in_use() -> bool:
            seen["params"] = _migrate_parameters(h1, "tls1")
            seen["clients"] = subprocess.run(["virt-admin", "-c", h2.libvirtd.admin_uri, "srv-clients-list", "libvirtd"], capture_output=True, text=True, timeout=10).stdout
            creds = next((ln for ln in seen["params"].splitlines() if ln.startswith("tls-creds:")), "")
            return "objlibvirt" in creds and " tls " in f" {seen['clients']} "

        wait_for(tls_in_use, 30, interval=0.2, what="a TLS migration stream and a TLS client on the target")
        print(f"\nsource QEMU migration parameters:\n{seen['params']}\ntarget libvirtd clients:\n{seen['clients']}")
        # The source libvirtd dialled qemu+tls (a tls client of host2's daemon), and QEMU's
        # stream carries TLS credentials checked against host2's address.
        hostname = next(ln for ln in seen["params"].splitlines() if ln.startswith("tls-hostname:"))
        assert h2.address in hostname, hostname
        subprocess.run(["virsh", "-c", h1.local_uri, "migrate-setspeed", "tls1", "8192"], check=True, capture_output=True, timeout=10)
        done = task_done(api, task.json(), timeout=120)
        assert done["state"] == "success", (done["error_code"], done["error_message"])
    finally:
        _set_bandwidth(api, cl["id"], None)
    assert api.get(f"/api/v1/vms/{vm_id}").json()["host_id"] == ids["host2"]
    assert "tls1" in (h2.guests() or []) and "tls1" not in (h1.guests() or [])


@pytest.fixture(scope="module")
def image():
    return build_guest()


def test_a_removed_host_is_revoked_and_cannot_migrate_in(cluster, image, tmp_path):
    stack, lab, extra, api = cluster
    h1, h2 = lab.hosts
    revoked = _serial(h1)
    pkipath = _pkipath(h1, tmp_path / "h1")
    assert _tls_hostname(h2, pkipath).returncode == 0  # before: host1's certificate opens host2
    r = api.delete(f"/api/v1/hosts/{extra['ids']['host1']}")
    assert r.status_code == 204, r.text
    crl_file = h2.libvirtd.path("/etc/pki/CA/cacrl.pem")
    t0 = time.monotonic()
    wait_for(lambda: revoked in {c.serial_number for c in x509.load_pem_x509_crl(crl_file.read_bytes())}, 30, what="host2's agent installed the CRL naming host1")
    # host2's agent reloaded libvirtd's TLS files after writing the CRL: the handshake fails.
    refused = wait_for(lambda: (p := _tls_hostname(h2, pkipath)).returncode != 0 and p, 30, what="host1's certificate refused by host2")
    print(f"\nrevocation effective on host2 {time.monotonic() - t0:.2f}s after the removal: {refused.stderr.strip()}")
    assert _tls_hostname(h2, _pkipath(h2, tmp_path / "h2")).returncode == 0  # host2's own still works
    # A guest still running on the removed host cannot be migrated into host2: host1's
    # libvirtd dials host2 with its own (revoked) certificate, as in a VMotion.
    d1 = LibvirtDriver(h1.local_uri, connect_timeout=10)
    d1.connect()
    u = str(uuid.uuid4())
    name = f"out-{u[:8]}"
    try:
        d1.define(VmSpec(name=name, uuid=u, vcpus=1, memory_mib=96, kernel=str(image.kernel), initrd=str(image.initrd), cmdline=image.cmdline_for(hostname="gout")))
        d1.start(u)
        migrate = h1.run(["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", "--tls", name, h2.tls_uri, f"tcp://{h2.address}"], check=False, timeout=120)
        print(f"migration from the removed host: rc {migrate.returncode}: {migrate.stderr.strip()}")
        assert migrate.returncode != 0
        assert "cacert" not in migrate.stderr and "No such file" not in migrate.stderr, migrate.stderr  # refused by host2, not a setup fault
        assert d1.domain_state(u).power_state == "poweredOn"
        assert name not in (h2.guests() or [])
    finally:
        try:
            d1.undefine(u, [])
        except DriverError:
            pass
        d1.close()


def test_lab_hosts_are_installed_by_the_host_installer_with_its_default_paths(cluster):
    """Issue 17 item 1: the lab's hosts run what deploy/install-host.sh installed, started by
    its no-systemd bootstrap line, with its default paths private to each host."""
    stack, lab, extra, api = cluster
    for h in lab.hosts:
        if h.name not in stack.hosts:
            continue  # removed by the revocation test
        env_file = h.path("/etc/virtcenter/agent.env")
        settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        assert settings["VCENTER_PUBLIC_URL"] == f"http://10.213.0.1:{stack.api_port}" and settings["VCENTER_AGENT_ADDRESS"] == h.address
        assert "VCENTER_AGENT_STATE_DIR" not in settings and "VCENTER_DATABASE_URL" not in settings
        assert env_file.stat().st_mode & 0o777 == 0o600
        assert h.path("/etc/systemd/system/virtcenter-agent.service").is_file()
        assert (h.path("/var/lib/virtcenter/agent") / "agent.crt").is_file()  # the agent's default state dir
        agent = h.process_pid("agent")
        assert agent is not None
        argv = Path(f"/proc/{agent}/cmdline").read_bytes().split(b"\0")
        assert b"/opt/virtcenter/bin/vcenter" in argv, argv
        assert os.readlink(f"/proc/{agent}/root") == "/"  # same root fs, private mounts only
        # the host's /run is its own (the machine's has the lab's network namespaces in it)
        assert Path("/run/netns").is_dir() and set(h.run(["ls", "-A", "/run"]).stdout.split()) == {p.name for p in (h.workdir / "run").iterdir()}
        # the install stayed inside the host: nothing under the machine's own paths
        assert not Path("/etc/virtcenter/agent.env").exists() or f"{h.address}" not in Path("/etc/virtcenter/agent.env").read_text()
