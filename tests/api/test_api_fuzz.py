"""Fuzzing our own HTTP surface on SQLite and on PostgreSQL: the whole OpenAPI with schemathesis
and the dashboard's /ui routes (not in the OpenAPI) with hypothesis, each as an administrator
and as a read-only user. What must hold: no 5xx (nor an exception escaping the app, as a
streamed response that fails after its status line), the administrator's responses match
their declared schemas, at least 30 % of the administrator's valid API requests on seeded
objects succeed (so a wall of 401s or 422s cannot pass), and the read-only user never gets a 2xx on a write.

How the requests are made:
- every operation gets EXAMPLES_PER_OPERATION generated examples (hypothesis, derandomized:
  the same examples on every run), drawn from schemathesis's positive and negative (schema-
  violating) strategies; a route whose whole input space is smaller gets each input once;
- path ids are generated in one half of the examples and, in the other, replaced by the ids of
  a seeded world (an inventory with an orphaned VM on a host and one on no host, users,
  groups, roles, a permission, a rule, an alarm, a backup job, an API token), so that requests
  reach the code behind the lookups too;
- the token is the OpenAPI security scheme ``bearerAuth`` (so the fuzzer sends it as a
  credential rather than varying it as a header); the agent routes are called with a host's
  agent credential instead of a user's;
- /ui routes are driven from their FastAPI signatures: each path and query parameter gets
  seeded ids, integers of any size, non-canonical numbers and words, each POST a form of the
  fields the dashboard reads (with the right CSRF token, or sometimes a wrong one), with the
  session cookie. The console websocket is left to its own tests; /ui/live is an event stream,
  cut after its first events.

The two principals stay usable to the end: an example that would disable, delete or change the
administrator or the read-only user (or the read-only user's permission) acts on a decoy
instead, and the logout routes are left to their own tests. A "write" is a request to a route
that declares a privilege beyond System.View (a dry run sent as POST is a read)."""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host
from tests.conftest import fresh_postgres, make_settings
from vcenter.dashboard.web import COOKIE, csrf_for

pytestmark = pytest.mark.fuzz  # long: make test runs it, make test-fast does not

EXAMPLES_PER_OPERATION = 20
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 2, "DELETE": 3}
READ_PRIVILEGES = {"System.View", "System.Anonymous"}
# Logging out revokes the session the rest of the run needs; their own tests cover them.
SKIPPED = {("DELETE", "/api/v1/session"), ("POST", "/ui/logout")}
DASHBOARD = Path(__file__).resolve().parents[2] / "vcenter" / "dashboard"

HYPOTHESIS = hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


# --- the seeded world ----------------------------------------------------------------------
def _id_of(response: Any) -> int:
    assert response.status_code in (200, 201, 202), f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    return response.json()["id"]


def _seed(client: Any, admin: dict) -> tuple[dict[str, list[int]], dict]:
    """An inventory with objects of each kind (among them the VMs that have tripped routes
    before: an orphaned VM found on a host, one whose host was removed by force), and users,
    groups, roles, a permission, a cluster rule, an alarm and an API token to aim at: path
    parameter name -> ids; and the agent credential of the first host."""
    from vcenter.db.session import session_scope
    from vcenter.db.models import Host
    from vcenter.services.orchestration.reports import mark_host_heartbeat

    settings = client.app.state.runtime.settings
    dc = _id_of(client.post("/api/v1/datacenters", headers=admin, json={"name": "dc1"}))
    cl = _id_of(client.post("/api/v1/clusters", headers=admin, json={"name": "cl1", "datacenter_id": dc}))
    host, agent = register_host(client, admin, dc, "h1", cluster_id=cl)
    stray = {"uuid": str(uuid.uuid4()), "name": "stray", "power_state": "poweredOff"}
    state = {"facts": {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192, "hypervisor": "qemu"}, "domains": [stray]}
    client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent)
    folder = _id_of(client.post("/api/v1/folders", headers=admin, json={"name": "f1", "datacenter_id": dc}))
    pool = _id_of(client.post("/api/v1/pools", headers=admin, json={"name": "p1", "cluster_id": cl}))
    ds = _id_of(client.post("/api/v1/datastores", headers=admin, json={"name": "ds1", "datacenter_id": dc, "url": "/srv/ds1", "host_ids": [host["id"]]}))
    pg = _id_of(client.post("/api/v1/portgroups", headers=admin, json={"name": "pg1", "datacenter_id": dc}))
    switch = _id_of(client.post("/api/v1/switches", headers=admin, json={"name": "sw1", "datacenter_id": dc, "uplinks": ["eth1"]}))
    task = client.post("/api/v1/vms", headers=admin, json={"name": "vm1", "host_id": host["id"], "memory_mib": 64, "folder_id": folder}).json()
    vm = finish_as_agent(client, settings, agent, task)["id"]
    found = next(v["id"] for v in client.get("/api/v1/vms", headers=admin).json()["items"] if v["name"] == "stray")
    # A dead host removed by force leaves its VMs orphaned on no host.
    dead, dead_agent = register_host(client, admin, dc, "h2")
    client.post(f"/api/v1/agent/hosts/{dead['id']}/state", json={**state, "facts": {**state["facts"], "hostname": "h2"}, "domains": []}, headers=dead_agent)
    lost = finish_as_agent(client, settings, dead_agent, client.post("/api/v1/vms", headers=admin, json={"name": "vm2", "host_id": dead["id"], "memory_mib": 64}).json())["id"]
    with session_scope(settings.database_url) as session:
        mark_host_heartbeat(session, session.get(Host, dead["id"]), alive=False)
    assert client.delete(f"/api/v1/hosts/{dead['id']}?force=true", headers=admin).status_code == 204
    job = _id_of(client.post(f"/api/v1/vms/{vm}/backup-jobs", headers=admin, json={"name": "j1", "datastore_id": ds, "directory": "backups", "keep": 3}))
    rule = _id_of(client.post(f"/api/v1/clusters/{cl}/rules", headers=admin, json={"name": "r1", "kind": "run-on", "vm_ids": [vm], "host_ids": [host["id"]]}))
    role = _id_of(client.post("/api/v1/roles", headers=admin, json={"name": "custom", "privileges": ["System.View", "VirtualMachine.PowerOn"]}))
    decoy = _id_of(client.post("/api/v1/users", headers=admin, json={"username": "decoy", "password": "decoy-password-1"}))
    group = _id_of(client.post("/api/v1/groups", headers=admin, json={"name": "g1", "members": ["decoy"]}))
    permission = _id_of(client.post("/api/v1/permissions", headers=admin, json={"principal_type": "user", "principal_id": decoy, "role_id": role, "object_type": "vm", "object_id": vm}))
    alarm = _id_of(
        client.post("/api/v1/alarms", headers=admin, json={"name": "a1", "target_type": "host", "expression": {"type": "state", "condition": "host.not_responding", "severity": "critical"}})
    )
    token = _id_of(client.post("/api/v1/session/tokens", headers=admin, json={"name": "t1", "role_id": role}))
    ids = {
        "datacenter_id": [dc],
        "cluster_id": [cl],
        "host_id": [host["id"]],
        "folder_id": [folder],
        "pool_id": [pool],
        "datastore_id": [ds],
        "portgroup_id": [pg],
        "switch_id": [switch],
        "vm_id": [vm, found, lost],
        "task_id": [task["id"]],
        "rule_id": [rule],
        "role_id": [role],
        "user_id": [decoy],
        "group_id": [group],
        "permission_id": [permission],
        "alarm_id": [alarm],
        "token_id": [token],
        "job_id": [job],
    }
    return ids, agent


_COLLECTION = {
    "datacenters": "datacenter_id",
    "clusters": "cluster_id",
    "hosts": "host_id",
    "folders": "folder_id",
    "pools": "pool_id",
    "datastores": "datastore_id",
    "portgroups": "portgroup_id",
    "switches": "switch_id",
    "vms": "vm_id",
    "tasks": "task_id",
    "metrics": None,
}


def _seeded_name(path: str, name: str) -> str:
    """The seed a path parameter names: ``object_id`` is the object of the collection it follows."""
    if name != "object_id":
        return name
    segments = path.strip("/").split("/")
    before = segments[segments.index("{object_id}") - 1]
    return _COLLECTION.get(before) or f"{before}_id"


def _aim(path: str, parameters: dict, ids: dict[str, list[int]], protected: dict[str, set[int]], pick: int | None) -> dict:
    """The path parameters to send: the ``pick``-th seeded ids (generated ones when ``pick``
    is None), and never a protected one."""
    aimed = dict(parameters or {})
    for name, value in aimed.items():
        seed = _seeded_name(path, name)
        if pick is not None and seed in ids:
            aimed[name] = ids[seed][pick % len(ids[seed])]
        elif seed in protected and _as_int(value) in protected[seed]:
            aimed[name] = ids[seed][0]
    return aimed


# Half of the examples aim at seeded objects, half keep their generated ids.
PICKS = st.one_of(st.none(), st.integers(0, 5))


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


class _Recorder(logging.Handler):
    """The tracebacks the app logs (its 500 handler logs every unexpected exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append("".join(traceback.format_exception(*record.exc_info))[-1500:])


class _Run:
    def __init__(self) -> None:
        self.failures: dict[tuple[str, str], str] = {}
        self.reader_writes_ok: list[str] = []
        self.examples: Counter[str] = Counter()
        self.admin_statuses: Counter[int] = Counter()
        # The administrator's valid requests on seeded objects: most of them must succeed.
        self.aimed_statuses: Counter[int] = Counter()
        self.ui_statuses: Counter[int] = Counter()
        self.operation = ""
        # Routes without any input: hypothesis stops once it has tried their few distinct
        # examples (a drawn seed index changes nothing there).
        self.inputless: set[str] = set()

    def fail(self, who: str, what: str, detail: str) -> None:
        """Record one failure per operation and kind of failure (the last line of its
        traceback): the first example that showed it, with the end of the traceback."""
        kind = detail.strip().splitlines()[-1][:200] if detail.strip() else ""
        self.failures.setdefault((self.operation, kind), f"{who} {what[:300]}:\n    " + detail[-1200:].replace("\n", "\n    "))


def _call(run: _Run, recorder: _Recorder, who: str, what: str, send: Any) -> Any:
    """One request; a 5xx or an exception out of the app is a failure with its traceback."""
    logged = len(recorder.records)
    try:
        response = send()
    except Exception as exc:  # an exception escaping the app: after a streamed 200, or a crash
        run.fail(who, what, "exception out of the app:\n" + "".join(traceback.format_exception(exc)))
        return None
    if response.status_code >= 500:
        run.fail(who, what, f"{response.status_code} {response.text[:200]}\n" + "\n".join(recorder.records[logged:]))
    return response


# --- the OpenAPI operations ----------------------------------------------------------------
def _keeps_the_credential(case: Any) -> bool:
    """False for a negative case whose mutation drops the security scheme's header: the
    transport then sends no token, and the example only proves the 401 again."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    return not any(getattr(m, "parameter", None) == "Authorization" for m in getattr(data, "mutations", None) or ())


def _operation_strategy(operation: Any) -> Any:
    strategies = [operation.as_strategy()]
    try:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE).filter(_keeps_the_credential))
    except Exception:  # nothing in this operation can be made invalid
        pass
    return st.one_of(strategies)


def _fuzz_api(app: Any, client: Any, run: _Run, recorder: _Recorder, admin: dict, reader: dict, agent: dict, ids: dict, protected: dict, only: str = "") -> int:
    from tests.api.test_permissions import api_routes, declared_privileges

    reads = {(m, r.path) for r in api_routes(app) for m in r.methods if {c.privilege for c in declared_privileges(r)} <= READ_PRIVILEGES}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED and re.search(only, f"{op.method.upper()} {op.path}")]
    operations.sort(key=lambda op: METHOD_ORDER.get(op.method.upper(), 1))
    # status_code_conformance: every status answered is one the operation documents (issue 18)
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]

    for operation in operations:
        method = operation.method.upper()
        key = f"{method} {operation.path}"
        if not list(operation.iter_parameters()) and not operation.body:
            run.inputless.add(key)
        is_agent_route = operation.path.startswith("/api/v1/agent/")

        @HYPOTHESIS
        @given(case=_operation_strategy(operation), pick=PICKS)
        def exercise(case: Any, pick: int | None) -> None:
            run.examples[key] += 1
            run.operation = key
            case.path_parameters = _aim(operation.path, case.path_parameters, ids, protected, pick)
            what = f"{method} {case.formatted_path} {case.query or ''}"
            as_reader = _call(run, recorder, "reader", what, lambda: case.call(session=client, headers=reader))
            if as_reader is not None and method in WRITE_METHODS and (method, operation.path) not in reads and 200 <= as_reader.status_code < 300:
                run.reader_writes_ok.append(f"{what} -> {as_reader.status_code}")
            who, credential = ("agent", agent) if is_agent_route else ("admin", admin)
            response = _call(run, recorder, who, what, lambda: case.call(session=client, headers=credential))
            if response is None or response.status_code >= 500:
                return
            if not is_agent_route:
                run.admin_statuses[response.status_code] += 1
                if pick is not None and case.meta is not None and case.meta.generation.mode.is_positive:
                    run.aimed_statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks, headers=credential)
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then report them together
                run.fail(who, what, f"{response.status_code}: {str(exc)[:600]}")

        exercise()
    return len(operations)


# --- the dashboard -------------------------------------------------------------------------
def _ui_routes(app: Any) -> list[Any]:
    found: list[Any] = []

    def walk(routes: Any) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "effective_route_contexts"):
                found.extend(c for c in route.effective_route_contexts() if getattr(c, "dependant", None) is not None and getattr(c, "methods", None))

    walk(app.routes)
    return [r for r in found if r.path.startswith("/ui") and not r.path.startswith("/ui/static")]


def _privileges_of(route: Any) -> set[str]:
    found, stack = set(), [route.dependant]
    while stack:
        dependant = stack.pop()
        if getattr(dependant.call, "privilege", None):
            found.add(dependant.call.privilege)
        stack.extend(dependant.dependencies)
    return found


def _parameters(route: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The route's path and query parameters (its own and its dependencies'): name -> type."""
    path: dict[str, Any] = {}
    query: dict[str, Any] = {}
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        path.update({p.name: p.field_info.annotation for p in dependant.path_params})
        query.update({p.name: p.field_info.annotation for p in dependant.query_params})
        stack.extend(dependant.dependencies)
    return path, query


def _form_fields() -> list[str]:
    """The form fields the dashboard reads, from its source."""
    source = "\n".join(p.read_text() for p in DASHBOARD.glob("*.py"))
    fields = set(re.findall(r"""form(?:\.get\(|\[)["'](\w+)["']""", source))
    fields |= set(re.findall(r"""_\w*field\(form, ["'](\w+)["']""", source))
    return sorted(fields - {"csrf"})


# Numbers as a browser or a hostile client may write them: the routes must answer 4xx or the
# canonical number's answer, never a 500.
ODD_NUMBERS = ["0", "-1", "+1", "01", "1.0", "1e3", " 1", "1 ", "1_0", "\u0661", "\u00b2", "", "x", "9223372036854775807", "9223372036854775808", "-9223372036854775809", str(2**70)]
# Words the dashboard's str parameters take (kinds, tabs, directions, operations, tiers).
WORDS = [
    "vm",
    "host",
    "cluster",
    "datacenter",
    "folder",
    "pool",
    "datastore",
    "portgroup",
    "root",
    "enter",
    "exit",
    "revert",
    "delete",
    "acknowledge",
    "reset",
    "summary",
    "monitor",
    "configure",
    "drs",
    "ha",
    "realtime",
    "day",
    "year",
    "cpu.usage",
    "mem.usage",
    "/ui",
    "//evil.example",
    "https://evil.example/",
]


def _number_text(seeds: list[int]) -> Any:
    return st.one_of(st.sampled_from([str(i) for i in seeds] or ["1"]), st.integers(-(2**70), 2**70).map(str), st.sampled_from(ODD_NUMBERS))


def _word_text() -> Any:
    return st.one_of(st.sampled_from(WORDS), st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12))


def _value_for(name: str, annotation: Any, ids: dict[str, int]) -> Any:
    seeds = ids.get(name) or sorted({i for seeded in ids.values() for i in seeded})
    if annotation is int or name.endswith("_id") or name in ("host", "after"):
        return _number_text(seeds)
    if annotation is bool:
        return st.sampled_from(["true", "false", "1", "0", "maybe"])
    return st.one_of(_word_text(), _number_text(seeds))


def _ui_strategy(route: Any, ids: dict[str, int], fields: list[str]) -> Any:
    path_params, query_params = _parameters(route)
    path = st.fixed_dictionaries({n: _value_for(n, path_params.get(n), ids) for n in re.findall(r"{(\w+)}", route.path)})
    query = st.fixed_dictionaries({}, optional={n: _value_for(n, a, ids) for n, a in query_params.items()})
    keys = st.one_of(st.sampled_from(fields), st.sampled_from(["disk_0", "disk_1", "disk_x", "disk_", "disk_\u00b2"]))
    form = st.dictionaries(keys, st.one_of(_number_text(sorted({i for seeded in ids.values() for i in seeded})), _word_text()), max_size=5)
    return st.fixed_dictionaries({"path": path, "query": query, "form": form, "csrf_ok": st.booleans() | st.just(True), "htmx": st.booleans(), "pick": PICKS})


def _fuzz_ui(app: Any, client: Any, run: _Run, recorder: _Recorder, tokens: dict[str, str], ids: dict, protected: dict, only: str = "") -> int:
    routes = sorted(
        {(m, r.path): r for r in _ui_routes(app) for m in r.methods if (m, r.path) not in SKIPPED and m in ("GET", "POST") and re.search(only, f"{m} {r.path}")}.items(),
        key=lambda item: METHOD_ORDER.get(item[0][0], 1),
    )
    fields = _form_fields()
    for (method, path), route in routes:
        key = f"{method} {path}"
        writes = bool(_privileges_of(route) - READ_PRIVILEGES)
        if method == "GET" and not any(_parameters(route)):
            run.inputless.add(key)

        @HYPOTHESIS
        @given(drawn=_ui_strategy(route, ids, fields))
        def exercise(drawn: dict) -> None:
            run.examples[key] += 1
            run.operation = key
            params = _aim(path, drawn["path"], ids, protected, drawn["pick"])
            url = path.format(**{n: quote(str(v), safe="") for n, v in params.items()})
            if drawn["query"]:
                url += "?" + urlencode(drawn["query"])
            for who in ("reader", "admin"):
                token = tokens[who]
                headers = {"Cookie": f"{COOKIE}={token}"}
                if drawn["htmx"]:
                    headers["HX-Request"] = "true"
                body = None
                if method == "POST":
                    form = dict(drawn["form"])
                    form["csrf"] = csrf_for(token) if drawn["csrf_ok"] else "wrong"
                    body = urlencode(form)
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                client.cookies.clear()  # only the cookie of this principal
                response = _call(
                    run, recorder, f"{who} ui", f"{method} {url} form={drawn['form']!r}", lambda: client.request(method, url, data=body, headers=headers, allow_redirects=False, timeout=10)
                )
                if response is None:
                    continue
                if who == "admin":
                    run.ui_statuses[response.status_code] += 1
                if who == "reader" and writes and 200 <= response.status_code < 300:
                    run.reader_writes_ok.append(f"ui {method} {url} -> {response.status_code}")

        exercise()
    return len(routes)


def _principals_and_seeds(client: Any) -> tuple[dict, dict, dict, dict, dict]:
    """The administrator's and the read-only user's headers, the agent's, the seeds, and the
    ids an example must not touch (the two principals and the read-only permission)."""
    admin = login(client)
    ids, agent = _seed(client, admin)
    viewer = _id_of(client.post("/api/v1/users", headers=admin, json={"username": "viewer", "password": "viewer-password"}))
    read_only = next(r["id"] for r in client.get("/api/v1/roles", headers=admin).json() if r["name"] == "Read-only")
    reader_permission = _id_of(client.post("/api/v1/permissions", headers=admin, json={"principal_type": "user", "principal_id": viewer, "role_id": read_only, "object_type": "root", "object_id": 0}))
    reader = login(client, "viewer", "viewer-password")
    admin_id = next(u["id"] for u in client.get("/api/v1/users", headers=admin).json() if u["username"] == "admin")
    return admin, reader, agent, ids, {"user_id": {admin_id, viewer}, "permission_id": {reader_permission}}


def _fuzzed_app(tmp_path: Path, database: str) -> tuple[Any, _Recorder, _Run]:
    """An application on a fresh database with its administrator, and the recorder of the
    tracebacks it logs (installed: the caller removes it)."""
    from vcenter.db.migrate import upgrade

    settings = make_settings(tmp_path, **({"database_url": fresh_postgres()} if database == "postgresql" else {}))
    upgrade(settings.database_url)
    make_admin(settings)
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    return app_for(settings), recorder, _Run()


# Measured on 2 cores: ~2.5 min of CPU per database (about half generating examples, half
# serving requests); the limit leaves room for a machine shared with other test runs.
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_fuzz_the_api_and_the_dashboard_as_administrator_and_read_only(tmp_path, database):
    started = time.monotonic()
    app, recorder, run = _fuzzed_app(tmp_path, database)
    try:
        with asgi.get_client(app, max_stream_events=2) as client:
            admin, reader, agent, ids, protected = _principals_and_seeds(client)
            api_operations = _fuzz_api(app, client, run, recorder, admin, reader, agent, ids, protected)
            tokens = {"admin": admin["Authorization"].split()[1], "reader": reader["Authorization"].split()[1]}
            ui_routes = _fuzz_ui(app, client, run, recorder, tokens, ids, protected)

            # The principals were usable to the end (or the run proved less than it says).
            for who, credential in (("admin", admin), ("reader", reader)):
                assert client.get("/api/v1/privileges/effective", headers=credential).status_code == 200, f"the {who}'s session ended during the run"
    finally:
        logging.getLogger().removeHandler(recorder)

    total = sum(run.aimed_statuses.values())
    ok = sum(n for status, n in run.aimed_statuses.items() if 200 <= status < 300)
    print(
        f"\nfuzz on {database}: {api_operations} operations + {ui_routes} /ui routes, {sum(run.examples.values())} examples "
        f"(each sent as admin and as reader) in {time.monotonic() - started:.0f} s; admin API statuses {dict(sorted(run.admin_statuses.items()))}; "
        f"valid ones on seeded objects {dict(sorted(run.aimed_statuses.items()))}; admin /ui statuses {dict(sorted(run.ui_statuses.items()))}; fewest examples: {sorted(run.examples.items(), key=lambda kv: kv[1])[:5]}"
    )
    report = "\n".join(f"[{operation}] {failure}" for (operation, _), failure in sorted(run.failures.items()))
    (tmp_path / "fuzz-failures.txt").write_text(report)
    assert not run.failures, f"{len(run.failures)} distinct failures on {len({op for op, _ in run.failures})} routes:\n{report}"
    assert not run.reader_writes_ok, run.reader_writes_ok
    short = {key: n for key, n in run.examples.items() if n < EXAMPLES_PER_OPERATION and key not in run.inputless}
    assert not short, f"operations that ran fewer than {EXAMPLES_PER_OPERATION} examples: {short}"
    assert ok / total >= 0.30, f"only {ok}/{total} valid administrator requests on seeded objects got a 2xx: {dict(run.aimed_statuses)}"


def test_the_token_is_a_security_scheme_not_a_parameter(tmp_path):
    """The fuzzer keeps a credential declared as a security scheme; a header parameter named
    ``authorization`` it varies like any other input (so most of its requests were 401s)."""
    settings = make_settings(tmp_path)
    from vcenter.db.migrate import upgrade

    upgrade(settings.database_url)
    app = app_for(settings)
    schema = app.openapi()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {**schema["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    header_parameters = [(method, path, p["name"]) for path, item in schema["paths"].items() for method, op in item.items() for p in op.get("parameters", []) if p["in"] == "header"]
    # The one header parameter is data the client chooses (operations' Idempotency-Key).
    assert [h for h in header_parameters if h[2] != "Idempotency-Key"] == []
    assert schema["paths"]["/api/v1/vms"]["get"]["security"] == [{"bearerAuth": []}]
    with asgi.get_client(app) as client:
        for headers in ({}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": "bearer"}):
            r = client.get("/api/v1/vms", headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "NOT_AUTHENTICATED", (headers, r.status_code, r.text)
        r = client.get("/api/v1/vms", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and r.json()["code"] == "NOT_AUTHENTICATED", r.text


# --- the vSphere-compatible API (issue 19: not in our OpenAPI; driven from its routes) ------------
VSPHERE_PREFIX = {"datacenter": "datacenter-", "cluster": "domain-c", "host": "host-", "datastore": "datastore-", "network": "network-", "resource_pool": "resgroup-", "vm": "vm-", "folder": "group-v"}
VSPHERE_FILTER_KIND = {
    "datacenters": "datacenter",
    "clusters": "cluster",
    "hosts": "host",
    "datastores": "datastore",
    "networks": "network",
    "resource_pools": "resource_pool",
    "parent_resource_pools": "resource_pool",
    "vms": "vm",
    "folders": "folder",
    "parent_folders": "folder",
}
VSPHERE_ENUMS = ["POWERED_ON", "POWERED_OFF", "SUSPENDED", "CONNECTED", "DISCONNECTED", "VMFS", "NFS", "STANDARD_PORTGROUP", "VIRTUAL_MACHINE", "HOST", "DATACENTER", "true", "false"]


def _vsphere_value(kind: str | None, seeds: list[int]) -> Any:
    """A vSphere id of ``kind`` (a seeded one, any number, an odd spelling, another kind's), an
    enumeration value or a word."""
    if kind in ("disk", "nic"):  # a VM's device key
        return st.one_of(st.sampled_from(["2000", "4000", "2001"]), _word_text(), _number_text(seeds))
    prefixes = [VSPHERE_PREFIX[kind]] if kind else list(VSPHERE_PREFIX.values())
    ids = st.builds(lambda p, n: p + n, st.sampled_from(prefixes + ["group-d", "group-h", "vm", ""]), _number_text(seeds + [2 * s + 1 for s in seeds]))
    return st.one_of(ids, st.sampled_from(VSPHERE_ENUMS), _word_text())


def _fuzz_vsphere(app: Any, client: Any, run: _Run, recorder: _Recorder, sessions: dict[str, str], seeds: list[int]) -> int:
    from tests.vsphere_spec import problems
    from tests.api.test_permissions import http_routes
    from vcenter.api.vsphere.filters import ALLOWED

    routes = sorted({r.path for r in http_routes(app, ("/api/vcenter", "/api/session")) if "GET" in r.methods and "{rest" not in r.path})
    for path in routes:
        key = f"GET {path}"
        params = re.findall(r"{(\w+)}", path)
        listing = path.rsplit("/", 1)[1].replace("-", "_")
        filters = ALLOWED.get(listing, ()) if not params else ()
        query = st.dictionaries(st.sampled_from(list(filters) + ["color", "filter.names"]) if filters else st.sampled_from(["x"]), st.lists(_vsphere_value(None, seeds), max_size=3), max_size=3)
        strategy = st.fixed_dictionaries({"path": st.fixed_dictionaries({n: _vsphere_value(n, seeds) for n in params}), "query": query})

        @HYPOTHESIS
        @given(drawn=strategy)
        def exercise(drawn: dict) -> None:
            run.examples[key] += 1
            run.operation = key
            url = path.format(**{n: quote(str(v), safe="") for n, v in drawn["path"].items()})
            items = [(k, v) for k, values in drawn["query"].items() for v in values]
            for who in ("reader", "admin"):
                response = _call(run, recorder, f"{who} vsphere", f"GET {url} {items}", lambda: client.get(url, params=items, headers={"vmware-api-session-id": sessions[who]}))
                if response is None or response.status_code >= 500:
                    continue
                if who == "admin":
                    run.admin_statuses[response.status_code] += 1
                found = problems("GET", url, response.status_code, response.json())
                if found:
                    run.fail(who, f"GET {url} {items}", f"{response.status_code} {response.text[:300]}: {found}")

        exercise()
    return len(routes)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_fuzz_the_vsphere_api_as_administrator_and_read_only(tmp_path, database):
    """Every GET of the vSphere-compatible API, with generated ids (seeded ones, any number, odd
    spellings, other kinds' prefixes), filters and values, over HTTPS as the administrator and
    as a read-only user: no 5xx, and every answer (2xx or error) validates against the
    upstream specification (tests/vsphere_spec.py)."""
    app, recorder, run = _fuzzed_app(tmp_path, database)
    try:
        with TestClient(app, base_url="https://testserver") as client:
            _admin, _reader, _agent, ids, _protected = _principals_and_seeds(client)
            sessions = {}
            for who, user in (("admin", ("admin", "secret-pass-phrase")), ("reader", ("viewer", "viewer-password"))):
                r = client.post("/api/session", auth=user)
                assert r.status_code == 201, r.text
                sessions[who] = r.json()
            seeds = sorted({i for seeded in ids.values() for i in seeded})
            routes = _fuzz_vsphere(app, client, run, recorder, sessions, seeds)
    finally:
        logging.getLogger().removeHandler(recorder)
    print(f"\nvSphere fuzz on {database}: {routes} routes, {sum(run.examples.values())} examples; admin statuses {dict(sorted(run.admin_statuses.items()))}")
    report = "\n".join(f"[{operation}] {failure}" for (operation, _), failure in sorted(run.failures.items()))
    assert not run.failures, f"{len(run.failures)} distinct failures:\n{report}"
    assert routes >= 26 and 200 in run.admin_statuses, (routes, dict(run.admin_statuses))
