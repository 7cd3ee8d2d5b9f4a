"""Issue 17 item 3: the cluster CA. A trusted host's agent gets its TLS certificate for a CSR
of a key it made; the certificate names the host as the inventory knows it; a forged CSR is
refused with a stable code; removing the host revokes its certificate and the CRL the agents
fetch names it."""

from __future__ import annotations

import ipaddress
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin, register_host
from vcenter.core.host_pki import make_csr, new_key


@pytest.fixture
def ctx(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        yield client, auth, dc, settings


def _host(client, auth, dc, name: str, address: str):
    host, agent = register_host(client, auth, dc["id"], name)
    r = client.patch(f"/api/v1/hosts/{host['id']}", json={"address": address}, headers=auth)
    assert r.status_code == 200, r.text
    return host, agent


def _crl(client, host, agent) -> x509.CertificateRevocationList:
    r = client.get(f"/api/v1/agent/hosts/{host['id']}/pki", headers=agent)
    assert r.status_code == 200, r.text
    ca = x509.load_pem_x509_certificate(r.json()["ca_certificate"].encode())
    crl = x509.load_pem_x509_crl(r.json()["crl"].encode())
    assert crl.is_signature_valid(ca.public_key())
    return crl


def test_a_host_gets_a_certificate_naming_it_as_the_inventory_does(ctx):
    client, auth, dc, settings = ctx
    host, agent = _host(client, auth, dc, "h1", "10.213.0.11")
    key = new_key()
    # The CSR asks for another name: the certificate names the host as registered.
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/certificate", json={"csr": make_csr(key, "h2.example.org").decode()}, headers=agent)
    assert r.status_code == 200, r.text
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    ca = x509.load_pem_x509_certificate(body["ca_certificate"].encode())
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["h1"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.0.11")]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "h1"
    assert body["serial"] == format(cert.serial_number, "x")
    # The CA lives in key_dir, its key readable by the server only.
    assert os.stat(f"{settings.key_dir}/ca/ca.key").st_mode & 0o777 == 0o600
    # Another agent's credential cannot ask for this host's certificate.
    other, other_agent = _host(client, auth, dc, "h2", "10.213.0.12")
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/certificate", json={"csr": make_csr(key, "h1").decode()}, headers=other_agent)
    assert r.status_code in (401, 403), r.text


def test_a_forged_or_weak_csr_is_refused_with_a_stable_code(ctx):
    client, auth, dc, _ = ctx
    host, agent = _host(client, auth, dc, "h1", "10.213.0.11")
    url = f"/api/v1/agent/hosts/{host['id']}/certificate"
    # The CSR names a key the sender does not hold: its signature is another key's.
    victim, thief = new_key(), new_key()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h1")])).sign(thief, hashes.SHA256())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    thief_spki = thief.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    victim_spki = victim.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert len(thief_spki) == len(victim_spki) and bytes(der).count(thief_spki) == 1
    forged = bytes(der).replace(thief_spki, victim_spki)
    forged_pem = x509.load_der_x509_csr(forged).public_bytes(serialization.Encoding.PEM).decode()
    r = client.post(url, json={"csr": forged_pem}, headers=agent)
    assert r.status_code == 422 and r.json()["code"] == "BAD_CSR", r.text
    r = client.post(url, json={"csr": "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n"}, headers=agent)
    assert r.status_code == 422 and r.json()["code"] == "BAD_CSR", r.text
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(small, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    r = client.post(url, json={"csr": weak_csr}, headers=agent)
    assert r.status_code == 422 and r.json()["code"] == "CSR_KEY_UNSUPPORTED", r.text
    r = client.post(url, json={"csr": "x" * 20000}, headers=agent)
    assert r.status_code == 422, r.text
    # Nothing was issued for the refused requests.
    assert len(list(_crl(client, host, agent))) == 0


def test_removing_a_host_revokes_its_certificate_in_the_crl(ctx):
    client, auth, dc, _ = ctx
    gone, gone_agent = _host(client, auth, dc, "h1", "10.213.0.11")
    stays, stays_agent = _host(client, auth, dc, "h2", "10.213.0.12")
    serials = {}
    for host, agent in ((gone, gone_agent), (stays, stays_agent)):
        r = client.post(f"/api/v1/agent/hosts/{host['id']}/certificate", json={"csr": make_csr(new_key(), host["name"]).decode()}, headers=agent)
        assert r.status_code == 200, r.text
        serials[host["name"]] = int(r.json()["serial"], 16)
    assert len(list(_crl(client, stays, stays_agent))) == 0
    r = client.delete(f"/api/v1/hosts/{gone['id']}", headers=auth)
    assert r.status_code == 204, r.text
    crl = _crl(client, stays, stays_agent)
    assert {c.serial_number for c in crl} == {serials["h1"]}
    # The removed host's credential is gone with it: it fetches nothing any more.
    assert client.get(f"/api/v1/agent/hosts/{gone['id']}/pki", headers=gone_agent).status_code in (401, 403, 404)
    events = client.get("/api/v1/events", params={"kind": "host.certificate_revoked"}, headers=auth)
    assert events.status_code == 200 and any(format(serials["h1"], "x") in e["message"] for e in events.json()["items"] if e["kind"] == "host.certificate_revoked"), events.text


def test_a_renewed_certificate_revokes_its_predecessor(ctx):
    client, auth, dc, _ = ctx
    host, agent = _host(client, auth, dc, "h1", "10.213.0.11")
    serials = []
    for _ in range(3):  # the first certificate, then two renewals (a new key each time)
        r = client.post(f"/api/v1/agent/hosts/{host['id']}/certificate", json={"csr": make_csr(new_key(), "h1").decode()}, headers=agent)
        assert r.status_code == 200, r.text
        serials.append(int(r.json()["serial"], 16))
    # only the newest is valid: its predecessors are on the CRL, it is not
    assert {c.serial_number for c in _crl(client, host, agent)} == set(serials[:2])
    events = client.get("/api/v1/events", params={"kind": "host.certificate_revoked"}, headers=auth).json()["items"]
    assert sum("superseded" in e["message"] for e in events if e["kind"] == "host.certificate_revoked") == 2
