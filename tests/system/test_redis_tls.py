"""Redis over TLS with a password, as agents on other machines reach it: a real redis-server
(Debian's 7.0, built with TLS) listening on TLS only, with a certificate from a throwaway CA.
Every client virtcenter makes (vcenter.messaging.redis_link) verifies the certificate and the
host name; a Celery worker and beat (redbeat's lock) work over it, as their `vcenter
healthcheck` shows; a plain connection, a foreign CA or a certificate for another name get
nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from vcenter.core.settings import Settings
from vcenter.messaging.redis_link import connect, tls_options

PASSWORD = "tls-test-secret-7d1f"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca_and_cert(d: Path, ca: str, cert: str, names: str) -> None:
    """A CA (``ca``.pem/.key) unless it exists, and a server certificate ``cert`` it signs."""
    if not (d / f"{ca}.pem").exists():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cert}", "-keyout", f"{cert}.key", "-out", f"{cert}.csr", cwd=d)
    (d / f"{cert}.ext").write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", f"{cert}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "2", "-extfile", f"{cert}.ext", "-out", f"{cert}.pem", cwd=d)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """redis-server on TLS only (port 0 for plain), its certificate naming 127.0.0.1 and localhost."""
    d = tmp_path_factory.mktemp("redis-tls")
    _ca_and_cert(d, "ca", "server", "IP:127.0.0.1,DNS:localhost")
    _ca_and_cert(d, "ca", "other-name", "DNS:redis.example")
    _ca_and_cert(d, "foreign-ca", "foreign", "IP:127.0.0.1")
    ports = {"tls": _free_port(), "other": _free_port()}
    procs = []
    for cert, port in (("server", ports["tls"]), ("other-name", ports["other"])):
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    "0",
                    "--tls-port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--tls-cert-file",
                    f"{cert}.pem",
                    "--tls-key-file",
                    f"{cert}.key",
                    "--tls-ca-cert-file",
                    "ca.pem",
                    "--tls-auth-clients",
                    "no",
                    "--requirepass",
                    PASSWORD,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(d),
                ],
                cwd=d,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            for port in ports.values():
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not listen"
            time.sleep(0.1)
    yield {"dir": d, **ports}
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def _settings(url: str, ca: Path | None) -> Settings:
    return Settings(redis_url=url, redis_ca=str(ca) if ca else None)


def test_plain_url_has_no_tls_options():
    assert tls_options(_settings("redis://127.0.0.1:6379/0", None)) is None


def test_verified_tls_with_the_password(tls_redis):
    client = connect(_settings(f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis['tls']}/0", tls_redis["dir"] / "ca.pem"), socket_timeout=5)
    assert client.ping() is True
    client.set("virtcenter:tls-probe", "1", ex=10)
    assert client.get("virtcenter:tls-probe") == b"1"


@pytest.mark.parametrize(
    "url, ca, why",
    [
        ("redis://:{pw}@127.0.0.1:{tls}/0", "ca.pem", "plain connection to a TLS-only Redis"),
        ("rediss://:{pw}@127.0.0.1:{tls}/0", "foreign-ca.pem", "certificate from a CA not trusted"),
        ("rediss://:{pw}@127.0.0.1:{other}/0", "ca.pem", "certificate for another host name"),
        ("rediss://:{pw}@127.0.0.1:{tls}/0", None, "no CA given: the system store does not know the lab CA"),
        ("rediss://:wrong@127.0.0.1:{tls}/0", "ca.pem", "wrong password"),
    ],
)
def test_refused(tls_redis, url, ca, why):
    settings = _settings(url.format(pw=PASSWORD, **tls_redis), tls_redis["dir"] / ca if ca else None)
    with pytest.raises(redis.RedisError):
        connect(settings, socket_timeout=3, socket_connect_timeout=3).ping()


def _vcenter_env(tls_redis, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")}
    env.update(
        VCENTER_REDIS_URL=f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis['tls']}/0",
        VCENTER_REDIS_CA=str(tls_redis["dir"] / "ca.pem"),
        VCENTER_DATABASE_URL=f"sqlite:///{tmp_path}/server.db",
        VCENTER_KEY_DIR=str(tmp_path / "keys"),
    )
    return env


def _healthy_within(role: str, env: dict[str, str], cwd: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-m", "vcenter.cli", "healthcheck", role], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return True
        time.sleep(0.5)
    return False


def test_worker_and_beat_run_over_tls(tls_redis, tmp_path):
    env = _vcenter_env(tls_redis, tmp_path)
    subprocess.run([sys.executable, "-m", "vcenter.cli", "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    procs = [subprocess.Popen([sys.executable, "-m", "vcenter.cli", role], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for role in ("worker", "beat")]
    try:
        assert _healthy_within("worker", env, tmp_path, 90), "the worker did not answer Celery's ping over TLS"
        assert _healthy_within("beat", env, tmp_path, 90), "beat did not take redbeat's lock over TLS"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
