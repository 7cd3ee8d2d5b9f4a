"""The pure decisions of the replicated shape: HAProxy's server list (vcenter.lab.replicas),
beat's lock TTL (vcenter.messaging.beat_lock) and the form of an Idempotency-Key."""

from __future__ import annotations

from vcenter.core.settings import Settings
from vcenter.lab.replicas import server_lines
from vcenter.messaging.beat_lock import lock_ttl
from vcenter.services.tasks.idempotency import fingerprint, valid_key


def test_the_server_list_names_each_replica_once():
    assert server_lines({"api1": 18101, "api2": 18102}) == "backend api\n    server api1 127.0.0.1:18101\n    server api2 127.0.0.1:18102\n"


def test_beat_s_lock_outlives_three_ticks_whatever_the_setting():
    assert lock_ttl(Settings(beat_lock_ttl=30, reaper_period=5, host_monitor_period=5)) == 30
    # A TTL shorter than the ticks would expire under a live beat: three ticks and a second.
    assert lock_ttl(Settings(beat_lock_ttl=1, reaper_period=5, host_monitor_period=4)) == 13


def test_a_key_is_visible_ascii_and_bounded_and_the_fingerprint_tells_requests_apart():
    assert valid_key("5f0c6a2e-8d1b-4a43-9b57-0f4f3c1d2e7a") and valid_key("k" * 200)
    assert not any(valid_key(k) for k in ("", "k" * 201, "with space", "tab\t", "é"))
    on = fingerprint("POST", "/api/v1/vms/1/power/on", b"")
    assert on == fingerprint("post", "/api/v1/vms/1/power/on", b"")
    assert len({on, fingerprint("POST", "/api/v1/vms/1/power/off", b""), fingerprint("POST", "/api/v1/vms/1/power/on", b"{}")}) == 3
