"""The lab's readiness condition for a libvirtd restarted with its first certificate: a socket
listening on the TLS port in the daemon's network namespace (vcenter.lab.libvirtd.listening_on),
read from /proc/<pid>/net/tcp{,6}. Without it a host was reported ready while a TLS client
still got "Connection refused" on 16514 (tests/lab/test_cluster_ca.py, seen in a fresh-clone
run)."""

from __future__ import annotations

from vcenter.lab.libvirtd import TLS_PORT, listening_on

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
LISTEN_TCP = "   0: 0C00D50A:4082 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n"
# the same port, but a connection (01 = ESTABLISHED) to a remote 16514: not a listener
CLIENT_TCP = "   1: 0100D50A:A1B2 0C00D50A:4082 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1\n"
LISTEN_TCP6 = "   0: 00000000000000000000000000000000:4082 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0\n"


def test_a_listener_on_the_tls_port_counts():
    assert TLS_PORT == 16514 == 0x4082
    assert listening_on(HEADER + LISTEN_TCP, TLS_PORT)
    assert listening_on(HEADER + LISTEN_TCP6, TLS_PORT)


def test_a_connection_to_the_port_or_another_port_does_not():
    assert not listening_on(HEADER + CLIENT_TCP, TLS_PORT)
    assert not listening_on(HEADER + LISTEN_TCP, 16509)
    assert not listening_on(HEADER, TLS_PORT)  # nothing there yet: the flake's state
