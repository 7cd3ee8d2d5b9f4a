"""The dashboard in-process (no lab, no browser): login with CSRF, the tree and search, object
pages, actions refused without CSRF or without the privilege (403, recorded), one-time
console tickets in Redis. The browser tests on the lab are in tests/e2e/."""

from __future__ import annotations

import re

import pytest
import redis
from sqlalchemy import select
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.apihelpers import app_for, login, make_admin, register_host
from tests.conftest import REDIS_URL
from vcenter.db.session import session_scope
from vcenter.services.access import auth
from vcenter.services.compute import console as console_service


def _admin_actor(session):
    """The administrator as the actor of a permission change (delegation checks need one)."""
    from sqlalchemy import select

    from vcenter.db.models import User
    from vcenter.services.access.delegation import Actor

    return Actor(session, session.scalar(select(User).where(User.username == "admin")))


def make_viewer(settings, username: str = "viewer", password: str = "viewer-pass-phrase") -> None:
    """A user who may look at everything and change nothing (the built-in Read-only role on
    the root, where the permission model has roles; without one, non-administrators only view)."""
    with session_scope(settings.database_url) as session:
        user = auth.create_user(session, username, password, is_admin=False)
        try:
            from vcenter.services.access import authz, permissions
        except ImportError:
            return
        roles = authz.ensure_builtin_roles(session)
        permissions.set_permission(
            session, _admin_actor(session), {"principal_type": "user", "principal_id": user.id, "object_type": "root", "object_id": 0, "role_id": roles["Read-only"].id, "propagate": True}
        )


def ui_login(client: TestClient, username: str, password: str) -> str:
    """Log in through the form; answer the CSRF token of the session (from the page)."""
    form = client.get("/ui/login")
    assert form.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = client.post("/ui/login", data={"username": username, "password": password, "csrf": csrf, "next": "/ui"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    home = client.get("/ui")
    assert home.status_code == 200
    return re.search(r'data-csrf="([^"]+)"', home.text).group(1)


@pytest.fixture
def world(settings):
    make_admin(settings)
    make_viewer(settings)
    app = app_for(settings)
    with TestClient(app) as api:
        h = login(api)
        dc = api.post("/api/v1/datacenters", json={"name": "dc-east"}, headers=h).json()
        cl = api.post("/api/v1/clusters", json={"name": "gold", "datacenter_id": dc["id"]}, headers=h).json()
        host, agent = register_host(api, h, dc["id"], "esx-01", cluster_id=cl["id"])
        api.post(
            f"/api/v1/agent/hosts/{host['id']}/state",
            headers=agent,
            json={"facts": {"hostname": "esx-01", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096, "cpu_model": "X", "cpu_features": []}, "domains": [], "bridges": []},
        )
        ds = api.post("/api/v1/datastores", json={"name": "ds-fast", "datacenter_id": dc["id"], "kind": "dir", "url": "/srv/ds1", "host_ids": [host["id"]]}, headers=h).json()
        task = api.post("/api/v1/vms", json={"name": "web-01", "host_id": host["id"], "memory_mib": 96, "disks": [{"datastore_id": ds["id"], "capacity_mib": 16}]}, headers=h)
        assert task.status_code == 202, task.text
        yield {"app": app, "dc": dc, "cl": cl, "host": host, "ds": ds, "vm_id": task.json()["object_id"], "settings": settings}


def test_login_tree_search_pages_and_permissions(world):
    with TestClient(world["app"]) as ui:
        # Not logged in: pages send to the login form, actions are refused.
        r = ui.get("/ui", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        # A login post without the form's token is refused.
        assert ui.post("/ui/login", data={"username": "admin", "password": "secret-pass-phrase", "csrf": "forged"}).status_code == 403
        # Wrong password: the form again, with the reason.
        form = ui.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        bad = ui.post("/ui/login", data={"username": "admin", "password": "nope", "csrf": csrf})
        assert bad.status_code == 401 and "wrong user name or password" in bad.text

        token = ui_login(ui, "admin", "secret-pass-phrase")
        home = ui.get("/ui").text
        tree = home[home.index('<nav class="tree"') : home.index("</nav>", home.index('<nav class="tree"'))]
        assert "dc-east" in tree and "esx-01" not in tree  # the tree is lazy: only datacenters at first
        dc_children = ui.get(f"/ui/tree/datacenter/{world['dc']['id']}").text
        assert "gold" in dc_children and "ds-fast" in dc_children
        assert "esx-01" in ui.get(f"/ui/tree/cluster/{world['cl']['id']}").text
        assert "web-01" in ui.get(f"/ui/tree/host/{world['host']['id']}").text
        found = ui.get("/ui/search", params={"q": "WEB"}).text
        assert f'href="/ui/vm/{world["vm_id"]}"' in found
        assert "Nothing named like" in ui.get("/ui/search", params={"q": "zzz"}).text

        for kind, object_id in (("datacenter", world["dc"]["id"]), ("cluster", world["cl"]["id"]), ("host", world["host"]["id"]), ("vm", world["vm_id"]), ("datastore", world["ds"]["id"])):
            for tab in ("summary", "monitor", "configure"):
                page = ui.get(f"/ui/{kind}/{object_id}", params={"tab": tab})
                assert page.status_code == 200, (kind, tab, page.text[:300])
        ha_tab = ui.get(f"/ui/cluster/{world['cl']['id']}", params={"tab": "ha"})
        assert ha_tab.status_code == 200 and "Failover capacity" in ha_tab.text and "esx-01" in ha_tab.text
        vm_page = ui.get(f"/ui/vm/{world['vm_id']}").text
        assert 'data-action="snapshot-create"' in vm_page and 'data-action="clone"' in vm_page
        assert ui.get("/ui/vm/999999").status_code == 404
        assert ui.get("/ui/vm/1", params={"tab": "nonsense"}).status_code == 422
        host_page = ui.get(f"/ui/host/{world['host']['id']}").text
        assert 'data-action="maintenance-enter"' in host_page and 'data-action="remove"' in host_page
        assert 'data-action="drs-run-inline"' in ui.get(f"/ui/cluster/{world['cl']['id']}", params={"tab": "drs"}).text

        # An action without the CSRF token is refused; with it, it reaches the service (here
        # the VM is still being created: its claim makes the power-on OBJECT_BUSY).
        vm = world["vm_id"]
        refused = ui.post(f"/ui/vm/{vm}/power/on")
        assert refused.status_code == 403 and refused.json()["code"] == "CSRF_FAILED"
        busy = ui.post(f"/ui/vm/{vm}/power/on", headers={"X-CSRF-Token": token})
        assert busy.status_code == 409 and "OBJECT_BUSY" in busy.text
        # What-if from the DRS tab: a plan, changing nothing; nonsense is a 4xx, never a 500.
        whatif = ui.post(f"/ui/cluster/{world['cl']['id']}/drs/whatif", data={"kind": "host-fails", "host_id": str(world["host"]["id"])}, headers={"X-CSRF-Token": token})
        assert whatif.status_code == 200 and "imbalance now" in whatif.text
        for bad in ({"kind": "rule-added"}, {"kind": "host-fails", "host_id": "x"}, {"kind": "vm-demand", "vm_id": str(vm), "cpu_mhz": "lots"}):
            assert ui.post(f"/ui/cluster/{world['cl']['id']}/drs/whatif", data=bad, headers={"X-CSRF-Token": token}).status_code == 422, bad
        assert ui.post(f"/ui/host/{world['host']['id']}/maintenance/sideways", headers={"X-CSRF-Token": token}).status_code == 404
        assert ui.post(f"/ui/vm/{vm}/relocate", data={"disk_0": "nope"}, headers={"X-CSRF-Token": token}).status_code == 422
        check = ui.get(f"/ui/vm/{vm}/migrate/check", params={"host": world["host"]["id"]})
        assert check.status_code == 200 and "VM_NOT_RUNNING" in check.text
        # No console for a VM that is not running.
        ticket = ui.post(f"/ui/vm/{vm}/console/ticket", headers={"X-CSRF-Token": token})
        assert ticket.status_code == 409 and ticket.json()["code"] == "VM_NOT_RUNNING"

        # Logging out ends the session for the dashboard.
        assert ui.post("/ui/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
        assert ui.get("/ui", follow_redirects=False).status_code == 303


def test_read_only_user_sees_no_actions_and_is_refused(world):
    with TestClient(world["app"]) as ui:
        token = ui_login(ui, "viewer", "viewer-pass-phrase")
        for kind, object_id in (("vm", world["vm_id"]), ("host", world["host"]["id"]), ("cluster", world["cl"]["id"])):
            page = ui.get(f"/ui/{kind}/{object_id}")
            assert page.status_code == 200
            assert 'data-action="' not in page.text, kind
        drs_tab = ui.get(f"/ui/cluster/{world['cl']['id']}", params={"tab": "drs"}).text
        assert 'data-action="' not in drs_tab
        # Posting anyway, with a valid CSRF token: 403 from the same privilege check as the API.
        for path in (
            f"/ui/vm/{world['vm_id']}/power/on",
            f"/ui/host/{world['host']['id']}/maintenance/enter",
            f"/ui/vm/{world['vm_id']}/snapshots",
            f"/ui/vm/{world['vm_id']}/clone",
            f"/ui/host/{world['host']['id']}/remove",
            f"/ui/cluster/{world['cl']['id']}/drs/run",
            f"/ui/vm/{world['vm_id']}/migrate",
            f"/ui/vm/{world['vm_id']}/console/ticket",
        ):
            r = ui.post(path, headers={"X-CSRF-Token": token})
            assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (path, r.text)
        assert ui.get(f"/ui/vm/{world['vm_id']}/console").status_code == 403
    with TestClient(world["app"]) as api:
        events = api.get("/api/v1/events", params={"kind": "authz.refused", "username": "viewer"}, headers=login(api)).json()
        assert events["total"] >= 8


def test_console_ticket_is_single_use_and_expires(world):
    r = redis.Redis.from_url(REDIS_URL)
    settings = world["settings"].model_copy(update={"console_ticket_ttl": 0.3})
    with session_scope(settings.database_url) as session:
        from vcenter.db.models import Host, VirtualMachine

        vm = session.get(VirtualMachine, world["vm_id"])
        vm.power_state = "poweredOn"  # as an agent report would say
        session.get(Host, world["host"]["id"]).address = "10.0.0.5"
        session.flush()
        from vcenter.db.models import User

        admin_id = session.scalar(select(User.id).where(User.username == "admin"))
        first = console_service.issue_ticket(session, r, settings, "admin", world["vm_id"], user_id=admin_id)
        second = console_service.issue_ticket(session, r, settings, "admin", world["vm_id"], user_id=admin_id)
    grant = console_service.redeem(r, first["ticket"])
    assert grant["vm_id"] == world["vm_id"] and grant["address"] == "10.0.0.5" and grant["thumbprint"].startswith("SHA256:")
    assert console_service.redeem(r, first["ticket"]) is None  # used
    import time

    time.sleep(0.5)
    assert console_service.redeem(r, second["ticket"]) is None  # expired
    assert console_service.redeem(r, "") is None

    # The websocket refuses a used ticket before anything reaches a host.
    with TestClient(world["app"]) as ui:
        ui_login(ui, "admin", "secret-pass-phrase")
        with ui.websocket_connect(f"/ui/console/ws?ticket={first['ticket']}") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == 4403
        # Another site's page cannot spend a ticket.
        with session_scope(settings.database_url) as session:
            third = console_service.issue_ticket(session, r, world["settings"], "admin", world["vm_id"], user_id=admin_id)
        with ui.websocket_connect(f"/ui/console/ws?ticket={third['ticket']}", headers={"origin": "https://evil.example"}) as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == 4403 and console_service.redeem(r, third["ticket"]) is not None
        # A ticket is the user's by id: one issued to another user of the same name (deleted,
        # then its name taken again) is refused.
        with session_scope(settings.database_url) as session:
            fourth = console_service.issue_ticket(session, r, world["settings"], "admin", world["vm_id"], user_id=admin_id + 1000)
        with ui.websocket_connect(f"/ui/console/ws?ticket={fourth['ticket']}") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == 4401


def test_an_api_client_opens_the_console_with_its_bearer_credential(world):
    """`vcenter vm console`'s way in: a ticket from the API, redeemed on the same websocket with
    the bearer credential that asked for it (no cookie); refused to a user without
    VirtualMachine.Console, and for a VM that is not running."""
    with TestClient(world["app"]) as api:
        auth = login(api)
        stopped = api.post(f"/api/v1/vms/{world['vm_id']}/console/ticket", headers=auth)
        assert stopped.status_code == 409 and stopped.json()["code"] == "VM_NOT_RUNNING"
        with session_scope(world["settings"].database_url) as session:
            from vcenter.db.models import Host, VirtualMachine

            session.get(VirtualMachine, world["vm_id"]).power_state = "poweredOn"
            session.get(Host, world["host"]["id"]).address = "127.0.0.1"  # nothing serves the agent's console port here
        assert api.post(f"/api/v1/vms/{world['vm_id']}/console/ticket", headers=login(api, "viewer", "viewer-pass-phrase")).status_code == 403
        answer = api.post(f"/api/v1/vms/{world['vm_id']}/console/ticket", headers=auth)
        assert answer.status_code == 200, answer.text
        ticket = answer.json()
        assert ticket["url"] == f"/ui/console/ws?ticket={ticket['ticket']}" and ticket["expires_in"] > 0
        # Admitted (the bearer is the ticket's user): the server then dials the host, which
        # does not answer here (4502), rather than refusing the caller (4401).
        with api.websocket_connect(ticket["url"], headers=auth) as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == 4502
        # Without a credential the next ticket is refused for want of its user.
        again = api.post(f"/api/v1/vms/{world['vm_id']}/console/ticket", headers=auth).json()
        with api.websocket_connect(again["url"]) as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == 4401


def test_live_stream_sends_tasks_and_events(world):
    from vcenter.dashboard.live import _poll

    with TestClient(world["app"]) as ui:
        ui_login(ui, "admin", "secret-pass-phrase")
        user_token = ui.cookies.get("vc_session")
    from vcenter.dashboard.web import UiUser

    runtime = world["app"].state.runtime
    fp, tasks_html, event_ids, events_html = _poll(runtime, UiUser("admin", True, 1, user_token), 0)
    assert "vm.create" in tasks_html and event_ids and "web-01" in events_html
    # Nothing new after the last event: no event rows, same fingerprint.
    again = _poll(runtime, UiUser("admin", True, 1, user_token), max(event_ids))
    assert again[0] == fp and again[2] == []
    assert _poll(runtime, UiUser("admin", True, 1, "not-a-session"), 0) is None


def test_triggered_alarms_show_in_the_tree_and_are_acknowledged(world):
    from vcenter.db.models import Host
    from vcenter.services.monitoring import alarms

    settings = world["settings"]
    with session_scope(settings.database_url) as session:
        session.get(Host, world["host"]["id"]).connection_state = "notResponding"  # as the host monitor marks it
        session.flush()
        alarms.evaluate(session, settings)
    with TestClient(world["app"]) as ui:
        token = ui_login(ui, "admin", "secret-pass-phrase")
        node = ui.get(f"/ui/tree/cluster/{world['cl']['id']}").text
        assert re.search(r'esx-01</a>.*?class="alarm critical"', node, re.S), node
        page = ui.get(f"/ui/host/{world['host']['id']}").text
        state_id = int(re.search(r'data-alarm-state="(\d+)"', page).group(1))
        assert "Host not responding" in page and 'data-action="alarm-ack"' in page
        # The cluster page lists it too (alarms below the object), without buttons there.
        cluster_page = ui.get(f"/ui/cluster/{world['cl']['id']}").text
        assert "Host not responding" in cluster_page and 'data-action="alarm-ack"' not in cluster_page
        # An alarm of another object cannot be acknowledged through this one.
        other = ui.post(f"/ui/cluster/{world['cl']['id']}/alarms/{state_id}/acknowledge", headers={"X-CSRF-Token": token})
        assert other.status_code == 404
        done = ui.post(f"/ui/host/{world['host']['id']}/alarms/{state_id}/acknowledge", headers={"X-CSRF-Token": token})
        assert done.status_code == 200 and "acknowledge done" in done.text
        assert "acknowledged by admin" in ui.get(f"/ui/host/{world['host']['id']}").text
    with TestClient(world["app"]) as ui:
        token = ui_login(ui, "viewer", "viewer-pass-phrase")
        page = ui.get(f"/ui/host/{world['host']['id']}").text
        assert "Host not responding" in page and 'data-action="' not in page
        assert ui.post(f"/ui/host/{world['host']['id']}/alarms/{state_id}/reset", headers={"X-CSRF-Token": token}).status_code == 403


def test_tree_and_search_show_only_what_the_user_may_see(world):
    settings = world["settings"]
    with TestClient(world["app"]) as api:
        h = login(api)
        west = api.post("/api/v1/datacenters", json={"name": "dc-west"}, headers=h).json()
        silver = api.post("/api/v1/clusters", json={"name": "silver", "datacenter_id": west["id"]}, headers=h).json()
    with session_scope(settings.database_url) as session:
        user = auth.create_user(session, "eastonly", "eastonly-pass", is_admin=False)
        try:
            from vcenter.services.access import authz, permissions
        except ImportError:  # the interim model: every user views everything
            permissions = None
        if permissions is not None:
            roles = authz.ensure_builtin_roles(session)
            permissions.set_permission(
                session,
                _admin_actor(session),
                {"principal_type": "user", "principal_id": user.id, "object_type": "datacenter", "object_id": world["dc"]["id"], "role_id": roles["Read-only"].id, "propagate": True},
            )
    with TestClient(world["app"]) as ui:
        ui_login(ui, "eastonly", "eastonly-pass")
        home = ui.get("/ui").text
        tree = home[home.index('<nav class="tree"') : home.index("</nav>", home.index('<nav class="tree"'))]
        found = ui.get("/ui/search", params={"q": "silver"}).text
        assert "dc-east" in tree
        if permissions is None:
            assert "dc-west" in tree and "silver" in found
            return
        assert "dc-west" not in tree
        assert f"/ui/cluster/{silver['id']}" not in found and "Nothing named like" in found
        assert ui.get(f"/ui/cluster/{silver['id']}").status_code == 403
        assert ui.get(f"/ui/tree/datacenter/{west['id']}").status_code == 403
        assert "gold" in ui.get(f"/ui/tree/datacenter/{world['dc']['id']}").text
