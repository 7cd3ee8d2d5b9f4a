"""Storage VMotion to another host on a real lab: a running guest whose disk is on a datastore
local to its host moves to another host and that host's local datastore, live (libvirt
NON_SHARED_DISK with a destination XML naming the new path), its heartbeat counting on. Then,
powered off, it moves back to the first host: refused while no host mounts both datastores,
copied by the source host onto a datastore both mount, defined on the target, undefined on
the source, its disk pattern intact, and it powers on there."""

from __future__ import annotations

import subprocess
import sys


from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done


def _running_on(lab, name):
    hosts = []
    for host in lab.hosts:
        out = subprocess.run(["virsh", "-c", f"qemu+tcp://{host.address}/system", "list", "--name"], capture_output=True, text=True, timeout=20).stdout.split()
        if name in out:
            hosts.append(host.name)
    return hosts


def _defined_on(lab, name):
    hosts = []
    for host in lab.hosts:
        out = subprocess.run(["virsh", "-c", f"qemu+tcp://{host.address}/system", "list", "--all", "--name"], capture_output=True, text=True, timeout=20).stdout.split()
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
            task = api.post(
                "/api/v1/vms",
                json={"name": "rel1", "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": stores["local1"]["id"], "capacity_mib": 8}]},
            ).json()
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

            # Powered off, back to host1: local2 is only on host2 and local1 only on host1, so no
            # host can copy the file; with a datastore both mount, host2 (the source) copies it.
            wrote = task_done(api, api.post(f"/api/v1/vms/{vm_id}/guest/command", json={"command": "write-pattern", "argument": "2", "timeout": 60}).json(), 90)
            assert wrote["state"] == "success", (wrote["error_code"], wrote["error_message"])
            off = task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/off").json())
            assert off["state"] == "success", (off["error_code"], off["error_message"])
            r = api.post(f"/api/v1/vms/{vm_id}/relocate", json={"host_id": ids["host1"], "disks": [{"index": 0, "datastore_id": stores["local1"]["id"]}]})
            assert r.status_code == 409 and r.json()["code"] == "RELOCATE_NO_HOST_MOUNTS_BOTH", r.text
            path = lab.create_datastore("shared12", 64, ["host1", "host2"])
            shared = api.post("/api/v1/datastores", json={"name": "shared12", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": [ids["host1"], ids["host2"]]}).json()
            r = api.post(f"/api/v1/vms/{vm_id}/relocate", json={"host_id": ids["host1"], "disks": [{"index": 0, "datastore_id": shared["id"]}]})
            assert r.status_code == 202, r.text
            cold = task_done(api, r.json(), 120)
            assert cold["state"] == "success", (cold["error_code"], cold["error_message"])
            print(f"powered-off relocation to another host: {cold['result']}")
            copied = f"{path}/{disk_file}"
            assert cold["result"]["copier"] == ids["host2"] and cold["result"]["removed"] == [new_file]
            after = api.get(f"/api/v1/vms/{vm_id}").json()
            assert after["host_id"] == ids["host1"] and after["disks"][0]["datastore_id"] == shared["id"]
            assert _defined_on(lab, "rel1") == ["host1"]
            assert lab.host("host2").run(["test", "-e", new_file], check=False).returncode != 0
            check = lab.host("host1").run([sys.executable, "-c", f"import sys; from vcenter.lab.guest import verify_pattern; sys.exit(0 if verify_pattern({copied!r}, 2) else 1)"], check=False)
            assert check.returncode == 0, check
            on = task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json())
            assert on["state"] == "success", (on["error_code"], on["error_message"])
            assert _running_on(lab, "rel1") == ["host1"]
