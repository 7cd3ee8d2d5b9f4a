"""Settings: every knob of virtcenter, read from ``VCENTER_*`` environment variables and, for
the process's own settings (``get_settings``), from a ``.env`` file (``VCENTER_ENV_FILE``,
default ``./.env``; the environment wins over the file). A ``VCENTER_*`` name that is no
setting (a typo, a setting of another release) is named in a warning, with the closest
setting, rather than silently ignored.

Every timer lives here so that tests can run on compressed time. Durations are in seconds
unless the name says otherwise.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# Where datastores may live by default (server and agent); vcenter.domain.datastore_roots
# decides what a root may be, checked when the server's runtime and the agent start (core
# imports nothing of ours, so not here).
DEFAULT_DATASTORE_ROOTS = "/var/lib/virtcenter/datastores,/srv,/mnt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VCENTER_", extra="ignore")

    # --- storage and broker -------------------------------------------------------------
    database_url: str = Field("sqlite:///./vcenter.db", description="SQLAlchemy URL; SQLite by default, postgresql+psycopg://... for PostgreSQL")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis: Celery broker, heartbeats, locks; rediss://:password@host:port/0 for TLS (vcenter.messaging.redis_link)")
    redis_ca: str | None = Field(None, description="CA bundle (PEM file) that verifies Redis's certificate for a rediss:// URL; default: the system's trust store")

    # --- API ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    public_url: str = Field("http://127.0.0.1:8080", description="URL agents use to reach the API")
    session_idle_timeout: float = Field(1800.0, description="a login session expires after this much idle time")
    session_max_lifetime: float = Field(12 * 3600.0, description="absolute lifetime of a login session")
    page_size_max: int = 500
    max_json_body: int = Field(1024 * 1024, description="largest JSON request body accepted, bytes (413 above)")
    login_lockout_failures: int = Field(5, description="failed logins of one user within the window that lock it out")
    login_source_failures: int = Field(20, description="failed logins from one client address within the lockout window before that address is refused (429), whatever the user names")
    login_lockout_window: float = Field(180.0, description="the lockout window (s); a lockout ends by itself, so nobody locks an administrator out for good")
    # argon2id costs of a new password hash: argon2-cffi's defaults (RFC 9106's low-memory
    # profile). A stored hash carries its own costs, so changing these never breaks a login;
    # tests lower them (tests/conftest.py), since a hash at these costs takes 0.1-0.2 s.
    password_hash_time_cost: int = Field(3, ge=1, description="argon2id passes over memory per new password hash")
    password_hash_memory_cost: int = Field(64 * 1024, ge=8, description="argon2id memory per new password hash, KiB (at least 8 x password_hash_parallelism)")
    password_hash_parallelism: int = Field(4, ge=1, description="argon2id lanes per new password hash")
    password_min_length: int = Field(
        12, ge=8, le=1024, description="shortest password accepted when one is set (API, dashboard, CLI); common passwords are refused at any length (vcenter.services.access.passwords)"
    )
    events_retention_days: float = Field(365.0, description="events (the audit log) older than this are purged by the reaper")
    tls_cert: str | None = Field(None, description="PEM certificate (chain) the API serves HTTPS with; with tls_key")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_self_signed: bool = Field(False, description="serve HTTPS with a self-signed certificate generated on first start (in key_dir/tls) when tls_cert/tls_key are not set")
    tls_hostnames: str = Field("", description="extra names/addresses (comma-separated) the self-signed certificate is valid for, besides localhost, 127.0.0.1, ::1, the host name and api_host")
    trusted_proxies: str = Field(
        "",
        description="reverse proxies / load balancers (IPs or CIDRs, comma-separated) whose X-Forwarded-For and X-Forwarded-Proto are believed; the client is the rightmost address not in this list. Default none: the TCP peer is the client, whatever headers it sends",
    )
    metrics_token: str | None = Field(
        None, description="bearer credential Prometheus sends for /metrics on the API port (bearer_token_file); without it /metrics there needs a user holding System.View"
    )
    metrics_listen: str | None = Field(
        None, description="host:port of a separate plain-HTTP listener serving only /metrics, without credentials (bind it to an address only Prometheus reaches); `vcenter serve` with one worker"
    )
    # The other processes' own health and metrics listeners (vcenter.observability.listener):
    # /livez, /readyz and /metrics (the metrics token when metrics_token is set, else plain).
    # Off by default; one address per process (the --metrics-listen option of each command).
    worker_metrics_listen: str | None = Field(None, description="host:port of `vcenter worker`'s health and metrics listener (/livez, /readyz, /metrics); off by default")
    beat_metrics_listen: str | None = Field(None, description="host:port of `vcenter beat`'s health and metrics listener; off by default")
    ha_metrics_listen: str | None = Field(None, description="host:port of `vcenter ha`'s health and metrics listener; off by default")
    agent_metrics_listen: str | None = Field(None, description="host:port of `vcenter agent`'s health and metrics listener; off by default")
    process_stall_after: float = Field(120.0, gt=0, description="a process's /livez answers 503 once its main loop (worker timer, beat tick, HA pass, agent heartbeat) has not turned for this long")

    # --- keys and channel security --------------------------------------------------------
    key_dir: str = Field("/var/lib/virtcenter/keys", description="server-side key material: the command signing key, the self-signed TLS certificate")
    command_signing_key: str | None = Field(
        None, description="Ed25519 private key (PEM) that signs commands to agents; generated on first use; default key_dir/command-signing.pem. Server processes only"
    )
    command_ttl: float | None = Field(None, description="a signed command expires this long after it was sent; default task_queue_timeout")

    # --- tasks ----------------------------------------------------------------------------
    task_lease: float = Field(60.0, description="a running task whose lease is not renewed for this long is reaped")
    task_max_attempts: int = Field(3, description="how many times a reaped task's command is re-sent before WORKER_LOST")
    task_queue_timeout: float = Field(300.0, description="a queued task no agent picked up in this time ends as AGENT_UNREACHABLE")
    reaper_period: float = Field(5.0, description="how often the reaper and outbox relay run")
    outbox_batch: int = 100
    celery_visibility_timeout: float = Field(3600.0, description="Redis visibility timeout: above the longest command")
    celery_unacked_restore_interval: float = Field(10.0, description="how often consumers look for unacknowledged commands past the visibility timeout (to redeliver them)")
    guest_shutdown_timeout: float = Field(120.0, description="default time a guest gets to shut down before the task ends as GUEST_SHUTDOWN_TIMEOUT")

    # --- event and task feeds (vcenter.services.tasks.feeds, vcenter.api.routers.feeds) -----
    feed_poll_period: float = Field(1.0, gt=0, description="event/task streams and task waits (GET /tasks/{id}?wait=) look at the database this often")
    feed_gap_grace: float = Field(30.0, ge=0, description="an id a stream passed without seeing (its transaction had not committed yet) is looked for again this long, then given up (rolled back)")
    feed_max_gaps: int = Field(100, ge=1, description="at most this many skipped ids a stream awaits at once (the highest kept)")
    feed_batch: int = Field(500, ge=1, description="rows a stream reads per poll (it polls again at once after a full batch)")
    feed_tracked_tasks: int = Field(1000, ge=1, description="unfinished tasks a task stream follows for changes (the newest kept)")
    feed_keepalive_period: float = Field(15.0, gt=0, description="an idle stream sends a comment this often, so proxies keep it open")
    feed_stream_max_lifetime: float = Field(3600.0, gt=0, description="a stream ends after this long; the client reconnects with Last-Event-ID and loses nothing")
    feed_streams_per_user: int = Field(10, ge=1, description="open event/task streams per user, across API replicas (429 STREAM_LIMIT beyond)")
    feed_stream_slot_ttl: float = Field(60.0, gt=0, description="a stream's slot in the per-user count expires unless renewed (every poll) within this: how long a dead replica's streams still count")
    task_wait_max: float = Field(60.0, gt=0, description="longest wait GET /tasks/{id}?wait= accepts (s)")

    # --- host registration ----------------------------------------------------------------
    host_trust_on_first_use: bool = Field(False, description="trust a registering agent's certificate thumbprint without operator confirmation")
    registration_token_ttl: float = Field(86400.0, description="lifetime of a host's one-time registration token")

    # --- cluster CA (vcenter.services.certificates; the agent's side: agent_pki_*) ----------
    ca_validity_days: float = Field(3650.0, gt=0, description="lifetime of the cluster CA's certificate, made on first use in key_dir/ca")
    host_cert_validity_days: float = Field(365.0, gt=0, description="lifetime of a host's TLS certificate (libvirtd, migration, QEMU migration streams)")
    host_cert_renew_before_days: float = Field(30.0, ge=0, description="a host's agent renews its certificate once less than this is left of it")
    crl_validity_hours: float = Field(168.0, gt=0, description="the CRL's next update is this far ahead; agents fetch it every agent_pki_refresh_period")

    # --- agent ----------------------------------------------------------------------------
    agent_host_id: int | None = None
    agent_token: str | None = None
    agent_registration_token: str | None = None
    agent_portgroup_mode: Literal["bridge", "vxlan"] = Field("bridge", description="how port groups are made on the host: plain bridges, or VXLAN segments (lab)")
    agent_address: str | None = Field(None, description="this host's address on the management network (VXLAN endpoint)")
    agent_underlay: str = Field("eth0", description="interface carrying VXLAN traffic")
    agent_declared_cpu_xml: str | None = Field(None, description="a CPU definition this host declares instead of its real CPU (lab hosts emulating CPU generations)")
    agent_declared_cpus: int | None = Field(None, description="CPUs this host reports instead of the machine's (lab hosts share one machine)")
    agent_declared_memory_mib: int | None = Field(None, description="memory this host reports instead of the machine's")
    lab_guest_cache: str = Field("/var/cache/virtcenter/guest", description="where the lab's tiny Linux guest image is built and cached")
    agent_state_dir: str = Field("/var/lib/virtcenter/agent", description="agent's certificate, key and credential")
    command_public_key: str | None = Field(
        None, description="agent: the server's command public key (path to a PEM file, or the PEM itself); default: the one received at registration (agent_state_dir/command-key.pub)"
    )
    command_clock_skew: float = Field(60.0, description="agent: tolerated difference between the server's clock and this host's when judging a command's expiry")
    agent_replay_retention: float = Field(86400.0, description="agent: how long a command whose result was reported is remembered (a replay of it is refused); must exceed command_ttl")
    agent_replay_max: int = Field(100000, description="agent: at most this many remembered commands (the oldest are forgotten first)")
    api_ca: str | None = Field(None, description="agent: CA bundle (PEM) that verifies the API's HTTPS certificate (e.g. the server's key_dir/tls/api.crt when self-signed)")
    api_thumbprint: str | None = Field(None, description="agent: pin the API's HTTPS certificate by its SHA-256 thumbprint (as `vcenter serve` prints it) instead of a CA")
    libvirt_uri: str = "qemu:///system"
    heartbeat_period: float = Field(1.0, description="agent writes its Redis heartbeat key this often")
    heartbeat_ttl: float = Field(3.0, description="heartbeat key expiry")
    agent_report_period: float = Field(10.0, description="full host/VM state report period")
    agent_balloon_stats_period: int = Field(5, ge=0, le=3600, description="seconds between a guest balloon driver's memory statistics (VM memory demand; 0: none)")
    agent_reconnect_delay: float = Field(1.0, description="wait between reconnect attempts (libvirt, API)")
    agent_supervise: bool = Field(True, description="`vcenter agent` runs the agent in a child process and starts it again when it crashes (workers.agent.supervisor)")
    agent_restart_delay: float = Field(1.0, description="agent supervisor: wait before starting a crashed agent again")
    agent_concurrency: int = 4
    agent_command_reconnect_timeout: float = Field(30.0, description="a command that finds libvirt gone keeps reconnecting this long before failing")
    datastore_root: str = Field("/var/lib/virtcenter/datastores", description="where the agent mounts datastores it creates")
    # A datastore is a folder below one of these roots, never any folder of the host (vcenter.domain.datastore_roots).
    datastore_roots: str = Field(
        DEFAULT_DATASTORE_ROOTS,
        description="server: comma-separated folders below which a datastore's url must lie (checked at create time; '/' and system folders such as /etc, /proc are never accepted)",
    )
    agent_datastore_roots: str = Field(
        DEFAULT_DATASTORE_ROOTS,
        description="agent: comma-separated folders below which this host provides datastores and reads or writes files for commands (symlinks resolved); anything else is refused with DATASTORE_PATH_NOT_ALLOWED",
    )

    # --- templates, uploads, import/export (templates_store) -------------------------------
    upload_dir: str = Field("/var/lib/virtcenter/uploads", description="where the server stores uploaded images/OVAs and exported OVAs until agents pull them or users download them")
    upload_max_bytes: int = Field(64 << 30, description="largest upload (image or OVA) the server accepts; a larger one is refused with 413 UPLOAD_TOO_LARGE")
    agent_transfer_timeout: float = Field(3600.0, description="agent: longest pull of an upload or push of an export over HTTPS")
    upload_cleanup_period: float = Field(300.0, description="how often beat cleans the upload folder (expired exports/uploads, abandoned transfers, stray files)")
    export_retention: float = Field(7 * 86400.0, ge=0, description="an exported OVA is removed this many seconds after its export started (0: kept until deleted)")
    upload_retention: float = Field(7 * 86400.0, ge=0, description="an upload no task uses is removed this many seconds after it was stored (0: kept until deleted)")
    upload_abandoned_after: float = Field(
        3600.0, gt=0, description="a transfer (partial file or export still receiving) untouched this long is abandoned and removed; failed uploads are kept this long"
    )
    idempotency_retention: float = Field(
        86400.0, gt=0, description="an operation's Idempotency-Key answers with the Task it started for this long (s); after it, the key starts a new operation (vcenter.services.tasks.idempotency)"
    )
    beat_lock_ttl: float = Field(
        30.0, gt=0, description="beat's Redis lock expires this long after its last renewal (at least three of its ticks): a standby beat takes over then (vcenter.messaging.beat_lock)"
    )
    host_not_responding_after: float = Field(15.0, description="a host with no heartbeat for this long is not-responding")

    # --- HA (vcenter ha; per-cluster detection time, isolation delay... are cluster settings) --
    ha_period: float = Field(0.5, description="the HA monitor looks at every heartbeat this often")
    ha_redis_return_grace: float = Field(10.0, description="after Redis answers again, silence counts only from this many seconds later: agents need time to reconnect and republish both channels")
    ha_lock_ttl: float = Field(3.0, description="the active HA monitor's Redis lock expires this long after its last renewal: a standby takes over then")
    ha_datastore_heartbeat_period: float = Field(1.0, description="agent: renews its heartbeat file on each shared datastore (and reads its peers') this often")
    ha_probe_timeout: float = Field(1.0, description="agent: TCP connect timeout of an isolation-address probe")

    # --- beat -----------------------------------------------------------------------------
    host_monitor_period: float = 2.0
    dpm_period: float = Field(300.0, description="DPM samples demand and decides on every cluster with DPM enabled this often")
    drs_period: float = Field(300.0, description="DRS runs on every cluster with DRS enabled this often (vCenter: 5 minutes)")
    backup_schedule_period: float = Field(60.0, description="how often beat looks for scheduled backup jobs that are due (each job has its own interval)")

    # --- dashboard and console ---------------------------------------------------------------
    ui_poll_period: float = Field(1.0, description="dashboard: how often the live tasks/events stream looks for changes")
    ui_cookie_secure: bool = Field(False, description="dashboard: mark the session cookie Secure (set it when serving HTTPS)")
    console_ticket_ttl: float = Field(30.0, description="a console ticket must be used within this many seconds, once")
    agent_pki_ca_dir: str = Field("/etc/pki/CA", description="agent: where the cluster CA's certificate and CRL go for libvirt (cacert.pem, cacrl.pem)")
    agent_pki_libvirt_dir: str = Field("/etc/pki/libvirt", description="agent: libvirt's host certificate and key (servercert.pem, clientcert.pem, private/*key.pem)")
    agent_pki_qemu_dir: str = Field("/etc/pki/qemu", description="agent: QEMU's TLS directory for migration streams (ca-cert.pem, server-cert.pem, ...)")
    agent_pki_refresh_period: float = Field(3600.0, gt=0, description="agent: how often it fetches the CRL and looks whether its host certificate is due for renewal")
    agent_libvirt_tls_reload: str = Field("virt-admin server-update-tls libvirtd", description="agent: command that makes libvirtd re-read its TLS files after they changed (empty: none)")
    agent_console_port: int = Field(9443, description="TCP port of the agent's console endpoint (TLS with the agent's certificate)")
    console_connect_timeout: float = Field(5.0, description="server: connecting to a host's console endpoint gives up after this")

    # --- performance statistics and alarms ------------------------------------------------
    metrics_sample_period: float = Field(20.0, description="agents sample host and VM counters this often: the real-time tier's interval (vCenter: 20 s)")
    metrics_tier_scale: float = Field(1.0, description="multiplies every rollup tier's interval and retention (5 min/1 day, 30 min/1 week, 2 h/1 month, 1 day/1 year); below 1 in tests only")
    metrics_rollup_period: float = Field(60.0, description="beat rolls samples up into the coarser tiers and applies retention this often")
    metrics_rollup_grace: float = Field(60.0, description="a bucket is rolled up this long after it ended, so late samples still count")
    alarm_period: float = Field(20.0, description="beat evaluates alarm definitions and delivers webhooks this often")
    alarm_vm_heartbeat_timeout: float = Field(60.0, description="a powered-on VM whose guest heartbeat is older than this has lost its heartbeat")
    alarm_webhook_timeout: float = Field(5.0, description="one webhook POST gives up after this long")
    alarm_webhook_attempts: int = Field(5, description="a webhook is tried this many times before it is given up")
    alarm_webhook_retry_delay: float = Field(10.0, description="wait before the first retry of a webhook; doubled each time")
    alarm_webhook_allowed_networks: str = Field(
        "", description="comma-separated networks (CIDRs) a webhook may reach although they are loopback, link-local or otherwise refused (vcenter.domain.alarms.webhook_address_refusal); default none"
    )

    # --- misc -----------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        # A typo must fail at start, not silently trust nobody (or another network).
        import ipaddress

        return ",".join(str(ipaddress.ip_network(entry.strip(), strict=False)) for entry in value.split(",") if entry.strip())

    @field_validator("metrics_listen", "worker_metrics_listen", "beat_metrics_listen", "ha_metrics_listen", "agent_metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str | None) -> str | None:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
                raise ValueError("a metrics listener is host:port, e.g. 127.0.0.1:9464")
        return value or None


ENV_FILE_VARIABLE = "VCENTER_ENV_FILE"

# VCENTER_* variables that are not settings of a server or agent process: read by
# docker-compose.yml (.env.example), by `make run`, by the lab and by the test command.
NOT_SETTINGS = frozenset(
    {
        ENV_FILE_VARIABLE,
        "VCENTER_DB_PASSWORD",
        "VCENTER_REDIS_PASSWORD",
        "VCENTER_REDIS_BIND",
        "VCENTER_API_BIND",
        "VCENTER_API_PUBLISH_PORT",
        "VCENTER_REDIS_PUBLISH_PORT",
        "VCENTER_BASE_IMAGE",
        "VCENTER_AGENT_REDIS_HOST",
        "VCENTER_ADMIN_PASSWORD",
        "VCENTER_LAB_BMC_PASSWORD",
        "VCENTER_LAB_CACHE",
        "VCENTER_TEST_PG_URL",
        "VCENTER_TEST_REDIS_URL",
        "VCENTER_TEST_PG_PORT",
        "VCENTER_TEST_REDIS_PORT",
        "VCENTER_E2E_SCREENSHOTS",
        "VCENTER_AGENT_CRASH_AFTER_CALL_FILE",
    }
)


def setting_variables() -> frozenset[str]:
    return frozenset(f"VCENTER_{name}".upper() for name in Settings.model_fields)


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """The VCENTER_* names among ``names`` that are neither a setting nor a known variable of
    another part, each with the closest setting's name (None: nothing close)."""
    settings = setting_variables()
    known = settings | NOT_SETTINGS
    unknown = sorted({n.upper() for n in names if n.upper().startswith("VCENTER_")} - known)
    return [(n, next(iter(difflib.get_close_matches(n, sorted(settings), n=1, cutoff=0.8)), None)) for n in unknown]


_warned: set[str] = set()


def _warn_unknown(names: Iterable[str], source: str) -> None:
    for name, closest in unknown_variables(names):
        if name not in _warned:
            _warned.add(name)
            hint = f" (did you mean {closest}?)" if closest else ""
            log.warning("%s sets %s, which is no setting: ignored%s", source, name, hint)


@lru_cache
def get_settings() -> Settings:
    env_file = Path(os.environ.get(ENV_FILE_VARIABLE, ".env"))
    if env_file.is_file():
        _warn_unknown(dotenv_values(env_file), str(env_file))
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]  # pydantic-settings' init-only option
    else:
        settings = Settings()
    _warn_unknown(os.environ, "the environment")
    return settings


def reset_settings_cache() -> None:
    get_settings.cache_clear()
