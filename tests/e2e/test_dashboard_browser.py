"""The dashboard in a real browser (Playwright driving Debian's headless Chromium) on the lab:
real hosts (libvirtd + agent), TCG guests, the API server, worker and beat as processes.

One lab for the module, one test walking what an operator does: log in; walk the tree to a VM;
power it on and watch its task end in the live panel without a reload; open its serial console
and have the guest's shell answer; open a host chart with samples the agents reported; DRS on
a cluster made unbalanced, its recommendation applied from the page; a read-only user sees no
action button and is refused (403) when posting one anyway; a host's agent killed, its "Host
not responding" alarm appears on its tree node and is acknowledged from its page. No page (the
console and /docs included) reports a Content-Security-Policy violation. Screenshots of the main pages go
to docs/screenshots/ (referenced from README.md).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, steady_burning, task_done
from vcenter.lab.hosts import Capacity


CHROMIUM = "/usr/bin/chromium"
# The README's screenshots: rewritten only when asked (VCENTER_E2E_SCREENSHOTS=1), so that a
# test run leaves the work tree clean; otherwise they go to the test's temporary directory.
DOC_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _browser(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


# Every Content-Security-Policy violation of any page of a context, as the browser reports it
# to the page (the event) and to the console: the dashboard must run under the server's CSP.
_REPORT_CSP = """document.addEventListener('securitypolicyviolation', (e) =>
    console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI + ' at ' + e.sourceFile + ':' + e.lineNumber));"""


def _watch_csp(context, found: list[str]) -> None:
    context.add_init_script(_REPORT_CSP)
    context.on("console", lambda m: found.append(m.text) if "Content Security Policy" in m.text or "CSP violation" in m.text else None)


def _login(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/ui")
    page.wait_for_url(re.compile(r".*/ui/login.*"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#live-state[data-live='1']", timeout=15000)


def _shot(page, name: str, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where / f"{name}.png"), full_page=False)


def _make_viewer(api) -> None:
    """A read-only user: the built-in Read-only role on the root where roles exist."""
    user = api.post("/api/v1/users", json={"username": "viewer", "password": "viewer-pass-phrase", "is_admin": False})
    assert user.status_code == 201, user.text
    roles = api.get("/api/v1/roles")
    if roles.status_code == 200:
        read_only = next(r for r in roles.json() if r["name"] == "Read-only")
        r = api.post("/api/v1/permissions", json={"principal_type": "user", "principal_id": user.json()["id"], "role_id": read_only["id"], "object_type": "root", "object_id": 0, "propagate": True})
        assert r.status_code == 201, r.text


@pytest.mark.timeout(600)  # a lab, three TCG guests and a browser: ~2.5 min alone, more on a busy machine
def test_operator_walks_the_dashboard(tmp_path):
    shots = DOC_SHOTS if os.environ.get("VCENTER_E2E_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    from playwright.sync_api import sync_playwright  # pip install -e .[test]

    # Hosts declare one CPU: two guests burning on one of them make an imbalance DRS acts on even
    # when the machine is busy (a guest measured at ~500 MHz is then half a host).
    with lab_stack(tmp_path, 2, Capacity(cpus=1, memory_mib=2048), ui_poll_period=0.3, metrics_sample_period=2, drs_period=3600, alarm_period=1) as (stack, lab, ctx):
        ids, cl = ctx["ids"], ctx["cl"]
        with stack.client() as api:
            vms = {}
            for name in ("web1", "burn1", "burn2"):
                task = api.post("/api/v1/vms", json={"name": name, "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}}).json()
                vms[name] = task_done(api, task)["object_id"]
            # The DRS guests boot while the browser does the rest (TCG boots take a while).
            for name in ("burn1", "burn2"):
                assert task_done(api, api.post(f"/api/v1/vms/{vms[name]}/power/on").json())["state"] == "success"
            _make_viewer(api)
        base = stack.url

        with sync_playwright() as p:
            browser = _browser(p)
            csp_violations: list[str] = []
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            _watch_csp(context, csp_violations)
            page = context.new_page()
            page.goto(base + "/ui/login")
            _shot(page, "login", shots)
            _login(page, base, *stack.admin)

            # Walk the tree: datacenter -> cluster -> host1 -> web1 (children load on expand).
            page.click("#tree details[data-kind=datacenter] > summary")
            page.click(f"#tree details[data-kind=cluster][data-id='{cl['id']}'] > summary")
            page.click(f"#tree details[data-kind=host][data-id='{ids['host1']}'] > summary")
            page.wait_for_selector(f"#tree a[href='/ui/vm/{vms['web1']}']")
            _shot(page, "inventory-tree", shots)
            page.click(f"#tree a[href='/ui/vm/{vms['web1']}']")
            page.wait_for_selector("h1.obj-title[data-kind=vm]")
            page.wait_for_selector("#live-state[data-live='1']")

            # Power on; the task ends in the live panel while the page stays (no reload).
            page.evaluate("window.__stayed = true")
            page.click("button[data-action=power-on]")
            flash = page.wait_for_selector("#flash .flash.ok").inner_text()
            task_id = int(re.search(r"task #(\d+)", flash).group(1))
            page.wait_for_selector(f"#recent-tasks tr#task-{task_id}[data-state=success]", timeout=90000)
            # The VM's own state and actions follow: poweredOn, with the console offered.
            page.wait_for_selector("#power-state.poweredOn")
            page.wait_for_selector("a[data-action=console]")
            assert page.evaluate("window.__stayed === true"), "the page reloaded"
            _shot(page, "vm-power-on-task", shots)
            # The migration pre-check loads with the selected host (htmx, no eval under the CSP).
            page.reload()
            page.wait_for_selector("#migrate-checks table.checks")

            # The console: type into the guest's shell and read its answer.
            with stack.client() as api:
                wait_for(lambda: (api.get(f"/api/v1/vms/{vms['web1']}").json()["guest_info"] or {}).get("seq"), 120, what="web1 booted")
            with page.expect_popup() as popup:
                page.click("a[data-action=console]")
            console = popup.value
            console.wait_for_selector("#console-state[data-state=open]", timeout=20000)
            screen = "(() => { const b = window.vcTerm.buffer.active; let s = ''; for (let i = 0; i < b.length; i++) s += b.getLine(i).translateToString(true) + '\\n'; return s; })()"
            console.keyboard.type("echo vc-$((6*7))\n")
            wait_for(lambda: "vc-42" in console.evaluate(screen), 20, what="the guest's answer on the console")
            _shot(console, "vm-console", shots)
            console.close()

            # A host chart with samples reported by its agent.
            page.goto(f"{base}/ui/host/{ids['host1']}?tab=monitor")

            def chart_samples() -> int:
                page.reload()
                return int(page.wait_for_selector("#chart[data-samples]").get_attribute("data-samples"))

            wait_for(lambda: chart_samples() >= 2, 60, interval=2, what="chart samples")
            _shot(page, "host-chart", shots)

            # DRS: two guests burning CPU on host1, host2 empty; run DRS on the cluster page and
            # apply its recommendation.
            with stack.client() as api:
                for name in ("burn1", "burn2"):
                    wait_for(lambda: (api.get(f"/api/v1/vms/{vms[name]}").json()["guest_info"] or {}).get("seq"), 120, what=f"{name} heartbeat")
                    assert task_done(api, api.post(f"/api/v1/vms/{vms[name]}/guest/command", json={"command": "burn", "argument": "100"}).json())["state"] == "success"
                # DRS does not chase a gain within the demand's noise: wait until the burning
                # demand is measured and steady (its boot and the step to burning have left
                # the window the noise is measured over).
                wait_for(lambda: all(steady_burning(api.get(f"/api/v1/vms/{vms[n]}").json()) for n in ("burn1", "burn2")), 120, what="burning demand measured and steady")
                # Manual automation: DRS recommends, the operator applies from the page.
                current = api.get(f"/api/v1/clusters/{cl['id']}").json()
                settings = {**current["settings"], "drs": {"enabled": False, "automation": "manual", "threshold": 5}}
                assert api.patch(f"/api/v1/clusters/{cl['id']}", json={"settings": settings, "version": current["version"]}).status_code == 200
            page.goto(f"{base}/ui/cluster/{cl['id']}?tab=drs")
            page.click("button[data-action=drs-run-inline]")
            # A tight threshold may also recommend evening out the idle guests: apply a burning one's.
            apply = page.wait_for_selector("#drs tr[data-state=pending]:has-text('burn') button[data-action=drs-apply]", timeout=15000)
            rec_row = page.query_selector("#drs tr[data-state=pending]:has-text('burn')")
            assert "host1 → host2" in rec_row.inner_text(), rec_row.inner_text()
            assert "→" in rec_row.query_selector("td:nth-child(6)").inner_text()  # imbalance before -> after, as numbers
            _shot(page, "cluster-drs", shots)
            apply.click()
            applied = page.wait_for_selector("#drs tr[data-state=applied]")
            migrate_task = int(re.search(r"task #(\d+)", applied.inner_text()).group(1))
            page.wait_for_selector(f"#recent-tasks tr#task-{migrate_task}[data-state=success]", timeout=120000)
            with stack.client() as api:
                for name in ("burn1", "burn2"):
                    api.post(f"/api/v1/vms/{vms[name]}/guest/command", json={"command": "burn", "argument": "0"})
                assert {api.get(f"/api/v1/vms/{vms[n]}").json()["host_id"] for n in ("burn1", "burn2")} == {ids["host1"], ids["host2"]}

            # A read-only user: no action buttons, and a POST anyway is refused.
            viewer_context = browser.new_context(viewport={"width": 1400, "height": 900})
            _watch_csp(viewer_context, csp_violations)
            viewer = viewer_context.new_page()
            _login(viewer, base, "viewer", "viewer-pass-phrase")
            for path in (f"/ui/vm/{vms['web1']}", f"/ui/host/{ids['host1']}", f"/ui/cluster/{cl['id']}?tab=drs"):
                viewer.goto(base + path)
                viewer.wait_for_selector("h1.obj-title")
                assert viewer.query_selector_all("[data-action]") == [], path
            _shot(viewer, "read-only-vm", shots)
            status = viewer.evaluate(
                """async (vm) => {
                const r = await fetch('/ui/vm/' + vm + '/power/off', {method: 'POST', headers: {'X-CSRF-Token': document.body.dataset.csrf}});
                return [r.status, (await r.json()).code];
            }""",
                vms["web1"],
            )
            assert status == [403, "FORBIDDEN"]
            with stack.client() as api:
                assert api.get(f"/api/v1/vms/{vms['web1']}").json()["power_state"] == "poweredOn"

            # host2's agent dies: the "Host not responding" alarm shows on its tree node and page,
            # and the operator acknowledges it there.
            next(h for h in lab.hosts if h.name == "host2").stop_process("agent", signal.SIGKILL)

            def alarm_in_tree() -> bool:
                page.goto(f"{base}/ui/cluster/{cl['id']}")
                page.click("#tree details[data-kind=datacenter] > summary")
                page.click(f"#tree details[data-kind=cluster][data-id='{cl['id']}'] > summary")
                page.wait_for_selector(f"#tree details[data-kind=host][data-id='{ids['host2']}']")
                return page.query_selector(f"#tree details[data-kind=host][data-id='{ids['host2']}'] > summary .alarm.critical") is not None

            wait_for(alarm_in_tree, 60, interval=2, what="the host-not-responding alarm in the tree")
            _shot(page, "alarm-in-tree", shots)
            page.goto(f"{base}/ui/host/{ids['host2']}")
            row = page.wait_for_selector("#alarms tr.alarm-row.critical")
            assert "Host not responding" in row.inner_text()
            row.query_selector("button[data-action=alarm-ack]").click()
            page.wait_for_selector("#flash .flash.ok")
            page.reload()
            assert "acknowledged by admin" in page.wait_for_selector("#alarms tr.alarm-row").inner_text()
            # The API docs run under the same policy (their start-up script is a file of ours).
            page.goto(base + "/docs")
            page.wait_for_selector("#swagger-ui .swagger-ui")
            assert csp_violations == [], csp_violations
            browser.close()
