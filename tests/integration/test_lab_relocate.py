"""Storage VMotion to another host on a real lab: a running guest whose disk is on a datastore
local to its host moves to another host and that host's local datastore, live (libvirt
NON_SHARED_DISK with a destination XML naming the new path), its heartbeat counting on."""
from __future__ import annotations

import subprocess

import pytest

from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done

pytestmark = pytest.mark.integration


def _running_on(lab, name):
    hosts = []
    for host in lab.hosts:
        out = subprocess.run(["virsh", "-c", f"qemu+tcp://{host.address}/system", "list", "--name"], capture_output=True, text=True, timeout=20).stdout.split()
        if name in out:
            hosts.append(host.name)
    return hosts


def test_running_guest_moves_to_another_host_with_its_disk(tmp_path):
    with lab_stack(tmp_path, 2) as (stack, lab, ctx):
        ids, dc = ctx["ids"], ctx["dc"]
        with stack.client() as api:
            stores = {}
            for name, host in (("local1", "host1"), ("local2", "host2")):
                path = lab.create_datastore(name, 64, [host])
                stores[name] = api.post("/api/v1/datastores", json={"name": name, "datacenter_id": dc["id"], "kind": "dir", "url": path, "host_ids": [ids[host]]}).json()
            task = api.post("/api/v1/vms", json={"name": "rel1", "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"},
                                                 "disks": [{"datastore_id": stores["local1"]["id"], "capacity_mib": 8}]}).json()
            created = task_done(api, task)
            assert created["state"] == "success", (created["error_code"], created["error_message"])
            vm_id = created["object_id"]
            on = task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json())
            assert on["state"] == "success", (on["error_code"], on["error_message"])
            before = wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm_id}").json()).get("guest_info", {}) and (v["guest_info"] or {}).get("seq", 0) > 1 and v, 60, what="heartbeat before")
            seq = before["guest_info"]["seq"]
            disk_file = before["disks"][0]["file"]
            old_file = f"{stores['local1']['url']}/{disk_file}"
            new_file = f"{stores['local2']['url']}/{disk_file}"
            assert lab.host("host1").run(["test", "-e", old_file], check=False).returncode == 0

            r = api.post(f"/api/v1/vms/{vm_id}/relocate", json={"host_id": ids["host2"], "disks": [{"index": 0, "datastore_id": stores["local2"]["id"]}]})
            assert r.status_code == 202, r.text
            done = task_done(api, r.json(), 180)
            assert done["state"] == "success", (done["error_code"], done["error_message"])
            print(f"\nrelocation to another host: {done['result']}")
            assert done["result"]["removed"] == [old_file] and done["result"]["moved"] == [new_file]
            assert done["result"]["stats"]["phase"] == "completed"

            after = api.get(f"/api/v1/vms/{vm_id}").json()
            assert after["host_id"] == ids["host2"] and after["disks"][0]["datastore_id"] == stores["local2"]["id"]
            assert _running_on(lab, "rel1") == ["host2"]
            # Never restarted: the heartbeat counter goes on from where it was.
            later = wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm_id}").json())["guest_info"]["seq"] > seq + 2 and v, 30, what="heartbeat after relocation")
            assert later["guest_info"]["uptime"] > before["guest_info"]["uptime"]
            assert lab.host("host2").run(["test", "-s", new_file], check=False).returncode == 0
            assert lab.host("host1").run(["test", "-e", old_file], check=False).returncode != 0
