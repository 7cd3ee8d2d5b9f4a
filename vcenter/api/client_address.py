"""Which address a request comes from: the TCP peer, unless that peer is one of our configured
trusted proxies (setting ``trusted_proxies``, default none), in which case the client is the
rightmost address of ``X-Forwarded-For`` that is not itself a trusted proxy.

Everything that judges a client by its address reads the result: the per-address login limit
and the audit log's ``source`` (vcenter.core.audit.request_source). Uvicorn's own proxy-header
handling is turned off wherever we start it (``proxy_headers=False``), so this is the one rule.

Why rightmost: each proxy appends the address it received the request from, so the entries a
client wrote itself are to the left of what our proxies appended; the first untrusted entry from
the right is the last hop we can vouch for. ``X-Forwarded-Proto`` is read under the same rule
(from a trusted peer only), so HSTS and the scheme follow a TLS-terminating proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted(entries: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies setting: IPs or CIDRs (``10.0.0.5``, ``10.0.0.0/24``, ``::1``).
    A bad entry is a configuration error raised at start-up, not a proxy silently ignored."""
    networks = []
    for entry in entries:
        entry = entry.strip()
        if entry:
            networks.append(ipaddress.ip_network(entry, strict=False))
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """One address as proxies write it: ``1.2.3.4``, ``2001:db8::1``, ``[2001:db8::1]:443`` or
    ``1.2.3.4:5678`` (some proxies add the port); None when it is no address (``unknown``)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4-mapped IPv6 peer (dual-stack sockets) is the IPv4 client it maps.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | None, trusted: tuple[Network, ...]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in trusted)


def forwarded_chain(values: Iterable[str]) -> list[str]:
    """All ``X-Forwarded-For`` entries in order: several headers are one list, joined in order."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str | None:
    """The client's address for a request from ``peer`` carrying these ``X-Forwarded-For``
    header values. An untrusted peer is the client, whatever it wrote. Behind trusted proxies:
    the rightmost untrusted entry; an entry that is no address stops the walk at the proxy that
    forwarded it (we cannot name anyone beyond it); every entry trusted: the leftmost one."""
    peer_address = parse_address(peer) if peer else None
    if not is_trusted(peer_address, trusted):
        return peer
    chain = forwarded_chain(forwarded_for)
    nearest = str(peer_address)
    for entry in reversed(chain):
        address = parse_address(entry)
        if address is None:
            return nearest
        if not is_trusted(address, trusted):
            return str(address)
        nearest = str(address)
    return nearest


def forwarded_scheme(peer: str | None, forwarded_proto: Iterable[str], trusted: tuple[Network, ...], scheme: str) -> str:
    """The scheme the client used: ``X-Forwarded-Proto`` of a trusted peer (its last value, the
    one the nearest proxy wrote), else the scheme of our own socket."""
    if not is_trusted(parse_address(peer) if peer else None, trusted):
        return scheme
    values = forwarded_chain(forwarded_proto)
    if values and values[-1].lower() in ("http", "https"):
        proto = values[-1].lower()
        if scheme in ("ws", "wss"):
            return "wss" if proto == "https" else "ws"
        return proto
    return scheme


class ClientAddress:
    """ASGI middleware: rewrites the scope's ``client`` (and ``scheme``) by the rule above, so
    every reader of ``request.client`` sees the real client."""

    def __init__(self, app: Any, trusted_proxies: Iterable[str]):
        self.app = app
        self.trusted = parse_trusted(trusted_proxies)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            client = scope.get("client")
            peer = client[0] if client else None
            headers = scope.get("headers") or []
            forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            protos = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-proto"]
            address = client_address(peer, forwarded, self.trusted)
            scope = dict(scope)
            if address != peer:
                scope["client"] = (address, 0)
            scope["scheme"] = forwarded_scheme(peer, protos, self.trusted, scope.get("scheme", "http"))
        await self.app(scope, receive, send)
