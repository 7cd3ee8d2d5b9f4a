"""The operator commands: each reads its context (vcenter.client.config), names objects by path,
id or name (vcenter.client.paths), calls the API (vcenter.client.api) and prints a table, a
progress bar and the task's end, or ``--json`` (vcenter.client_cli.output)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional

import typer

from vcenter.client_cli.output import REFUSED, handled

if TYPE_CHECKING:
    from vcenter.client.api import Client
    from vcenter.client.models import Task
    from vcenter.client.paths import Inventory

JSON = typer.Option(False, "--json", help="print one JSON document (no table, no progress bar)")
CONTEXT = typer.Option(None, "--context", help="the context to use [VCENTER_CONTEXT, default: the current one]")
WAIT = typer.Option(True, "--wait/--no-wait", help="follow the task to its end (exit status 1 when it fails), or print it as queued")
COMPLETE_VAR = "_VCENTER_COMPLETE"  # the variable the completion scripts set (vcenter.cli.main reads it)
AFTER_ID = typer.Option(None, "--after-id", help="--follow: start after this id (a row's id, or the position a feed gave), so nothing after it is missed; default: from now")
POWER_ACTIONS = ("on", "off", "reset", "suspend", "resume", "shutdown")


def _client(context: Optional[str]) -> tuple[Client, Inventory]:
    from vcenter.client import config
    from vcenter.client.api import Client
    from vcenter.client.paths import Inventory

    _, ctx = config.load().context(context)
    client = Client(ctx.server, ctx.token, ca_file=ctx.ca_file)
    return client, Inventory(client)


def _lookup(context: Optional[str], ref: str, kind: str) -> Any:
    """One object (an InventoryItem) by path, id or name, and the connection closed."""
    client, inventory = _client(context)
    with client:
        return inventory.object(ref, kind)


def _show(item: Any, json_out: bool, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """An object with its path: JSON, or the ``keys`` as rows (then the document is returned
    for more tables)."""
    from vcenter.client_cli import output

    doc = {**item.raw, "path": item.path}
    if json_out:
        output.print_json(doc)
        return None
    output.pairs(doc, keys)
    return doc


def _run_task(client: Client, doc: dict[str, Any], as_json: bool, wait: bool) -> None:
    """A 202's task: followed with a progress bar to its end, then its result or its error
    code (exit status 1 unless it succeeded)."""
    from vcenter.client.models import Task
    from vcenter.client_cli import output

    task = Task.from_json(doc)
    if not wait:
        output.print_json(task.raw) if as_json else typer.echo(f"task {task.id} {task.kind}: {task.state}")
        return
    final = client.wait_task(task) if as_json else _with_progress(client, task)
    _task_end(final, as_json)


def _with_progress(client: Client, task: Task) -> Task:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from vcenter.client_cli import output

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=output.console(stderr=True)) as bar:
        row = bar.add_task(f"task {task.id} {task.kind}", total=100, step=task.step)

        def update(t: Task) -> None:
            bar.update(row, completed=100 if t.succeeded else t.progress, step=f"{t.state} {t.step}".strip())

        return client.wait_task(task, on_update=update)


def _task_end(task: Task, as_json: bool) -> None:
    from vcenter.client_cli import output

    if as_json:
        output.print_json(task.raw)
    elif task.succeeded:
        typer.echo(f"task {task.id} {task.kind}: success" + (f" {_short(task.result)}" if task.result else ""))
    else:
        output.error(task.error_code or task.state.upper(), task.error_message or f"task {task.id} {task.kind} {task.state}", False)
    if not task.succeeded:
        raise typer.Exit(REFUSED)


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= 300 else text[:297] + "..."


def _state(kind: str, doc: dict[str, Any]) -> str:
    """The one-word state of an object in a listing."""
    if kind == "vm":
        return str(doc.get("power_state", ""))
    if kind == "host":
        flags = [f for f in ("maintenance", "standby") if doc.get(f)]
        return " ".join([str(doc.get("connection_state", "")), *flags])
    if kind == "datastore" and doc.get("capacity_bytes"):
        return f"{doc['free_bytes'] / 2**30:.1f}/{doc['capacity_bytes'] / 2**30:.1f} GiB free"
    if kind == "cluster":
        settings = doc.get("settings") or {}
        return " ".join(f"{k.upper()}" for k in ("drs", "ha", "dpm") if (settings.get(k) or {}).get("enabled"))
    return ""


def add_commands(app: typer.Typer) -> None:
    """Register the operator commands on the `vcenter` app."""
    vm_app = typer.Typer(help="Virtual machines: info, power, migrate, relocate, clone, snapshots, console.", no_args_is_help=True, rich_markup_mode=None)
    snapshot_app = typer.Typer(help="A VM's snapshots.", no_args_is_help=True, rich_markup_mode=None)
    host_app = typer.Typer(help="Hosts: info, maintenance, standby, add, remove.", no_args_is_help=True, rich_markup_mode=None)
    cluster_app = typer.Typer(help="Clusters: info, DRS, HA.", no_args_is_help=True, rich_markup_mode=None)
    datacenter_app = typer.Typer(help="Datacenters: create.", no_args_is_help=True, rich_markup_mode=None)
    context_app = typer.Typer(help="Logged-in servers (contexts) kept in the user's config directory.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(vm_app, name="vm")
    vm_app.add_typer(snapshot_app, name="snapshot")
    app.add_typer(host_app, name="host")
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(datacenter_app, name="datacenter")
    app.add_typer(context_app, name="context")

    # --- login and contexts ----------------------------------------------------------------
    @app.command()
    @handled
    def login(
        server: str = typer.Argument(..., help="the server's URL, e.g. https://vc.example:8080"),
        user: Optional[str] = typer.Option(None, "--user", "-u", help="user name (asked for when absent and no --token)"),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input (else it is asked for)"),
        token: Optional[str] = typer.Option(None, "--token", help="an API token (vct_...) instead of a user and password [VCENTER_TOKEN]", envvar="VCENTER_TOKEN"),
        ca_file: Optional[str] = typer.Option(None, "--ca-file", help="PEM file of the CA that signed the server's certificate (HTTPS; default: the system's CAs)"),
        name: Optional[str] = typer.Option(None, "--name", help="the context's name (default: the server's host:port)"),
        json_out: bool = JSON,
    ) -> None:
        """Log in to a server and keep the session (or API token) as a context, file mode 0600,
        in $XDG_CONFIG_HOME/virtcenter (~/.config/virtcenter); it becomes the current context."""
        import os

        from vcenter.client import config
        from vcenter.client.api import Client
        from vcenter.client_cli import output

        if "://" not in server:
            raise typer.BadParameter("give the URL with its scheme, e.g. https://vc.example:8080", param_hint="SERVER")
        ca = os.path.abspath(ca_file) if ca_file else None
        with Client(server, token, ca_file=ca) as client:
            if token:
                client.check_token()
                ctx = config.Context(server=client.server, username=user or "", token=token, auth="token", ca_file=ca)
            else:
                username = user or typer.prompt("user")
                password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("password", hide_input=True)
                session = client.login(username, password)
                ctx = config.Context(server=client.server, username=session.username, token=session.token, auth="session", ca_file=ca)
        stored = config.load()
        context_name = name or config.default_name(server)
        stored.contexts[context_name] = ctx
        stored.current = context_name
        file = config.save(stored)
        if json_out:
            output.print_json({"context": context_name, "server": ctx.server, "username": ctx.username, "auth": ctx.auth, "config": str(file)})
        else:
            typer.echo(f"logged in to {ctx.server} as {ctx.username or 'an API token'}; context {context_name} ({file})")

    @app.command()
    @handled
    def logout(context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """End the context's session on the server and forget its credential (an API token is
        only forgotten here: revoke it with the API)."""
        from vcenter.client import config
        from vcenter.client.api import ApiError, Client
        from vcenter.client_cli import output

        stored = config.load()
        name, ctx = stored.context(context)
        if ctx.auth == "session" and ctx.token:
            with Client(ctx.server, ctx.token, ca_file=ctx.ca_file) as client:
                try:
                    client.logout()
                except ApiError as exc:  # an expired session is over anyway
                    if exc.status != 401:
                        raise
        del stored.contexts[name]
        if stored.current == name:
            stored.current = None
        config.save(stored)
        output.print_json({"context": name, "logged_out": True}) if json_out else typer.echo(f"logged out of {ctx.server} (context {name})")

    @context_app.command("list")
    @handled
    def context_list(json_out: bool = JSON) -> None:
        """The contexts: name, server, user, credential kind; * marks the current one."""
        from vcenter.client import config
        from vcenter.client_cli import output

        stored = config.load()
        if json_out:
            output.print_json([{"name": n, "current": n == stored.current, "server": c.server, "username": c.username, "auth": c.auth, "ca_file": c.ca_file} for n, c in stored.contexts.items()])
            return
        output.table(("", "name", "server", "user", "auth"), [("*" if n == stored.current else "", n, c.server, c.username, c.auth) for n, c in sorted(stored.contexts.items())])

    @context_app.command("use")
    @handled
    def context_use(name: str = typer.Argument(..., help="a context of `vcenter context list`"), json_out: bool = JSON) -> None:
        """Make a context the current one."""
        from vcenter.client import config
        from vcenter.client_cli import output

        stored = config.load()
        stored.context(name)
        stored.current = name
        config.save(stored)
        output.print_json({"current": name}) if json_out else typer.echo(f"current context: {name}")

    # --- inventory paths -------------------------------------------------------------------
    @app.command("ls")
    @handled
    def ls(path: str = typer.Argument("/", help="an inventory path: /, /dc1, /dc1/vm, /dc1/host/cluster1, ..."), context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """List what is inside an inventory path (govc-style); an object's path shows itself."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.resolve(path)
            items = inventory.children(item) if item.kind in ("root", "datacenter", "category", "folder", "cluster") else [item]
        if json_out:
            output.print_json([i.as_json() for i in items])
            return
        output.table(("path", "kind", "id", "state"), [(i.path, i.kind, i.id, _state(i.kind, i.raw)) for i in items])

    @app.command("find")
    @handled
    def find(
        path: str = typer.Argument("/", help="where to search from"),
        kind: list[str] = typer.Option([], "--type", "-t", help="vm, host, cluster, datastore, portgroup, switch, folder, datacenter (repeatable)"),
        name: Optional[str] = typer.Option(None, "--name", "-n", help="a name pattern (* and ?)"),
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Find objects below an inventory path by kind and name pattern."""
        from vcenter.client.paths import KINDS
        from vcenter.client_cli import output

        unknown = [k for k in kind if k not in KINDS]
        if unknown:
            raise typer.BadParameter(f"{', '.join(unknown)}: one of {', '.join(KINDS)}", param_hint="--type")
        client, inventory = _client(context)
        with client:
            items = inventory.find(path, kind, name)
        if json_out:
            output.print_json([i.as_json() for i in items])
            return
        output.table(("path", "kind", "id", "state"), [(i.path, i.kind, i.id, _state(i.kind, i.raw)) for i in items])

    # --- VMs -------------------------------------------------------------------------------
    VM = typer.Argument(..., help="the VM: its path (/dc1/vm/web1), id or name")

    @vm_app.command("info")
    @handled
    def vm_info(vm: str = VM, context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """A VM's state, placement, size, disks and NICs."""
        from vcenter.client_cli import output

        keys = ("id", "name", "path", "power_state", "status", "host_id", "cluster_id", "vcpus", "memory_mib", "guest_os", "libvirt_uuid", "last_stop_reason", "version")
        doc = _show(_lookup(context, vm, "vm"), json_out, keys)
        if doc is None:
            return
        if doc.get("disks"):
            output.table(("disk", "datastore_id", "capacity_mib", "file"), [(d.get("index"), d.get("datastore_id"), d.get("capacity_mib"), d.get("file")) for d in doc["disks"]])
        if doc.get("nics"):
            output.table(("nic", "portgroup_id", "mac"), [(n.get("index"), n.get("portgroup_id"), n.get("mac")) for n in doc["nics"]])

    @vm_app.command("power")
    @handled
    def vm_power(
        vm: str = VM,
        action: str = typer.Argument(..., help=f"{', '.join(POWER_ACTIONS)}"),
        timeout: Optional[int] = typer.Option(None, help="shutdown: seconds the guest has before the task ends GUEST_SHUTDOWN_TIMEOUT"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Power a VM on, off (hard), reset, suspend, resume, or shut its guest down."""
        if action not in POWER_ACTIONS:
            raise typer.BadParameter(f"one of {', '.join(POWER_ACTIONS)}", param_hint="ACTION")
        client, inventory = _client(context)
        with client:
            item = inventory.object(vm, "vm")
            body = {"timeout": timeout} if action == "shutdown" and timeout else None
            _run_task(client, client.post(f"vms/{item.id}/power/{action}", body), json_out, wait)

    @vm_app.command("migrate")
    @handled
    def vm_migrate(
        vm: str = VM,
        host: Optional[str] = typer.Option(None, "--host", help="target host (path, id or name); absent: placement chooses"),
        check: bool = typer.Option(False, "--check", help="only run the VMotion checks against --host, moving nothing"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """VMotion: move a running VM to another host, live."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.object(vm, "vm")
            target = inventory.object(host, "host").id if host else None
            if check:
                if target is None:
                    raise typer.BadParameter("--check needs --host", param_hint="--check")
                report = client.get(f"vms/{item.id}/migrate/check", host=target)
                output.print_json(report) if json_out else typer.echo(_short(report))
                return
            _run_task(client, client.post(f"vms/{item.id}/migrate", {"host_id": target} if target else None), json_out, wait)

    @vm_app.command("relocate")
    @handled
    def vm_relocate(
        vm: str = VM,
        disk: list[str] = typer.Option(..., "--disk", help="INDEX=DATASTORE (path, id or name of the datastore); repeatable"),
        host: Optional[str] = typer.Option(None, "--host", help="move the VM to this host with its disks"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Storage VMotion: move disks to other datastores (while the VM runs), optionally to another host."""
        client, inventory = _client(context)
        with client:
            item = inventory.object(vm, "vm")
            moves = []
            for spec in disk:
                index, sep, store = spec.partition("=")
                if not sep or not index.isdigit():
                    raise typer.BadParameter(f"{spec!r}: give INDEX=DATASTORE", param_hint="--disk")
                moves.append({"index": int(index), "datastore_id": inventory.object(store, "datastore").id})
            body: dict[str, Any] = {"disks": moves}
            if host:
                body["host_id"] = inventory.object(host, "host").id
            _run_task(client, client.post(f"vms/{item.id}/relocate", body), json_out, wait)

    @vm_app.command("clone")
    @handled
    def vm_clone(
        vm: str = VM,
        name: str = typer.Argument(..., help="the clone's name"),
        linked: bool = typer.Option(False, "--linked", help="a linked clone (the source must be powered off)"),
        host: Optional[str] = typer.Option(None, "--host", help="where the clone runs (default: placement in the source's cluster)"),
        datastore: Optional[str] = typer.Option(None, "--datastore", help="where a full clone's disks go"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Clone a VM (full, running or not; or linked); the result names the clone's id."""
        client, inventory = _client(context)
        with client:
            item = inventory.object(vm, "vm")
            body: dict[str, Any] = {"name": name, "linked": linked}
            if host:
                body["host_id"] = inventory.object(host, "host").id
            if datastore:
                body["datastore_id"] = inventory.object(datastore, "datastore").id
            _run_task(client, client.post(f"vms/{item.id}/clone", body), json_out, wait)

    @vm_app.command("console")
    @handled
    def vm_console(
        vm: str = VM,
        url_only: bool = typer.Option(False, "--url", help="print the dashboard's console page address only, attach nothing"),
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Attach this terminal to the running VM's serial console (raw mode; Ctrl-] ends it,
        like virsh console). With --url (or --json) print the dashboard's console address."""
        from vcenter.client import config

        _, ctx = config.load().context(context)
        client, inventory = _client(context)
        with client:
            item = inventory.object(vm, "vm")
            if url_only or json_out:
                from vcenter.client_cli import output

                url = f"{ctx.server}/ui/vm/{item.id}/console"
                output.print_json({"vm_id": item.id, "console_url": url}) if json_out else typer.echo(url)
                return
            ticket = client.post(f"vms/{item.id}/console/ticket")
        from vcenter.client.console import attach, websocket_url

        sys.stderr.write(f"Connected to the console of {item.path} (escape character is ^])\r\n")
        sys.stderr.flush()
        ended = attach(websocket_url(ctx.server, ticket["url"]), ctx.token, ca_file=ctx.ca_file)
        sys.stderr.write("\r\n")
        if ended.refused:
            from vcenter.client_cli import output

            output.error("CONSOLE_CLOSED", f"{ended.reason or 'the console closed'} (websocket close {ended.code})", False)
            raise typer.Exit(REFUSED)

    @snapshot_app.command("list")
    @handled
    def snapshot_list(vm: str = VM, context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """The VM's snapshots as a tree (current one marked *)."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            tree = client.get(f"vms/{inventory.object(vm, 'vm').id}/snapshots")
        if json_out:
            output.print_json(tree)
            return
        rows: list[tuple[Any, ...]] = []

        def add(nodes: list[dict[str, Any]], depth: int) -> None:
            for n in nodes:
                rows.append(("*" if n.get("current") else "", n["id"], "  " * depth + n["name"], n.get("power_state"), n.get("created_at")))
                add(n.get("children") or [], depth + 1)

        add(tree.get("tree") or [], 0)
        output.table(("", "id", "name", "power_state", "created_at"), rows)

    @snapshot_app.command("create")
    @handled
    def snapshot_create(
        vm: str = VM,
        name: str = typer.Argument(..., help="the snapshot's name"),
        description: str = typer.Option("", help="free text"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Take a snapshot (with memory when the VM runs)."""
        client, inventory = _client(context)
        with client:
            _run_task(client, client.post(f"vms/{inventory.object(vm, 'vm').id}/snapshots", {"name": name, "description": description}), json_out, wait)

    def _snapshot_id(client: Client, vm_id: int, ref: str) -> int:
        if ref.isascii() and ref.isdigit():
            return int(ref)
        found: list[int] = []

        def scan(nodes: list[dict[str, Any]]) -> None:
            for n in nodes:
                if n["name"] == ref:
                    found.append(n["id"])
                scan(n.get("children") or [])

        scan(client.get(f"vms/{vm_id}/snapshots").get("tree") or [])
        if len(found) != 1:
            from vcenter.client.errors import PathError

            raise PathError(f"{len(found)} snapshots named {ref!r}: give its id", code="SNAPSHOT_NOT_FOUND" if not found else "AMBIGUOUS_NAME")
        return found[0]

    @snapshot_app.command("revert")
    @handled
    def snapshot_revert(vm: str = VM, snapshot: str = typer.Argument(..., help="the snapshot's id or name"), wait: bool = WAIT, context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """Revert the VM to a snapshot."""
        client, inventory = _client(context)
        with client:
            vm_id = inventory.object(vm, "vm").id
            assert vm_id is not None
            _run_task(client, client.post(f"vms/{vm_id}/snapshots/{_snapshot_id(client, vm_id, snapshot)}/revert"), json_out, wait)

    @snapshot_app.command("delete")
    @handled
    def snapshot_delete(
        vm: str = VM,
        snapshot: str = typer.Argument(..., help="the snapshot's id or name"),
        children: bool = typer.Option(False, "--children", help="delete its subtree too"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Delete a snapshot (its children move to its parent), or its subtree with --children."""
        client, inventory = _client(context)
        with client:
            vm_id = inventory.object(vm, "vm").id
            assert vm_id is not None
            sid = _snapshot_id(client, vm_id, snapshot)
            _run_task(client, client.delete(f"vms/{vm_id}/snapshots/{sid}", children=str(children).lower()), json_out, wait)

    # --- hosts -----------------------------------------------------------------------------
    HOST = typer.Argument(..., help="the host: its path (/dc1/host/cluster1/host1), id or name")
    ENTER_EXIT = typer.Argument(..., help="enter or exit")

    @host_app.command("info")
    @handled
    def host_info(host: str = HOST, context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """A host's connection, maintenance and standby state, hardware and agent."""
        keys = ("id", "name", "path", "address", "connection_state", "maintenance", "standby", "trust_state", "cpu_model", "cpu_cores", "cpu_mhz", "memory_mib", "agent_version", "last_report_at")
        _show(_lookup(context, host, "host"), json_out, keys)

    def _enter_exit(value: str) -> bool:
        if value not in ("enter", "exit"):
            raise typer.BadParameter("enter or exit", param_hint="ACTION")
        return value == "enter"

    def _host_switch(context: Optional[str], host: str, json_out: bool, wait: bool, task_path: Optional[str], state_path: str, field: str) -> None:
        """A host's state change: a task (followed), or a recorded flag (the host answered)."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.object(host, "host")
            if task_path is not None:
                _run_task(client, client.post(f"hosts/{item.id}/{task_path}"), json_out, wait)
                return
            doc = client.post(f"hosts/{item.id}/{state_path}")
        output.print_json(doc) if json_out else typer.echo(f"host {doc['name']}: {field} {doc[field]}")

    @host_app.command("maintenance")
    @handled
    def host_maintenance(host: str = HOST, action: str = ENTER_EXIT, wait: bool = WAIT, context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """Enter maintenance (a task: its running VMs are evacuated first) or exit it."""
        enter = _enter_exit(action)
        _host_switch(context, host, json_out, wait, "maintenance" if enter else None, "maintenance/exit", "maintenance")

    @host_app.command("standby")
    @handled
    def host_standby(
        host: str = HOST,
        action: str = ENTER_EXIT,
        power: bool = typer.Option(False, "--power", help="through the host's power driver: enter evacuates and powers it off, exit powers it on (tasks)"),
        wait: bool = WAIT,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Record standby (refused while the host runs VMs), or with --power power the host off/on."""
        enter = _enter_exit(action)
        task_path = f"power/{'off' if enter else 'on'}" if power else None
        _host_switch(context, host, json_out, wait, task_path, f"standby/{'enter' if enter else 'exit'}", "standby")

    @host_app.command("add")
    @handled
    def host_add(
        name: str = typer.Argument(..., help="the host's name"),
        parent: str = typer.Option(..., "--in", help="a cluster (path /dc1/host/cluster1) or a datacenter (path /dc1) to add it to"),
        address: str = typer.Option("", "--address", help="the host's address (agents, migrations)"),
        libvirt_uri: str = typer.Option("qemu:///system", "--libvirt-uri", help="the agent's libvirt URI on the host"),
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Add a host; prints its one-time registration token for its agent (shown once)."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            where = inventory.resolve(parent) if parent.startswith("/") else inventory.object(parent, "cluster")
            if where.kind == "cluster":
                body = {"cluster_id": where.id, "datacenter_id": where.raw["datacenter_id"]}
            elif where.kind == "datacenter":
                body = {"datacenter_id": where.id}
            else:
                raise typer.BadParameter(f"{parent}: a {where.kind}; give a cluster or a datacenter", param_hint="--in")
            doc = client.post("hosts", {"name": name, "address": address, "libvirt_uri": libvirt_uri, **body})
        if json_out:
            output.print_json(doc)
            return
        typer.echo(f"host {doc['name']} added (id {doc['id']}); start its agent with the one-time registration token:\n{doc['registration_token']}")

    @host_app.command("remove")
    @handled
    def host_remove(
        host: str = HOST,
        force: bool = typer.Option(False, "--force", help="a dead host with VMs: remove it anyway (its VMs become orphaned)"),
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Remove a host (refused while it has VMs, unless --force for a dead host)."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.object(host, "host")
            client.delete(f"hosts/{item.id}", force=str(force).lower())
        output.print_json({"removed": item.as_json()}) if json_out else typer.echo(f"host {item.name} removed")

    # --- clusters --------------------------------------------------------------------------
    CLUSTER = typer.Argument(..., help="the cluster: its path (/dc1/host/cluster1), id or name")

    @cluster_app.command("info")
    @handled
    def cluster_info(cluster: str = CLUSTER, context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """A cluster's settings and hosts."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.object(cluster, "cluster")
            hosts = list(client.list_all("hosts", cluster_id=item.id, sort="name"))
        if json_out:
            output.print_json({**item.raw, "path": item.path, "hosts": hosts})
            return
        output.pairs({**item.raw, "path": item.path}, ("id", "name", "path", "settings", "version"))
        output.table(("host", "id", "state"), [(h["name"], h["id"], _state("host", h)) for h in hosts])

    @cluster_app.command("drs")
    @handled
    def cluster_drs(
        cluster: str = CLUSTER,
        enable: Optional[bool] = typer.Option(None, "--enable/--disable", help="turn DRS on or off"),
        automation: Optional[str] = typer.Option(None, "--automation", help="manual, partial or full"),
        run: bool = typer.Option(False, "--run", help="run DRS now and print its recommendations"),
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Show a cluster's DRS settings; change them (--enable/--disable, --automation); run it (--run)."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.object(cluster, "cluster")
            doc = item.raw
            if enable is not None or automation is not None:
                settings = dict(doc.get("settings") or {})
                drs = dict(settings.get("drs") or {})
                if enable is not None:
                    drs["enabled"] = enable
                if automation is not None:
                    drs["automation"] = automation
                settings["drs"] = drs
                doc = client.patch(f"clusters/{item.id}", {"settings": settings, "version": doc["version"]})
            result = client.post(f"clusters/{item.id}/drs/run") if run else None
        drs_settings = (doc.get("settings") or {}).get("drs") or {}
        if json_out:
            output.print_json({"cluster": doc["name"], "drs": drs_settings, **({"run": result} if run else {})})
            return
        output.pairs({"cluster": doc["name"], **drs_settings}, ["cluster", *sorted(drs_settings)])
        if run:
            typer.echo(_short(result))

    @cluster_app.command("ha")
    @handled
    def cluster_ha(
        cluster: str = CLUSTER,
        enable: Optional[bool] = typer.Option(None, "--enable/--disable", help="turn HA on or off"),
        status: bool = typer.Option(False, "--status", help="HA's verdict on each host and the VMs waiting for a restart"),
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Show a cluster's HA configuration; turn it on or off; show its status."""
        from vcenter.client_cli import output

        client, inventory = _client(context)
        with client:
            item = inventory.object(cluster, "cluster")
            config_doc = client.patch(f"clusters/{item.id}/ha", {"enabled": enable}) if enable is not None else client.get(f"clusters/{item.id}/ha")
            state = client.get(f"clusters/{item.id}/ha/status") if status else None
        if json_out:
            output.print_json({"cluster": item.name, "ha": config_doc, **({"status": state} if status else {})})
            return
        shown = {k: v for k, v in config_doc.items() if k != "vm_overrides"}
        output.pairs({"cluster": item.name, **shown}, ["cluster", *shown])
        if status:
            typer.echo(_short(state))

    @datacenter_app.command("create")
    @handled
    def datacenter_create(name: str = typer.Argument(..., help="the datacenter's name (its path is /NAME)"), context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """Create a datacenter."""
        from vcenter.client_cli import output

        client, _ = _client(context)
        with client:
            doc = client.post("datacenters", {"name": name})
        output.print_json(doc) if json_out else typer.echo(f"datacenter /{doc['name']} created (id {doc['id']})")

    @cluster_app.command("create")
    @handled
    def cluster_create(path: str = typer.Argument(..., help="the new cluster's path: /DATACENTER/host/NAME"), context: Optional[str] = CONTEXT, json_out: bool = JSON) -> None:
        """Create a cluster (DRS, DPM and HA off: turn them on with `cluster drs|ha`)."""
        from vcenter.client.errors import PathError
        from vcenter.client.paths import split
        from vcenter.client_cli import output

        parts = split(path)
        if len(parts) != 3 or parts[1] != "host":
            raise PathError(f"{path}: give /DATACENTER/host/NAME", code="INVALID_PATH")
        client, inventory = _client(context)
        with client:
            dc = inventory.object(f"/{parts[0]}", "datacenter")
            doc = client.post("clusters", {"name": parts[2], "datacenter_id": dc.id})
        output.print_json(doc) if json_out else typer.echo(f"cluster {path} created (id {doc['id']})")

    # --- tasks and events ------------------------------------------------------------------
    @app.command("tasks")
    @handled
    def tasks_command(
        task_id: Optional[int] = typer.Argument(None, help="one task: shown, or followed to its end with --follow"),
        follow: bool = typer.Option(False, "--follow", "-f", help="follow live (server-sent events); with TASK_ID, that task to its end with a progress bar"),
        state: Optional[str] = typer.Option(None, "--state", help="only tasks in this state (queued, running, success, error, cancelled)"),
        limit: int = typer.Option(20, "--limit", min=1, max=500, help="how many recent tasks"),
        after_id: Optional[str] = AFTER_ID,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Recent tasks, one task, or the task feed live (Ctrl-C to stop)."""
        from vcenter.client_cli import output

        client, _ = _client(context)
        with client:
            if task_id is not None:
                task = client.task(task_id)
                if follow:
                    _run_task(client, task.raw, json_out, True)
                elif json_out:
                    output.print_json(task.raw)
                else:
                    output.pairs(task.raw, ("id", "kind", "state", "step", "progress", "object_type", "object_id", "username", "error_code", "error_message", "result", "created_at", "finished_at"))
                return
            if follow:
                _follow(
                    client,
                    "tasks",
                    json_out,
                    after_id,
                    lambda d: (d["id"], d["kind"], d["state"], d.get("step"), f"{d.get('progress', 0)}%", f"{d['object_type']} {d['object_id']}", d.get("error_code") or ""),
                )
                return
            rows = list(client.list_all("tasks", max_items=limit, state=state))
        if json_out:
            output.print_json(rows)
            return
        output.table(
            ("id", "kind", "state", "progress", "object", "user", "error", "created"),
            [(t["id"], t["kind"], t["state"], f"{t['progress']}%", f"{t['object_type']} {t['object_id']}", t["username"], t.get("error_code") or "", t["created_at"]) for t in rows],
        )

    @app.command("events")
    @handled
    def events_command(
        follow: bool = typer.Option(False, "--follow", "-f", help="follow live (server-sent events; Ctrl-C to stop)"),
        kind: Optional[str] = typer.Option(None, "--kind", help="only events of this kind (e.g. task.success)"),
        limit: int = typer.Option(20, "--limit", min=1, max=500, help="how many recent events"),
        after_id: Optional[str] = AFTER_ID,
        context: Optional[str] = CONTEXT,
        json_out: bool = JSON,
    ) -> None:
        """Recent events, or the event feed live."""
        from vcenter.client_cli import output

        client, _ = _client(context)
        with client:
            if follow:
                _follow(client, "events", json_out, after_id, lambda d: (d["id"], d["at"], d["kind"], d.get("object_name") or "", d["message"]))
                return
            rows = list(client.list_all("events", max_items=limit, kind=kind))
        if json_out:
            output.print_json(rows)
            return
        output.table(("id", "at", "user", "kind", "object", "message"), [(e["id"], e["at"], e["username"], e["kind"], e.get("object_name") or "", e["message"]) for e in rows])

    # --- completion ------------------------------------------------------------------------
    @app.command("completion")
    def completion(shell: str = typer.Argument(..., help="bash or zsh")) -> None:
        """Print the shell completion script: `source <(vcenter completion bash)`, or for zsh
        `vcenter completion zsh > "${fpath[1]}/_vcenter"`."""
        from typer._completion_shared import get_completion_script

        if shell not in ("bash", "zsh"):
            raise typer.BadParameter("bash or zsh", param_hint="SHELL")
        typer.echo(get_completion_script(prog_name="vcenter", complete_var=COMPLETE_VAR, shell=shell))


def _follow(client: Client, kind: str, as_json: bool, position: Optional[str], row: Any) -> None:
    """Print each row of a live feed as it comes: a line of JSON each with --json, else
    tab-separated fields. A stream that reached its lifetime is resumed from its last position
    (nothing lost or repeated); one that ends otherwise (the session is over, the server went
    away) ends the command with exit status 1 and the reason."""
    import json

    from vcenter.client_cli import output

    try:
        while True:
            end: dict[str, Any] = {"reason": "closed", "message": "the server closed the stream"}
            for message in client.stream(kind, after_id=position):
                if message.event == "end":
                    end = message.json()
                    break
                position = message.id or position
                doc = message.json()
                sys.stdout.write((json.dumps(doc, default=str) if as_json else "\t".join(str(v) for v in row(doc))) + "\n")
                sys.stdout.flush()
            if end.get("reason") != "lifetime":
                output.error(f"STREAM_ENDED_{str(end.get('reason', '')).upper()}", str(end.get("message", "the server ended the stream")), as_json)
                raise typer.Exit(REFUSED)
    except KeyboardInterrupt:
        return
