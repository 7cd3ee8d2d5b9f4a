"""Which refusals the audit of refused credentials counts, and under which source
(vcenter.services.access.refusals)."""

from __future__ import annotations

from vcenter.services.access.refusals import credential_kind, source_key


def test_each_refusal_code_names_its_credential_kind():
    assert credential_kind("NOT_AUTHENTICATED", credential_presented=True) == "user_token"
    assert credential_kind("NOT_AUTHENTICATED", credential_presented=False) is None  # nothing presented, nothing refused
    assert credential_kind("SESSION_EXPIRED", False) == credential_kind("TOKEN_EXPIRED", False) == "user_token"
    assert {credential_kind(c, False) for c in ("BAD_CREDENTIALS", "LOCKED_OUT", "LOGIN_RATE_LIMITED")} == {"password"}
    assert credential_kind("BAD_AGENT_CREDENTIAL", True) == "agent"
    assert credential_kind("BAD_REGISTRATION_TOKEN", False) == "registration"
    assert {credential_kind(c, False) for c in ("BAD_REGISTRATION_PROOF", "BAD_REGISTRATION_NONCE", "REGISTRATION_NONCE_EXPIRED", "REGISTRATION_NONCE_STALE")} == {"registration_proof"}
    assert credential_kind("FORBIDDEN", True) is None and credential_kind("NOT_FOUND", True) is None


def test_sources_count_per_address_and_ipv6_per_64():
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8:1:2:3:4:5:6") == source_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key(None) == source_key("") == "unknown"
    assert source_key("testclient") == "testclient" and len(source_key("x" * 300)) == 64
