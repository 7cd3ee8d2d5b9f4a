"""The host's TLS material from the cluster CA: its key, its certificate, the CA certificate
and the CRL in the files libvirtd and QEMU read (vcenter.core.host_pki.pki_files).

What this module decides:
- The host's TLS key is made here and never leaves the host: the agent sends a CSR of it
  (POST .../certificate) and writes the certificate it gets back. A new key comes with every
  certificate (renewal included).
- When: at the agent's start, right after registration, and every ``agent_pki_refresh_period``
  after: the certificate is replaced when ``certificate_outdated`` says so (missing,
  unreadable, not yet valid, within ``host_cert_renew_before_days`` of expiry, of another CA,
  or revoked: a host removed and added again keeps its files); the CA certificate and the CRL
  are fetched each time (GET .../pki) and written when they changed (the CRL: when
  ``crl_outdated`` says so).
- Files are written atomically (a temporary file renamed over the old one), keys mode 0600,
  the key before the certificate, so libvirtd never reads a certificate without its key.
- After anything changed, ``agent_libvirt_tls_reload`` (default ``virt-admin
  server-update-tls libvirtd``) makes libvirtd re-read its TLS files; QEMU reads its
  directory at every migration. A libvirtd that started before the host had certificates
  does not listen on TLS at all: the host's install restarts it after the first certificate
  (the order of a real install: register, then start libvirtd's TLS listener).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vcenter.core.host_pki import PkiFiles, certificate_outdated, crl_outdated, key_pem, make_csr, new_key, pki_files
from vcenter.core.settings import Settings

log = logging.getLogger(__name__)


def _write(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` atomically with ``mode``; False when it held it already."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if mode == 0o600 else 0o755)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _run_reload(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        log.warning("TLS reload %s failed (%s): %s", shlex.join(argv), result.returncode, (result.stderr or result.stdout).strip()[:300])


class HostTls:
    """Keeps the host's TLS files current (see the module docstring)."""

    def __init__(self, settings: Settings, api: Any, hostname: str, reload: Callable[[list[str]], None] = _run_reload, clock: Callable[[], dt.datetime] | None = None):
        self.files: PkiFiles = pki_files(Path(settings.agent_pki_ca_dir), Path(settings.agent_pki_libvirt_dir), Path(settings.agent_pki_qemu_dir))
        self.renew_before = dt.timedelta(days=settings.host_cert_renew_before_days)
        self.period = settings.agent_pki_refresh_period
        self.reload_argv = shlex.split(settings.agent_libvirt_tls_reload)
        self.api = api
        self.hostname = hostname
        self._reload = reload
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def _installed_certificate(self) -> bytes | None:
        """The certificate in place, None unless every certificate and key file is there."""
        if not all(p.exists() for p in self.files.key + self.files.cert):
            return None
        try:
            return self.files.cert[0].read_bytes()
        except OSError:
            return None

    def refresh(self) -> bool:
        """One round: renew the certificate when due, write the CA and the CRL; reload
        libvirtd's TLS files when anything changed. Answers whether anything changed."""
        changed = False
        material = self.api.get_json("/pki", retry_for=self.period)
        ca, crl = material["ca_certificate"].encode(), material["crl"].encode()
        if certificate_outdated(self._installed_certificate(), ca, crl, self._clock(), self.renew_before):
            key = new_key()
            answer = self.api.post("/certificate", {"csr": make_csr(key, self.hostname).decode()}, retry_for=self.period)
            for path in self.files.key:
                _write(path, key_pem(key), 0o600)
            for path in self.files.cert:
                _write(path, answer["certificate"].encode(), 0o644)
            log.info("host TLS certificate %s installed, valid until %s", answer["serial"], answer["not_after"])
            changed = True
        for path in self.files.ca:
            changed |= _write(path, ca, 0o644)
        for path in self.files.crl:
            try:
                installed: bytes | None = path.read_bytes()
            except OSError:
                installed = None
            if crl_outdated(installed, crl, self._clock()):
                changed |= _write(path, crl, 0o644)
        if changed and self.reload_argv:
            self._reload(self.reload_argv)
        return changed

    def run(self, stop: threading.Event) -> None:
        """Refresh every ``period`` until ``stop`` is set; a failed round is tried again then."""
        while not stop.wait(self.period):
            try:
                self.refresh()
            except Exception as exc:  # the next round tries again; the old files stay valid
                log.warning("host TLS refresh failed: %s", exc)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="host-tls", daemon=True)
        thread.start()
        return thread
