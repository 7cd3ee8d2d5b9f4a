"""How the agent checks the API's HTTPS certificate: a CA bundle (``VCENTER_API_CA``, e.g. the
server's self-signed certificate itself), a pinned SHA-256 thumbprint
(``VCENTER_API_THUMBPRINT``, as `vcenter serve` prints it), or the system's CAs.

A pinned certificate becomes the only trust anchor of the connection (partial-chain
verification), so a server that presents any other certificate fails the TLS handshake; the
host name is not checked then: the pin is stronger than a name.
"""

from __future__ import annotations

import logging
import ssl
import time
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from vcenter.core.settings import Settings

log = logging.getLogger(__name__)


def normalize_thumbprint(value: str) -> str:
    value = value.strip().upper()
    if value.startswith("SHA256:"):
        value = value[len("SHA256:") :]
    return value.replace(":", "").replace(" ", "")


def thumbprint_of_pem(pem: str | bytes) -> str:
    data = pem.encode() if isinstance(pem, str) else pem
    digest = x509.load_pem_x509_certificate(data).fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def pinned_context(url: str, thumbprint: str, retry_delay: float = 1.0, timeout: float | None = None) -> ssl.SSLContext:
    """An SSL context trusting exactly the certificate the server at ``url`` presents, once its
    thumbprint matched the pin (waits for the server to answer; a mismatch is fatal)."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 443)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            pem = ssl.get_server_certificate(address, timeout=10)
            break
        except OSError as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise ConnectionError(f"{url}: cannot fetch the server certificate: {exc}") from exc
            log.warning("waiting for the API at %s to pin its certificate: %s", url, exc)
            time.sleep(retry_delay)
    got = thumbprint_of_pem(pem)
    if normalize_thumbprint(got) != normalize_thumbprint(thumbprint):
        raise SystemExit(f"the API at {url} presents certificate {got}, not the pinned {thumbprint}: refusing to talk to it")
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def api_verify(settings: Settings, url: str | None = None) -> ssl.SSLContext | bool:
    """The ``verify`` argument of the agent's HTTP clients to the API."""
    url = url or settings.public_url
    if not url.lower().startswith("https://"):
        return True  # plain HTTP (the local lab): nothing to verify
    if settings.api_thumbprint:
        return pinned_context(url, settings.api_thumbprint, settings.agent_reconnect_delay)
    if settings.api_ca:
        return ssl.create_default_context(cafile=settings.api_ca)
    return True
