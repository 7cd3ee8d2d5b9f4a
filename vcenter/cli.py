"""The `vcenter` command: the server's (serve, worker, beat, agent, db upgrade, admin create,
lab, sim, backup, restore) and the operator's (login, ls, find, vm, host, cluster, tasks,
events, context, completion: vcenter.client_cli, a client of the public API).

Configuration comes from VCENTER_* environment variables (see vcenter.core.settings);
options given here override them for this process.

Start-up decides what is imported: only typer and this module. Every command imports what it
runs inside its function, and the sub-applications ``lab`` and ``sim`` (numpy, the lab's
libvirt tooling) are loaded when named (``_LazyGroup``), so that ``vcenter --help`` and
``vcenter --version`` import none of numpy, SQLAlchemy, FastAPI, Celery or the settings
(tests/unit/test_cli_imports.py; bench/cli_start.py measures it); the operator commands
import httpx and rich when they run, and never the server's libraries.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Optional

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from vcenter.core.settings import Settings

# Sub-applications loaded when their name is given: name -> (module, attribute, one-line help).
LAZY_SUBAPPS = {
    "lab": ("vcenter.lab.cli", "lab_app", "A lab of real libvirt/QEMU hosts on this machine (network namespaces)."),
    "sim": ("vcenter.sim.cli", "sim_app", "Replay VM demand traces over a simulated cluster with the real DRS/DPM engine."),
}


class _LazyGroup(TyperGroup):
    """The root command group: lists LAZY_SUBAPPS among its commands, and imports one only when
    it is invoked (or asked for its own help); the root's help lists them by their one-line help."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in LAZY_SUBAPPS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_SUBAPPS and cmd_name not in self.commands:
            module, attribute, help_text = LAZY_SUBAPPS[cmd_name]
            if self._listing:  # the root's --help: a row, not the sub-application
                return typer.core.TyperCommand(cmd_name, help=help_text)
            command = typer.main.get_command(getattr(importlib.import_module(module), attribute))
            command.name, command.help = cmd_name, help_text
            self.commands[cmd_name] = command
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


# rich_markup_mode=None: click's plain help (typer's rich help imports rich and markdown-it,
# a third of a second, for every --help).
app = typer.Typer(cls=_LazyGroup, help="virtcenter: central management of KVM/libvirt clusters.", no_args_is_help=True, add_completion=False, rich_markup_mode=None)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True, rich_markup_mode=None)
admin_app = typer.Typer(help="Administrator accounts.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")


def _print_version(value: bool) -> None:
    if value:
        from vcenter.core.release import release

        typer.echo(f"virtcenter {release()}")
        raise typer.Exit()


@app.callback()
def _root_options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="print the version and exit")) -> None:
    """virtcenter: central management of KVM/libvirt clusters."""


def get_settings() -> Settings:
    """The settings (vcenter.core.settings, pydantic), imported by the commands that run."""
    from vcenter.core.settings import get_settings as settings

    return settings()


def _add_backup() -> None:
    from vcenter.backup_cli import add_commands

    add_commands(app, lambda **values: _env(**values))


_add_backup()


def _add_operator_commands() -> None:
    from vcenter.client_cli import add_commands, quick_start

    add_commands(app)
    quick_start()  # no pydantic for typer's parameters, no httpx command-line tool: a quicker start


_add_operator_commands()


def _env(**values: object) -> None:
    """Options override VCENTER_* variables: set them, then re-read settings."""
    from vcenter.core.logging import setup_logging
    from vcenter.core.placeholder_secrets import PlaceholderSecretError, refuse_placeholder_secrets
    from vcenter.core.settings import reset_settings_cache

    for key, value in values.items():
        if value is not None:
            os.environ[f"VCENTER_{key.upper()}"] = str(value)
    reset_settings_cache()
    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    try:  # a password copied from .env.example is no secret: refuse to start with it
        refuse_placeholder_secrets({"VCENTER_DATABASE_URL": settings.database_url, "VCENTER_REDIS_URL": settings.redis_url})
    except PlaceholderSecretError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="address(es) to listen on, comma-separated [VCENTER_API_HOST, default 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, help="port to listen on [VCENTER_API_PORT, default 8080]"),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [VCENTER_REDIS_URL]"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
) -> None:
    """Run the API (/api/v1, /docs, /livez, /readyz, /metrics) and the dashboard: HTTPS with
    VCENTER_TLS_CERT/VCENTER_TLS_KEY, or VCENTER_TLS_SELF_SIGNED=true (a certificate generated
    on first start); plain HTTP otherwise."""
    _env(api_host=host, api_port=port, database_url=database_url, redis_url=redis_url)
    import uvicorn

    from vcenter.api.tls import server_certificate, thumbprint

    settings = get_settings()
    pair = server_certificate(settings)
    tls = {} if pair is None else {"ssl_certfile": str(pair[0]), "ssl_keyfile": str(pair[1])}
    if pair is not None:
        typer.echo(f"HTTPS with {pair[0]}; certificate thumbprint {thumbprint(pair[0].read_bytes())}", err=True)
    if settings.metrics_listen and workers > 1:
        # Each worker keeps its own counters; one listener would show one worker's.
        raise typer.BadParameter("VCENTER_METRICS_LISTEN serves one process's metrics: use --workers 1, or scrape /metrics on the API port with VCENTER_METRICS_TOKEN")
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from its own list of
    # addresses; the API decides the client address itself (setting trusted_proxies).
    # log_config=None: uvicorn's loggers hand their lines to ours (JSON with VCENTER_LOG_JSON)
    # instead of printing them in its own plain format.
    server_options = {"log_level": settings.log_level.lower(), "log_config": None, "proxy_headers": False, **tls}
    addresses = [a.strip() for a in settings.api_host.split(",") if a.strip()]
    if len(addresses) == 1:
        uvicorn.run("vcenter.api.asgi:app", host=addresses[0], port=settings.api_port, workers=workers, **server_options)
        return
    # Several addresses (e.g. loopback for operators and the lab network for agents): one
    # server on one socket per address, nothing on the others.
    import socket

    sockets = []
    for address in addresses:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, settings.api_port))
        sockets.append(sock)
    config = uvicorn.Config("vcenter.api.asgi:app", **server_options)
    uvicorn.Server(config).run(sockets=sockets)


def quiet_periodic_lines(celery: Any) -> None:
    """Celery's lines about beat's periodic tasks log at DEBUG (vcenter.messaging.routine_logs)."""
    from vcenter.messaging.routine_logs import quiet_routine_task_lines

    quiet_routine_task_lines(entry["task"] for entry in celery.conf.beat_schedule.values())


METRICS_LISTEN_HELP = "host:port of this process's /livez, /readyz and /metrics listener [VCENTER_{}_METRICS_LISTEN, default off]"


@app.command()
def worker(
    concurrency: int = typer.Option(2, help="parallel orchestrator tasks"),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [VCENTER_REDIS_URL]"),
    node_name: str = typer.Option("orchestrator@%h", help="Celery node name; several workers on one machine need their own (orchestrator2@%h)"),
    metrics_listen: Optional[str] = typer.Option(None, help=METRICS_LISTEN_HELP.format("WORKER")),
) -> None:
    """Run an orchestrator Celery worker (outbox relay, task reaper, host monitor); run as many
    as the load needs, they share the orchestrator queue."""
    _env(database_url=database_url, redis_url=redis_url, worker_metrics_listen=metrics_listen)
    from vcenter.core.logging import celery_quiet
    from workers.beat import make_orchestrator_app, observe_worker

    celery = make_orchestrator_app()
    quiet_periodic_lines(celery)
    observe_worker(celery, get_settings())
    celery.worker_main(
        [
            *celery_quiet(get_settings().log_json),
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--queues=orchestrator",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
            f"--hostname={node_name}",
        ]
    )


@app.command()
def beat(
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [VCENTER_REDIS_URL]"),
    metrics_listen: Optional[str] = typer.Option(None, help=METRICS_LISTEN_HELP.format("BEAT")),
) -> None:
    """Run the periodic scheduler; a Redis lock (celery-redbeat) keeps it to one per system:
    a second beat stands by and takes over within VCENTER_BEAT_LOCK_TTL when the first dies."""
    _env(redis_url=redis_url, beat_metrics_listen=metrics_listen)
    from workers.beat import make_orchestrator_app, observed_scheduler

    celery = make_orchestrator_app()
    quiet_periodic_lines(celery)
    celery.Beat(scheduler=observed_scheduler(celery, get_settings()), loglevel="INFO", quiet=get_settings().log_json).run()


@app.command()
def ha(
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [VCENTER_REDIS_URL]"),
    metrics_listen: Optional[str] = typer.Option(None, help=METRICS_LISTEN_HELP.format("HA")),
) -> None:
    """Run the HA monitor: active/standby through a Redis lock with a fencing token; run two for
    fail-over. Judges host liveness, restarts VMs of failed hosts, resets hung guests."""
    _env(redis_url=redis_url, ha_metrics_listen=metrics_listen)
    from vcenter.services.ha.ha_monitor import run_ha

    run_ha(get_settings())


@app.command()
def agent(
    host_id: Optional[int] = typer.Option(None, help="this host's id in the inventory [VCENTER_AGENT_HOST_ID]"),
    token: Optional[str] = typer.Option(None, help="this host's agent credential, if issued by other means [VCENTER_AGENT_TOKEN]"),
    registration_token: Optional[str] = typer.Option(None, help="one-time token from `POST /api/v1/hosts` for the first start [VCENTER_AGENT_REGISTRATION_TOKEN]"),
    state_dir: Optional[str] = typer.Option(None, help="where the agent keeps its certificate and credential [VCENTER_AGENT_STATE_DIR]"),
    libvirt_uri: Optional[str] = typer.Option(None, help="libvirt URI of this host [VCENTER_LIBVIRT_URI, default qemu:///system]"),
    api_url: Optional[str] = typer.Option(None, help="URL of the virtcenter API [VCENTER_PUBLIC_URL]"),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [VCENTER_REDIS_URL]"),
    simulated: bool = typer.Option(False, help="drive an in-memory simulated hypervisor instead of libvirt (demos only)"),
    metrics_listen: Optional[str] = typer.Option(None, help=METRICS_LISTEN_HELP.format("AGENT")),
) -> None:
    """Run the host agent: registers once (one-time token; prints its certificate thumbprint
    for the operator to confirm), then consumes host.<id>, heartbeats, reports, libvirt events."""
    _env(
        agent_host_id=host_id,
        agent_token=token,
        agent_registration_token=registration_token,
        agent_state_dir=state_dir,
        libvirt_uri=libvirt_uri,
        public_url=api_url,
        redis_url=redis_url,
        agent_metrics_listen=metrics_listen,
    )
    from workers.agent.main import run_agent
    from workers.agent.supervisor import exit_status, supervise

    settings = get_settings()
    if not settings.agent_supervise:
        # under systemd (deploy/systemd/virtcenter-agent.service), which restarts a crash but
        # not a deliberate end: the same exit status as under the supervisor
        try:
            run_agent(settings, simulated=simulated)
        except SystemExit as exc:
            raise typer.Exit(exit_status(exc)) from None
        return
    # A crashed agent must not silence the host's HA heartbeats for long (workers.agent.supervisor).
    code, _ = supervise(lambda: run_agent(settings, simulated=simulated), settings.agent_restart_delay)
    if code:
        raise typer.Exit(code)


def _health_lock_keys() -> dict[str, str]:
    """Redis keys that only a working process keeps alive (each expires unless its loop renews
    it): the scheduler's lock (celery-redbeat's default name) and the active HA monitor's lock."""
    from vcenter.messaging.beat_lock import BEAT_LOCK_KEY
    from vcenter.messaging.contracts import HA_LOCK_KEY

    return {"beat": BEAT_LOCK_KEY, "ha": HA_LOCK_KEY}


def __getattr__(name: str) -> Any:
    # HEALTH_LOCK_KEYS stays importable from here without importing the contracts at start-up.
    if name == "HEALTH_LOCK_KEYS":
        return _health_lock_keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@app.command()
def healthcheck(role: str = typer.Argument(..., help="api, worker, beat or ha: the process this container runs")) -> None:
    """Exit 0 when this container's process is alive and working, 1 otherwise (container
    healthchecks): api answers /livez on its port; worker answers a Celery ping to its own
    node; beat and ha: the lock their loop renews is held (it expires when no loop renews it)."""
    _env()
    settings = get_settings()
    if role == "api":
        import httpx

        scheme = "https" if (settings.tls_self_signed or settings.tls_cert) else "http"
        try:  # loopback, this container's own server: its certificate need not be verified
            ok = httpx.get(f"{scheme}://127.0.0.1:{settings.api_port}/livez", timeout=5, verify=False).status_code == 200
        except httpx.HTTPError:
            ok = False
    elif role == "worker":
        import socket

        from workers.beat import make_orchestrator_app

        node = f"orchestrator@{socket.gethostname()}"
        ok = bool(make_orchestrator_app().control.ping(destination=[node], timeout=5))
    elif role in _health_lock_keys():
        import redis

        try:
            from vcenter.messaging.redis_link import connect

            ok = bool(connect(settings, socket_timeout=5).exists(_health_lock_keys()[role]))
        except redis.RedisError:
            ok = False
    else:
        raise typer.BadParameter(f"unknown role {role!r}: api, worker, beat or ha")
    typer.echo(f"{role}: {'healthy' if ok else 'unhealthy'}")
    if not ok:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="target revision"),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
) -> None:
    """Apply Alembic migrations up to REVISION (default: head)."""
    _env(database_url=database_url)
    from vcenter.db.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    typer.echo(f"database at {revision}")
    from vcenter.messaging.signing import load_or_create_signing_key, signing_key_path

    load_or_create_signing_key(signing_key_path(get_settings()))  # the server's command signing key


@app.command()
def seed(
    hosts: int = typer.Option(2500, help="hosts to create"),
    vms: int = typer.Option(40000, help="VMs to create, spread over the hosts"),
    datacenters: int = typer.Option(2, help="datacenters the hosts are split over"),
    hosts_per_cluster: int = typer.Option(32, help="hosts per cluster"),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
) -> None:
    """Fill an empty database with a realistic inventory at scale (bulk inserts), for
    benchmarks (bench/ui_scale.py) and demos. The hosts have no agents behind them."""
    _env(database_url=database_url)
    import time

    from vcenter.db.migrate import upgrade
    from vcenter.db.session import session_scope
    from vcenter.services.inventory.seed import seed as seed_inventory

    url = get_settings().database_url
    upgrade(url)
    started = time.perf_counter()
    with session_scope(url) as session:
        result = seed_inventory(session, hosts, vms, datacenters, hosts_per_cluster)
    typer.echo(f"seeded {result.as_dict()} in {time.perf_counter() - started:.1f} s")


@app.command("command-key")
def command_key() -> None:
    """Print the server's command public key (PEM), creating the key pair if absent: give it to
    an agent started with --host-id/--token as VCENTER_COMMAND_PUBLIC_KEY (registered agents
    receive it with their credential)."""
    _env()
    from vcenter.messaging.signing import load_or_create_signing_key, public_key_pem, signing_key_path

    typer.echo(public_key_pem(load_or_create_signing_key(signing_key_path(get_settings()))), nl=False)


@admin_app.command("create")
def admin_create(
    username: str = typer.Argument(..., help="user name of the administrator"),
    password: Optional[str] = typer.Option(
        None, help="password [VCENTER_ADMIN_PASSWORD]; asked for when absent; at least VCENTER_PASSWORD_MIN_LENGTH (12) characters, not a common one", envvar="VCENTER_ADMIN_PASSWORD"
    ),
    database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
    exist_ok: bool = typer.Option(False, help="succeed (and reset the password) when the user exists"),
) -> None:
    """Create an administrator (the first one, typically)."""
    _env(database_url=database_url)
    if not password:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    from vcenter.core.errors import VcError
    from vcenter.services.access.admin import create_admin

    try:
        created = create_admin(get_settings(), username, password, exist_ok=exist_ok)
    except VcError as exc:  # a weak password, a reserved or taken name: say why, no traceback
        typer.echo(f"refused: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"administrator {username} {'created' if created else 'updated'}")


def main() -> None:
    from vcenter.client_cli.commands import COMPLETE_VAR  # what `vcenter completion bash|zsh` scripts set

    if COMPLETE_VAR in os.environ:
        # the shell asks for completions: typer's bash/zsh classes, registered only then
        # (add_completion=False keeps them, and their imports, off every other start)
        from typer._completion_classes import completion_init

        completion_init()
    app(complete_var=COMPLETE_VAR)


if __name__ == "__main__":
    main()
