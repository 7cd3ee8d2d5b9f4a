"""The operator CLI on the lab, run as a user runs it (a subprocess per command, its session in
its own config directory): log in, list the inventory by paths, power a real guest on with a
progress bar, VMotion it to the other host (the command queued, then the task followed to its
end), a refused operation that exits 1 naming the error code, the guest's serial console
attached to a terminal (a line typed, the shell's answer, Ctrl-] to leave), snapshots taken, reverted and
deleted by name, a full clone, and the events that recorded it all. (tests/system/test_cli_operator.py covers every command against simulated hosts.)"""

from __future__ import annotations

import json

from tests.apihelpers import wait_for
from tests.clihelpers import cli_env, console_session, login, ok, vcenter
from tests.labhelpers import lab_stack, task_done


def test_operator_cli_drives_a_lab(tmp_path):
    with lab_stack(tmp_path, 2) as (stack, lab, ctx):
        ids = ctx["ids"]
        with stack.client() as api:
            path = lab.create_datastore("shared1", 256, [h.name for h in lab.hosts])
            ds = api.post("/api/v1/datastores", json={"name": "shared1", "datacenter_id": ctx["dc"]["id"], "kind": "lab-dir", "url": path, "host_ids": list(ids.values())}).json()
            vm_spec = {"name": "cli1", "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": 8}]}
            created = task_done(api, api.post("/api/v1/vms", json=vm_spec).json())
            assert created["state"] == "success", (created["error_code"], created["error_message"])
        env = cli_env(tmp_path / "config")
        login(env, stack.url, stack.admin)

        hosts = json.loads(ok(vcenter(env, "ls", "/dc1/host/cl1", "--json")))
        assert [(h["path"], h["object"]["connection_state"]) for h in hosts] == [("/dc1/host/cl1/host1", "connected"), ("/dc1/host/cl1/host2", "connected")]
        listing = ok(vcenter(env, "ls", "/dc1/vm"))
        assert "/dc1/vm/cli1" in listing and "poweredOff" in listing

        # Power on, followed with rich's bar (TTY_COMPATIBLE: drawn as on a terminal; this is a pipe).
        on = vcenter({**env, "TTY_COMPATIBLE": "1"}, "vm", "power", "/dc1/vm/cli1", "on")
        assert on.returncode == 0 and "vm.powerOn: success" in on.stdout, (on.stdout, on.stderr)
        assert "━" in on.stderr and "100%" in on.stderr, on.stderr
        vm = json.loads(ok(vcenter(env, "vm", "info", "cli1", "--json")))
        assert vm["power_state"] == "poweredOn" and vm["host_id"] == ids["host1"]
        with stack.client() as api:  # a live guest: its heartbeat counts before it moves
            wait_for(lambda: (api.get(f"/api/v1/vms/{vm['id']}").json().get("guest_info") or {}).get("seq", 0) > 1, 60, what="guest heartbeat")

        # The serial console attached to this terminal (a pty), as virsh console does: a line
        # typed reaches the guest's shell, its answer shows, Ctrl-] ends the session (exit 0).
        status, screen = console_session(env, "/dc1/vm/cli1", b"echo vc-$((6*7))\r", b"vc-42")
        assert status == 0 and b"vc-42" in screen, screen[-2000:]
        assert ok(vcenter(env, "vm", "console", "cli1", "--url")).strip() == f"{stack.url}/ui/vm/{vm['id']}/console"

        # VMotion: queued by one command, followed to its end by another.
        queued = json.loads(ok(vcenter(env, "vm", "migrate", "/dc1/vm/cli1", "--host", "/dc1/host/cl1/host2", "--no-wait", "--json")))
        assert queued["kind"] == "vm.migrate" and queued["state"] in ("queued", "running")
        followed = vcenter({**env, "TTY_COMPATIBLE": "1"}, "tasks", str(queued["id"]), "--follow")
        assert followed.returncode == 0 and f"task {queued['id']} vm.migrate: success" in followed.stdout, (followed.stdout, followed.stderr)
        assert "━" in followed.stderr
        moved = json.loads(ok(vcenter(env, "vm", "info", str(vm["id"]), "--json")))
        assert moved["host_id"] == ids["host2"] and moved["power_state"] == "poweredOn" and moved["path"] == "/dc1/vm/cli1"

        # Refused: a host that runs a VM is not removed; exit status 1 and the error code.
        refused = vcenter(env, "host", "remove", "/dc1/host/cl1/host2")
        assert refused.returncode == 1 and "error: HOST_HAS_VMS:" in refused.stderr, (refused.stdout, refused.stderr)

        # Snapshots of the running guest (with its memory), by name; then a full clone of it.
        taken = json.loads(ok(vcenter(env, "vm", "snapshot", "create", "/dc1/vm/cli1", "before", "--json")))
        assert taken["state"] == "success", taken
        assert "before" in ok(vcenter(env, "vm", "snapshot", "list", "cli1"))
        assert json.loads(ok(vcenter(env, "vm", "snapshot", "revert", "cli1", "before", "--json")))["state"] == "success"
        assert json.loads(ok(vcenter(env, "vm", "snapshot", "delete", "cli1", "before", "--json")))["state"] == "success"
        assert json.loads(ok(vcenter(env, "vm", "snapshot", "list", "cli1", "--json")))["count"] == 0
        cloned = json.loads(ok(vcenter(env, "vm", "clone", "cli1", "cli1-copy", "--json", timeout=300)))
        assert cloned["state"] == "success" and cloned["result"]["clone_vm_id"], cloned
        assert json.loads(ok(vcenter(env, "vm", "info", "/dc1/vm/cli1-copy", "--json")))["id"] == cloned["result"]["clone_vm_id"]

        events = json.loads(ok(vcenter(env, "events", "--json", "--limit", "100")))
        assert any(e["task_id"] == queued["id"] for e in events)
        tasks = json.loads(ok(vcenter(env, "tasks", "--json", "--state", "success")))
        assert queued["id"] in [t["id"] for t in tasks]
        ok(vcenter(env, "vm", "power", "cli1", "off"))
