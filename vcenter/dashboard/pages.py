"""Dashboard pages and actions under /ui: login, the inventory tree and search, a page per
object (summary, monitor, configure tabs), VM, host and cluster actions.

Every route declares its privilege (ui_requires); a page offers only the actions the user
holds (web.permission_checker), and an action posted anyway is refused with 403 by the same
check the API makes. Actions answer an htmx fragment for the flash area: the Task they
started (its progress then shows in the live panel) or the error with its stable code.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from vcenter.core.errors import Invalid, NotFound, Unauthorized, VcError
from vcenter.core.object_ids import ObjectIdPath, ObjectIdQuery, parse_object_id
from vcenter.dashboard.web import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    UiUser,
    count_refused_credential,
    PostedForm,
    new_login_csrf,
    permission_checker,
    templates,
    ui_public,
    ui_requires,
    panel_filter,
    verify_csrf,
    visibility_filter,
)
from vcenter.domain.states import PowerAction
from vcenter.services.access import auth
from vcenter.services.drs import drs
from vcenter.services.protection import snapshots
from vcenter.services.library import clones
from vcenter.services.ha import ha
from vcenter.services.compute import maintenance_mode, migration, vms
from vcenter.services.inventory import hosts, host_power
from vcenter.services.monitoring import overview
from vcenter.services.compute import console as console_service

router = APIRouter(prefix="/ui", include_in_schema=False)

KIND_LABELS = {"datacenter": "Datacenter", "cluster": "Cluster", "host": "Host", "vm": "Virtual machine", "datastore": "Datastore", "portgroup": "Port group"}
POWER_ACTIONS: dict[str, tuple[PowerAction, str, str]] = {
    "on": (PowerAction.POWER_ON, "VirtualMachine.PowerOn", "Power on"),
    "off": (PowerAction.POWER_OFF, "VirtualMachine.PowerOff", "Power off"),
    "shutdown": (PowerAction.SHUTDOWN_GUEST, "VirtualMachine.PowerOff", "Shut down guest"),
    "reset": (PowerAction.RESET, "VirtualMachine.PowerOff", "Reset"),
    "suspend": (PowerAction.SUSPEND, "VirtualMachine.PowerOff", "Suspend"),
    "resume": (PowerAction.RESUME, "VirtualMachine.PowerOn", "Resume"),
}
# Which power actions make sense in which state (the service refuses the others anyway).
POWER_OFFERED = {"poweredOff": ("on",), "poweredOn": ("shutdown", "off", "reset", "suspend"), "suspended": ("resume", "off")}


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _fragment(request: Request, name: str, **context: Any) -> str:
    return templates.get_template(name).render(request=request, **context)


def _page_context(request: Request, session: Any, user: UiUser) -> dict[str, Any]:
    runtime = _runtime(request)
    keep = visibility_filter(session, runtime.settings, user)
    where = panel_filter(session, runtime.settings, user)
    return {
        "user": user,
        "can": permission_checker(session, runtime.settings, user),
        "roots": keep(overview.roots(session)),
        "tasks": overview.recent_tasks(session, where=where(overview.TASK_MODEL)),
        "events": overview.recent_events(session, where=where(overview.EVENT_MODEL)),
        "labels": KIND_LABELS,
    }


# --- login ---------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, _: Annotated[None, ui_public("the login form")], next: str = "/ui", error: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_csrf()
    response = _render(request, "login.html", login_csrf=token, next=_safe_next(next), error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_runtime(request).settings.ui_cookie_secure, path="/ui/login")
    return response


def _safe_next(target: str) -> str:
    # Only paths of the dashboard itself: never an open redirect to another site.
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, _: Annotated[None, ui_public("logging in")], form: PostedForm) -> Response:
    runtime = _runtime(request)
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_token or form.get("csrf") != cookie_token:
        return _render(request, "login.html", status_code=403, login_csrf=cookie_token or new_login_csrf(), next="/ui", error="The form expired: try again.")
    try:
        with runtime.transaction() as session:
            token, _login, _user = auth.login(session, form.get("username", "")[:80], form.get("password", "")[:1024], runtime.settings)
    except Unauthorized as exc:
        count_refused_credential(runtime, request, exc)
        return _render(request, "login.html", status_code=401, login_csrf=cookie_token, next=_safe_next(form.get("next", "/ui")), error=exc.message)
    response = RedirectResponse(_safe_next(form.get("next", "/ui")), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=runtime.settings.ui_cookie_secure, path="/", max_age=int(runtime.settings.session_max_lifetime))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
def logout(request: Request, user: Annotated[UiUser, ui_requires("System.View", anywhere=True)], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    with _runtime(request).transaction() as session:
        auth.logout(session, user.token)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --- home, tree, search ----------------------------------------------------------------------
@router.get("", response_class=HTMLResponse)
def home(request: Request, user: Annotated[UiUser, ui_requires("System.View", anywhere=True)]) -> Response:
    with _runtime(request).transaction() as session:
        context = _page_context(request, session, user)
        summaries = [(dc, overview.summary(session, "datacenter", overview.get(session, "datacenter", dc.id))) for dc in context["roots"]]
        return _render(request, "home.html", summaries=summaries, **context)


@router.get("/tree/{kind}/{object_id}", response_class=HTMLResponse)
def tree_children(request: Request, kind: str, object_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("System.View", anywhere=True)]) -> Response:
    if kind not in ("datacenter", "cluster", "host"):
        raise NotFound(f"{kind} has no children in the tree", code="UNKNOWN_KIND")
    with _runtime(request).transaction() as session:
        permission_checker(session, _runtime(request).settings, user)("System.View", kind, object_id) or _forbid(user, kind, object_id)
        keep = visibility_filter(session, _runtime(request).settings, user)
        return _render(request, "_tree.html", nodes=keep(overview.children(session, kind, object_id)))


def _forbid(user: UiUser, kind: str, object_id: int) -> None:
    from vcenter.core.errors import Forbidden

    raise Forbidden(f"{user.username} lacks System.View on {kind} {object_id}", code="FORBIDDEN")


@router.get("/search", response_class=HTMLResponse)
def search(request: Request, user: Annotated[UiUser, ui_requires("System.View", anywhere=True)], q: str = Query("", max_length=80)) -> Response:
    with _runtime(request).transaction() as session:
        nodes = visibility_filter(session, _runtime(request).settings, user)(overview.search(session, q))
        return _render(request, "_search.html", nodes=nodes, q=q, labels=KIND_LABELS)


# --- object pages --------------------------------------------------------------------------
def _object_page(kind: str) -> None:
    @router.get(f"/{kind}/{{{kind}_id}}", response_class=HTMLResponse, name=f"ui_{kind}")
    def page(request: Request, user: Annotated[UiUser, ui_requires("System.View", on=kind)], tab: str = Query("summary", pattern="^(summary|monitor|configure|drs|ha)$")) -> Response:
        object_id = parse_object_id(request.path_params[f"{kind}_id"], f"{kind}_id")
        with _runtime(request).transaction() as session:
            row = overview.get(session, kind, object_id)
            context = _page_context(request, session, user)
            extra: dict[str, Any] = {}
            if kind == "vm" and tab == "summary":
                extra["snapshots"] = _flatten(snapshots.list_snapshots(session, object_id)["tree"])
            if kind == "cluster" and tab == "ha":
                extra["ha_status"], extra["ha_capacity"] = ha.status(session, object_id), ha.capacity(session, object_id)
            return _render(
                request,
                "object.html",
                kind=kind,
                obj=row,
                tab=tab,
                path=overview.path_of(session, kind, row),
                **extra,
                info=overview.summary(session, kind, row),
                object_tasks=overview.recent_tasks(session, 20, kind, object_id),
                object_events=overview.recent_events(session, 30, kind, object_id),
                power_actions=POWER_ACTIONS,
                alarms=overview.triggered_alarms(session, kind, object_id) if tab == "summary" else [],
                power_offered=POWER_OFFERED.get(getattr(row, "power_state", ""), ()),
                **context,
            )


for _kind in overview.TREE_KINDS:
    _object_page(_kind)


def _flatten(tree: list[dict[str, Any]], depth: int = 0) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for node in tree:
        out.append((depth, node))
        out += _flatten(node.get("children") or [], depth + 1)
    return out


# --- actions -------------------------------------------------------------------------------
def _task_started(request: Request, task: Any, what: str) -> HTMLResponse:
    return HTMLResponse(_fragment(request, "_flash.html", ok=True, message=f"{what}: task #{task.id} {task.kind} {task.state}", task=task), status_code=202)


def _refused(request: Request, exc: VcError) -> HTMLResponse:
    return HTMLResponse(_fragment(request, "_flash.html", ok=False, message=f"{exc.code}: {exc.message}", task=None), status_code=exc.status)


def _power_route(path: str, action: PowerAction, privilege: str, label: str) -> None:
    @router.post(f"/vm/{{vm_id}}/power/{path}", name=f"ui_vm_power_{path}")
    def power_action(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires(privilege, on="vm")], form: PostedForm) -> Response:
        verify_csrf(request, user, form)
        runtime = _runtime(request)
        try:
            with runtime.transaction() as session:
                task = vms.power(session, user.username, vm_id, action, runtime.settings)
                return _task_started(request, task, label)
        except VcError as exc:
            return _refused(request, exc)


for _path, (_action, _privilege, _label) in POWER_ACTIONS.items():
    _power_route(_path, _action, _privilege, _label)


@router.get("/vm/{vm_id}/migrate/check", response_class=HTMLResponse)
def migrate_check(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("System.View", on="vm")], host: ObjectIdQuery) -> Response:
    try:
        with _runtime(request).transaction() as session:
            report = migration.check_report(session, vm_id, host)
    except VcError as exc:
        return _refused(request, exc)
    return _render(request, "_checks.html", report=report)


def _int_field(form: dict[str, str], field: str) -> int:
    # The API's id parser: str.isdigit() took Unicode digits, "0042" was 42 too.
    return parse_object_id(form.get(field, ""), field)


@router.post("/vm/{vm_id}/migrate")
def migrate(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("VirtualMachine.Migrate", on="vm")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        target = _int_field(form, "host_id") if form.get("host_id") else None
        with runtime.transaction() as session:
            task = migration.migrate(session, user.username, vm_id, target, runtime.settings)
            return _task_started(request, task, "Migrate")
    except VcError as exc:
        return _refused(request, exc)


@router.post("/vm/{vm_id}/relocate")
def relocate(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("VirtualMachine.Relocate", on="vm")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        moves = [{"index": parse_object_id(k.removeprefix("disk_"), "disk index"), "datastore_id": _int_field(form, k)} for k in sorted(form) if k.startswith("disk_") and form[k]]
        if not moves:
            raise Invalid("choose a datastore for at least one disk", code="INVALID", details={"field": "disks"})
        with runtime.transaction() as session:
            task = migration.relocate(session, user.username, vm_id, moves)
            return _task_started(request, task, "Relocate storage")
    except ValueError:
        return _refused(request, Invalid("disk index must be a number", code="INVALID"))
    except VcError as exc:
        return _refused(request, exc)


@router.post("/host/{host_id}/maintenance/{direction}")
def host_maintenance(request: Request, host_id: ObjectIdPath, direction: str, user: Annotated[UiUser, ui_requires("Host.Maintenance", on="host")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        with runtime.transaction() as session:
            if direction == "enter":
                return _task_started(request, maintenance_mode.enter_maintenance(session, user.username, host_id, runtime.settings), "Enter maintenance")
            if direction == "exit":
                host = maintenance_mode.exit_maintenance(session, user.username, host_id)
                return HTMLResponse(_fragment(request, "_flash.html", ok=True, message=f"host {host.name} left maintenance", task=None))
            raise NotFound(f"no maintenance action {direction!r}", code="UNKNOWN_ACTION")
    except VcError as exc:
        return _refused(request, exc)


@router.post("/host/{host_id}/standby/{direction}")
def host_standby(request: Request, host_id: ObjectIdPath, direction: str, user: Annotated[UiUser, ui_requires("Host.Power", on="host")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        with runtime.transaction() as session:
            if direction == "enter":  # evacuate, then power off through the host's power driver
                return _task_started(request, maintenance_mode.enter_maintenance(session, user.username, host_id, runtime.settings, standby=True), "Enter standby")
            if direction == "exit":
                return _task_started(request, host_power.power_on_host(session, user.username, host_id), "Exit standby")
            raise NotFound(f"no standby action {direction!r}", code="UNKNOWN_ACTION")
    except VcError as exc:
        return _refused(request, exc)


@router.post("/host/{host_id}/remove")
def host_remove(request: Request, host_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("Host.Remove", on="host")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    try:
        with _runtime(request).transaction() as session:
            hosts.remove(session, host_id, False, user.username)
    except VcError as exc:
        return _refused(request, exc)
    response = HTMLResponse(_fragment(request, "_flash.html", ok=True, message=f"host {host_id} removed", task=None))
    response.headers["HX-Redirect"] = "/ui"
    return response


@router.post("/cluster/{cluster_id}/drs/run")
def drs_run(request: Request, cluster_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("Cluster.DRS", on="cluster")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        with runtime.transaction() as session:
            drs.run(session, user.username, cluster_id, runtime.settings)
    except VcError as exc:
        return _refused(request, exc)
    return _drs_fragment(request, cluster_id, user)


@router.post("/cluster/{cluster_id}/drs/{rec_id}/apply")
def drs_apply(request: Request, cluster_id: ObjectIdPath, rec_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("Cluster.DRS", on="cluster")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        with runtime.transaction() as session:
            drs.apply(session, user.username, cluster_id, rec_id, runtime.settings)
    except VcError as exc:
        return _refused(request, exc)
    return _drs_fragment(request, cluster_id, user)


def _drs_fragment(request: Request, cluster_id: int, user: UiUser) -> HTMLResponse:
    with _runtime(request).transaction() as session:
        row = overview.get(session, "cluster", cluster_id)
        can = permission_checker(session, _runtime(request).settings, user)
        return _render(request, "_drs.html", obj=row, info=overview.summary(session, "cluster", row), can=can, user=user)


@router.post("/cluster/{cluster_id}/drs/whatif", response_class=HTMLResponse)
def drs_whatif(request: Request, cluster_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("System.View", on="cluster")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    change: dict[str, Any] = {"kind": form.get("kind", "")}
    try:
        if change["kind"] not in ("host-fails", "host-maintenance", "host-powers-off", "vm-demand"):
            raise Invalid(f"kind: the page offers no what-if {change['kind']!r}", code="INVALID", details={"field": "kind"})
        if change["kind"] in ("host-fails", "host-maintenance", "host-powers-off"):
            change["host_id"] = _int_field(form, "host_id")
        elif change["kind"] == "vm-demand":
            change["vm_id"] = _int_field(form, "vm_id")
            change["cpu_mhz"] = float(form.get("cpu_mhz") or 0)
        with _runtime(request).transaction() as session:
            result = drs.whatif(session, cluster_id, change)
            host_names = overview.summary(session, "cluster", overview.get(session, "cluster", cluster_id))["host_names"]
    except ValueError:
        return _refused(request, Invalid("cpu_mhz: a number is required", code="INVALID"))
    except VcError as exc:
        return _refused(request, exc)
    return _render(request, "_whatif.html", result=result, change=change, host_names=host_names)


# --- snapshots and clones ----------------------------------------------------------------------
@router.post("/vm/{vm_id}/snapshots")
def snapshot_create(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("VirtualMachine.Snapshot", on="vm")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    name = form.get("name", "").strip()[:80]
    try:
        if not name:
            raise Invalid("name: a snapshot needs a name", code="INVALID", details={"field": "name"})
        with _runtime(request).transaction() as session:
            return _task_started(request, snapshots.create_snapshot(session, user.username, vm_id, name, form.get("description", "")[:500]), "Snapshot")
    except VcError as exc:
        return _refused(request, exc)


@router.post("/vm/{vm_id}/snapshots/{snapshot_id}/{operation}")
def snapshot_operation(
    request: Request, vm_id: ObjectIdPath, snapshot_id: ObjectIdPath, operation: str, user: Annotated[UiUser, ui_requires("VirtualMachine.Snapshot", on="vm")], form: PostedForm
) -> Response:
    verify_csrf(request, user, form)
    try:
        with _runtime(request).transaction() as session:
            if operation == "revert":
                return _task_started(request, snapshots.revert_snapshot(session, user.username, vm_id, snapshot_id), "Revert to snapshot")
            if operation == "delete":
                return _task_started(request, snapshots.delete_snapshot(session, user.username, vm_id, snapshot_id), "Delete snapshot")
            raise NotFound(f"no snapshot operation {operation!r}", code="UNKNOWN_ACTION")
    except VcError as exc:
        return _refused(request, exc)


@router.post("/vm/{vm_id}/clone")
def clone(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("VirtualMachine.Clone", on="vm")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    try:
        name = form.get("name", "").strip()[:80]
        if not name:
            raise Invalid("name: the clone needs a name", code="INVALID", details={"field": "name"})
        data: dict[str, Any] = {"name": name, "linked": form.get("linked") == "on"}
        if form.get("datastore_id"):
            data["datastore_id"] = _int_field(form, "datastore_id")
        with _runtime(request).transaction() as session:
            return _task_started(request, clones.clone(session, user.username, vm_id, data), "Clone")
    except VcError as exc:
        return _refused(request, exc)


# --- alarms ---------------------------------------------------------------------------------
def _alarm_route(kind: str) -> None:
    @router.post(f"/{kind}/{{{kind}_id}}/alarms/{{state_id}}/{{operation}}", name=f"ui_{kind}_alarm")
    def alarm_action(request: Request, state_id: ObjectIdPath, operation: str, user: Annotated[UiUser, ui_requires("Alarm.Acknowledge", on=kind)], form: PostedForm) -> Response:
        from vcenter.services.monitoring import alarms

        verify_csrf(request, user, form)
        object_id = parse_object_id(request.path_params[f"{kind}_id"], f"{kind}_id")
        runtime = _runtime(request)
        try:
            with runtime.transaction() as session:
                # The privilege was checked on this object: the alarm must be this object's.
                if not any(a["id"] == state_id for a in alarms.triggered(session, kind, object_id)):
                    raise NotFound(f"no triggered alarm {state_id} on {kind} {object_id}", code="ALARM_STATE_NOT_FOUND")
                if operation == "acknowledge":
                    state = alarms.acknowledge(session, user.username, state_id)
                elif operation == "reset":
                    state = alarms.reset(session, user.username, state_id, runtime.settings)
                else:
                    raise NotFound(f"no alarm operation {operation!r}", code="UNKNOWN_ACTION")
        except VcError as exc:
            return _refused(request, exc)
        return HTMLResponse(_fragment(request, "_flash.html", ok=True, message=f"alarm {state['alarm_name']} on {state['object_name']}: {operation} done", task=None))


for _kind in ("datacenter", "cluster", "host", "vm", "datastore"):
    _alarm_route(_kind)


# --- console page and ticket -----------------------------------------------------------------
@router.get("/vm/{vm_id}/console", response_class=HTMLResponse)
def console_page(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("VirtualMachine.Console", on="vm")]) -> Response:
    with _runtime(request).transaction() as session:
        row = overview.get(session, "vm", vm_id)
        return _render(request, "console.html", obj=row, user=user)


@router.post("/vm/{vm_id}/console/ticket")
def console_ticket(request: Request, vm_id: ObjectIdPath, user: Annotated[UiUser, ui_requires("VirtualMachine.Console", on="vm")], form: PostedForm) -> Response:
    verify_csrf(request, user, form)
    runtime = _runtime(request)
    try:
        with runtime.transaction() as session:
            answer = console_service.issue_ticket(session, runtime.redis, runtime.settings, user.username, vm_id, user_id=user.id)
    except VcError as exc:
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    return JSONResponse({**answer, "url": console_service.websocket_path(answer["ticket"])})
