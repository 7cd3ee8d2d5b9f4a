"""The cluster CA's pure decisions and key material (vcenter.core.host_pki,
vcenter.services.certificates.authority): when a host certificate is renewed, which names it
carries, the CA made once in key_dir with a private key file, the usages QEMU and libvirt
check, and a CRL the CA signed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from vcenter.core.host_pki import certificate_outdated, certificate_validity, crl_outdated, host_sans, make_csr, new_key, pki_files, renew_due
from vcenter.services.certificates import authority

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def test_renewal_is_due_when_missing_not_yet_valid_or_within_the_window():
    window = 30 * DAY
    assert renew_due(None, None, NOW, window)
    assert renew_due(NOW + DAY, NOW + 365 * DAY, NOW, window)  # not valid yet: a clock jump
    assert not renew_due(NOW - DAY, NOW + 31 * DAY, NOW, window)
    assert renew_due(NOW - DAY, NOW + 30 * DAY, NOW, window)
    assert renew_due(NOW - 400 * DAY, NOW - DAY, NOW, window)  # expired
    assert not renew_due(NOW - DAY, NOW + DAY, NOW, dt.timedelta(0))


def test_sans_are_the_inventory_name_and_addresses_ip_or_dns_without_duplicates():
    sans = host_sans("Host1", ["10.213.0.11", "", "host1", "esx1.example.org", "fd00::1", "10.213.0.11"])
    assert sans == [
        x509.DNSName("host1"),
        x509.IPAddress(ipaddress.ip_address("10.213.0.11")),
        x509.DNSName("esx1.example.org"),
        x509.IPAddress(ipaddress.ip_address("fd00::1")),
    ]


def test_the_ca_is_made_once_in_key_dir_with_a_private_key_file(tmp_path):
    made: list[authority.Authority] = []
    threads = [threading.Thread(target=lambda: made.append(authority.load_or_create(tmp_path, NOW, 3650 * DAY))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a.cert.serial_number for a in made}) == 1  # racing processes end with one CA
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    again = authority.load_or_create(tmp_path, NOW + DAY, 3650 * DAY)
    assert again.cert.serial_number == made[0].cert.serial_number
    assert again.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert [p.name for p in tmp_path.iterdir()] == ["ca"]  # no staging directory left


def test_a_host_certificate_serves_both_ends_of_tls_with_the_given_names_only(tmp_path):
    ca = authority.load_or_create(tmp_path, NOW, 3650 * DAY)
    key = new_key()
    csr = x509.load_pem_x509_csr(make_csr(key, "evil.example.org"))
    cert = ca.sign_host(csr.public_key(), "host1", host_sans("host1", ["10.0.0.5"]), NOW, 365 * DAY)
    cert.verify_directly_issued_by(ca.cert)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment and not usage.value.key_cert_sign
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["host1"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    not_before, not_after = certificate_validity(cert.public_bytes(serialization.Encoding.PEM)) or (None, None)
    assert not_before == NOW - authority.BACKDATE and not_after == NOW + 365 * DAY
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_a_host_certificate_never_outlives_the_ca(tmp_path):
    ca = authority.load_or_create(tmp_path, NOW, 10 * DAY)
    cert = ca.sign_host(new_key().public_key(), "h", host_sans("h", []), NOW, 365 * DAY)
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_the_crl_is_signed_by_the_ca_and_lists_the_revoked_serials(tmp_path):
    ca = authority.load_or_create(tmp_path, NOW, 3650 * DAY)
    crl = x509.load_pem_x509_crl(ca.sign_crl([(0xABC, NOW - DAY), (0xDEF, NOW)], NOW, 7 * DAY).encode())
    assert crl.is_signature_valid(ca.key.public_key())
    assert not crl.is_signature_valid(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert {r.serial_number for r in crl} == {0xABC, 0xDEF}
    assert crl.next_update_utc == NOW + 7 * DAY


def test_file_layout_is_libvirts_and_qemus(tmp_path):
    files = pki_files(tmp_path / "CA", tmp_path / "libvirt", tmp_path / "qemu")
    rel = {str(p.relative_to(tmp_path)) for p in files.all()}
    assert rel == {
        "CA/cacert.pem",
        "CA/cacrl.pem",
        "libvirt/servercert.pem",
        "libvirt/clientcert.pem",
        "libvirt/private/serverkey.pem",
        "libvirt/private/clientkey.pem",
        "qemu/ca-cert.pem",
        "qemu/ca-crl.pem",
        "qemu/server-cert.pem",
        "qemu/client-cert.pem",
        "qemu/server-key.pem",
        "qemu/client-key.pem",
    }


def test_a_crl_is_replaced_when_its_serials_issuer_or_remaining_life_say_so(tmp_path):
    ca = authority.load_or_create(tmp_path / "a", NOW, 3650 * DAY)
    other = authority.load_or_create(tmp_path / "b", NOW, 3650 * DAY)
    installed = ca.sign_crl([(1, NOW)], NOW, 8 * DAY).encode()
    assert crl_outdated(None, installed, NOW)
    assert crl_outdated(b"garbage", installed, NOW)
    assert not crl_outdated(installed, ca.sign_crl([(1, NOW)], NOW + DAY, 8 * DAY).encode(), NOW + DAY)  # same, re-signed
    assert crl_outdated(installed, ca.sign_crl([(1, NOW), (2, NOW)], NOW + DAY, 8 * DAY).encode(), NOW + DAY)
    assert crl_outdated(installed, other.sign_crl([(1, NOW)], NOW + DAY, 8 * DAY).encode(), NOW + DAY)
    assert crl_outdated(installed, ca.sign_crl([(1, NOW)], NOW + 5 * DAY, 8 * DAY).encode(), NOW + 5 * DAY)  # 3 of 8 days left


def test_a_certificate_is_outdated_when_due_of_another_ca_or_revoked(tmp_path):
    ca = authority.load_or_create(tmp_path / "a", NOW, 3650 * DAY)
    other = authority.load_or_create(tmp_path / "b", NOW, 3650 * DAY)
    cert = ca.sign_host(new_key().public_key(), "h", host_sans("h", []), NOW, 365 * DAY)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    ca_pem, empty = ca.cert_pem.encode(), ca.sign_crl([], NOW, 7 * DAY).encode()
    window = 30 * DAY
    assert not certificate_outdated(pem, ca_pem, empty, NOW, window)
    assert certificate_outdated(None, ca_pem, empty, NOW, window)
    assert certificate_outdated(pem, ca_pem, empty, NOW + 340 * DAY, window)
    assert certificate_outdated(pem, other.cert_pem.encode(), other.sign_crl([], NOW, 7 * DAY).encode(), NOW, window)
    assert certificate_outdated(pem, ca_pem, ca.sign_crl([(cert.serial_number, NOW)], NOW, 7 * DAY).encode(), NOW, window)
    assert not certificate_outdated(pem, ca_pem, ca.sign_crl([(cert.serial_number + 1, NOW)], NOW, 7 * DAY).encode(), NOW, window)
