"""`vcenter login --ca-file` against a server that serves HTTPS with its self-signed
certificate (VCENTER_TLS_SELF_SIGNED): without the CA file the certificate is refused (exit 3,
nothing kept); with it the session is kept with the CA file's absolute path, and the next
commands verify the server with it."""

from __future__ import annotations

import json


from tests.clihelpers import cli_env, ok, vcenter, wait_for_https
from tests.conftest import REDIS_URL, redis_db_url
from vcenter.lab.stack import Stack


def test_login_over_https_with_the_servers_ca_file(tmp_path):
    redis_url = redis_db_url(REDIS_URL, 13)
    stack = Stack.create(tmp_path / "stack", None, redis_url, tls_self_signed="true")
    stack.scheme = "https"
    stack.env["VCENTER_PUBLIC_URL"] = stack.url
    try:
        stack.run_cli("db", "upgrade")
        stack.run_cli("admin", "create", stack.admin[0], "--password", stack.admin[1], "--exist-ok")
        stack._spawn("api", ["serve"])
        cert = tmp_path / "stack" / "keys" / "tls" / "api.crt"
        wait_for_https(stack, cert)
        env = cli_env(tmp_path / "config")
        unknown = vcenter(env, "login", stack.url, "-u", stack.admin[0], "--password-stdin", stdin=stack.admin[1] + "\n")
        assert unknown.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in unknown.stderr and "--ca-file" in unknown.stderr, unknown.stderr
        assert not (tmp_path / "config" / "virtcenter" / "config.json").exists()

        ca = tmp_path / "ca.pem"  # as an operator copies it from the server
        ca.write_bytes(cert.read_bytes())
        logged = vcenter(env, "login", stack.url, "-u", stack.admin[0], "--password-stdin", "--ca-file", str(ca), "--json", stdin=stack.admin[1] + "\n")
        assert json.loads(ok(logged))["server"] == stack.url
        kept = json.loads((tmp_path / "config" / "virtcenter" / "config.json").read_text())["contexts"]
        assert [c["ca_file"] for c in kept.values()] == [str(ca)]
        assert json.loads(ok(vcenter(env, "ls", "--json"))) == []
    finally:
        stack.stop()
