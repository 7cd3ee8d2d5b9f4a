"""The agent's side of the cluster CA (workers.agent.host_tls): the key made on the host and
never sent, the files libvirt and QEMU read written with private keys, renewal only when due,
the CRL rewritten when it changed, and libvirtd told to re-read its TLS files only then."""

from __future__ import annotations

import datetime as dt
import stat
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vcenter.core.host_pki import host_sans
from vcenter.core.settings import Settings
from vcenter.services.certificates import authority
from workers.agent.host_tls import HostTls

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


class FakeServer:
    """The two agent routes, answered by a real CA: what the agent sends is recorded."""

    def __init__(self, tmp_path, validity=365 * DAY):
        self.ca = authority.load_or_create(tmp_path / "keys", NOW, 3650 * DAY)
        self.validity = validity
        self.csrs: list[str] = []
        self.revoked: list[tuple[int, dt.datetime]] = []
        self.now = NOW  # the server's clock: when it signs the CRL

    def post(self, path, body, retry_for=None):
        assert path == "/certificate" and set(body) == {"csr"}
        self.csrs.append(body["csr"])
        csr = x509.load_pem_x509_csr(body["csr"].encode())
        cert = self.ca.sign_host(csr.public_key(), "h1", host_sans("h1", ["10.0.0.1"]), NOW, self.validity)
        return {
            "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "ca_certificate": self.ca.cert_pem,
            "serial": format(cert.serial_number, "x"),
            "not_after": str(cert.not_valid_after_utc),
        }

    def get_json(self, path, retry_for=30.0):
        assert path == "/pki"
        return {"ca_certificate": self.ca.cert_pem, "crl": self.ca.sign_crl(self.revoked, self.now, 7 * DAY)}


def _tls(tmp_path, server, now=NOW, **kw):
    settings = Settings(
        agent_pki_ca_dir=str(tmp_path / "etc/pki/CA"),
        agent_pki_libvirt_dir=str(tmp_path / "etc/pki/libvirt"),
        agent_pki_qemu_dir=str(tmp_path / "etc/pki/qemu"),
        host_cert_renew_before_days=30,
        **kw,
    )
    reloads: list[list[str]] = []
    return HostTls(settings, server, "h1", reload=reloads.append, clock=lambda: now), reloads


def test_first_refresh_installs_key_certificate_ca_and_crl_and_reloads_libvirtd(tmp_path):
    server = FakeServer(tmp_path)
    tls, reloads = _tls(tmp_path, server)
    assert tls.refresh()
    assert reloads == [["virt-admin", "server-update-tls", "libvirtd"]]
    for key in tls.files.key:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()
    assert stat.S_IMODE((tmp_path / "etc/pki/libvirt/private").stat().st_mode) == 0o700
    key = serialization.load_pem_private_key((tmp_path / "etc/pki/qemu/server-key.pem").read_bytes(), None)
    for cert_file in tls.files.cert:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        cert.verify_directly_issued_by(server.ca.cert)
    # The key never travelled: the CSR holds the public half only.
    assert "PRIVATE" not in server.csrs[0]
    assert (tmp_path / "etc/pki/CA/cacert.pem").read_text() == server.ca.cert_pem
    assert x509.load_pem_x509_crl((tmp_path / "etc/pki/qemu/ca-crl.pem").read_bytes()).is_signature_valid(server.ca.key.public_key())


def test_nothing_is_asked_or_reloaded_while_the_certificate_is_fresh(tmp_path):
    server = FakeServer(tmp_path)
    tls, reloads = _tls(tmp_path, server)
    tls.refresh()
    server.now = NOW + DAY
    later, later_reloads = _tls(tmp_path, server, now=NOW + DAY)
    assert not later.refresh()
    server.now = NOW + 300 * DAY  # the CRL the host holds ran out: a new one, and a reload
    later, later_reloads = _tls(tmp_path, server, now=NOW + 300 * DAY)
    assert later.refresh() and len(later_reloads) == 1
    later, later_reloads = _tls(tmp_path, server, now=NOW + 300 * DAY)
    assert not later.refresh()
    assert len(server.csrs) == 1 and later_reloads == []


def test_renewed_within_the_window_with_a_new_key(tmp_path):
    server = FakeServer(tmp_path)
    tls, _ = _tls(tmp_path, server)
    tls.refresh()
    old_key = (tmp_path / "etc/pki/libvirt/private/serverkey.pem").read_bytes()
    due, reloads = _tls(tmp_path, server, now=NOW + 340 * DAY)
    assert due.refresh()
    assert len(server.csrs) == 2 and reloads
    assert (tmp_path / "etc/pki/libvirt/private/serverkey.pem").read_bytes() != old_key


def test_a_changed_crl_is_written_and_reloaded(tmp_path):
    server = FakeServer(tmp_path)
    tls, reloads = _tls(tmp_path, server)
    tls.refresh()
    server.revoked.append((0x1234, NOW))
    assert tls.refresh()
    assert len(reloads) == 2 and len(server.csrs) == 1
    crl = x509.load_pem_x509_crl((tmp_path / "etc/pki/CA/cacrl.pem").read_bytes())
    assert [r.serial_number for r in crl] == [0x1234]


def test_a_missing_file_means_a_new_certificate_and_an_empty_reload_command_runs_nothing(tmp_path):
    server = FakeServer(tmp_path)
    tls, reloads = _tls(tmp_path, server, agent_libvirt_tls_reload="")
    tls.refresh()
    (tmp_path / "etc/pki/qemu/client-key.pem").unlink()
    assert tls.refresh()
    assert len(server.csrs) == 2 and reloads == []


def test_the_refresh_loop_stops_with_the_agent(tmp_path):
    server = FakeServer(tmp_path)
    tls, _ = _tls(tmp_path, server, agent_pki_refresh_period=0.01)
    stop = threading.Event()
    thread = tls.start(stop)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_revoked_certificate_is_replaced(tmp_path):
    """A host removed from the inventory and added again keeps its files: the CRL naming its
    certificate makes the agent ask for a new one."""
    server = FakeServer(tmp_path)
    tls, reloads = _tls(tmp_path, server)
    tls.refresh()
    old = x509.load_pem_x509_certificate((tmp_path / "etc/pki/libvirt/servercert.pem").read_bytes())
    server.revoked.append((old.serial_number, NOW))
    assert tls.refresh()
    assert len(server.csrs) == 2
    new = x509.load_pem_x509_certificate((tmp_path / "etc/pki/libvirt/servercert.pem").read_bytes())
    assert new.serial_number != old.serial_number
    assert not tls.refresh() and len(server.csrs) == 2  # the new one is not revoked
