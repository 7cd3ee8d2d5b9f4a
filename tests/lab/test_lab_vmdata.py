"""Backup, restore, snapshot revert and clone through the whole system on a real lab host.

One running tiny-Linux guest on a loop-mounted datastore: a snapshot of the empty disk; the
guest writes a pattern; a full backup runs while the guest writes more and its heartbeat keeps
counting (never restarted); an incremental backup after that; the chain is restored into a new
VM, whose disk carries the whole pattern and which boots with a guest identity of its own (the
machine-id and instance id of the seed the server issued to it); the first VM reverts to its snapshot
and its disk is empty again while it runs; a clone of the running VM (host chosen by
placement) boots with its own identity; a job scheduled by beat keeps one restore point.
"""

from __future__ import annotations

import os


from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done
from vcenter.lab.guest import PATTERN_BLOCK, pattern_block


def _blocks(lab, host: str, image: str, mib: int, tmp) -> str:
    """The first ``mib`` MiB of a disk image as read on the host: one letter per 4 KiB block,
    p = pattern, 0 = zeros, x = anything else."""
    out = os.path.join(str(tmp), f"head-{os.path.basename(image)}.raw")
    lab.host(host).run(["qemu-img", "dd", "-U", "-O", "raw", "bs=1M", f"count={mib}", f"if={image}", f"of={out}"])
    letters = []
    with open(out, "rb") as f:
        for i in range(mib * (1 << 20) // PATTERN_BLOCK):
            block = f.read(PATTERN_BLOCK)
            letters.append("p" if block == pattern_block(i) else "0" if block == bytes(PATTERN_BLOCK) else "x")
    os.unlink(out)
    return "".join(letters)


def _ok(task: dict) -> dict:
    assert task["state"] == "success", (task["kind"], task["error_code"], task["error_message"])
    return task


def _heartbeat(api, vm_id: int, after: int = 0, what: str = "heartbeat") -> dict:
    return wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm_id}").json()).get("guest_info") and v["guest_info"].get("seq", 0) > after and v, 60, what=what)


def test_backup_restore_revert_clone_of_a_running_guest(tmp_path):
    with lab_stack(tmp_path, 1, task_lease=20, backup_schedule_period=1) as (stack, lab, ctx):
        host_id, dc = ctx["ids"]["host1"], ctx["dc"]
        with stack.client() as api:
            path = lab.create_datastore("vmdata1", 256, ["host1"])
            ds = api.post("/api/v1/datastores", json={"name": "vmdata1", "datacenter_id": dc["id"], "kind": "dir", "url": path, "host_ids": [host_id]}).json()
            created = _ok(
                task_done(
                    api,
                    api.post(
                        "/api/v1/vms", json={"name": "src1", "host_id": host_id, "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": 32}]}
                    ).json(),
                )
            )
            vm_id = created["object_id"]
            _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json()))
            vm = _heartbeat(api, vm_id, 1)
            disk = f"{path}/{vm['disks'][0]['file']}"

            # A snapshot of the running VM, disk still empty: with memory.
            _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/snapshots", json={"name": "empty"}).json()))
            (snap,) = api.get(f"/api/v1/vms/{vm_id}/snapshots").json()["tree"]
            assert snap["memory"] is True and snap["power_state"] == "poweredOn"

            def guest(cmd: str, arg: str) -> dict:
                return api.post(f"/api/v1/vms/{vm_id}/guest/command", json={"command": cmd, "argument": arg, "timeout": 120}).json()

            assert _ok(task_done(api, guest("write-pattern", "4"), 150))["result"]["reply"]["ok"] is True
            job = api.post(f"/api/v1/vms/{vm_id}/backup-jobs", json={"name": "nightly", "datastore_id": ds["id"], "directory": "backups/src1", "keep": 3}).json()
            before = api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"]
            # The guest writes 24 MiB while the full backup runs.
            writer = guest("write-pattern", "24")
            full = _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/backup-jobs/{job['id']}/run").json(), 120))
            assert _ok(task_done(api, writer, 150))["result"]["reply"]["ok"] is True
            assert full["result"]["kind"] == "full" and full["result"]["running"] is True
            after = _heartbeat(api, vm_id, before["seq"] + 2, "heartbeat after the backup")["guest_info"]
            assert after["uptime"] > before["uptime"] and after["machine_id"] == before["machine_id"]  # never restarted

            incremental = _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/backup-jobs/{job['id']}/run").json(), 120))
            assert incremental["result"]["kind"] == "incremental"
            points = api.get(f"/api/v1/vms/{vm_id}/backups").json()
            assert [p["kind"] for p in points] == ["full", "incremental"] and points[1]["parent_id"] == points[0]["id"]
            print(f"\nfull backup {points[0]['size_bytes']} bytes, incremental {points[1]['size_bytes']} bytes")

            # The full point: what was written before it is there, later blocks are pattern or empty.
            full_file = f"{path}/{points[0]['files'][0]['file']}"
            at_backup = _blocks(lab, "host1", full_file, 24, tmp_path)
            assert at_backup.startswith("p" * 1024) and "x" not in at_backup
            print(f"pattern blocks at the full backup's point in time: {at_backup.count('p')} of {len(at_backup)}")

            # Restore the chain into a new VM: the whole pattern, and it boots.
            restore = _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/backups/{points[1]['id']}/restore", json={"mode": "new", "name": "restored1"}).json(), 120))
            restored = api.get(f"/api/v1/vms/{restore['result']['new_vm_id']}").json()
            assert restored["libvirt_uuid"] != vm["libvirt_uuid"] and restored["status"] == "ready"
            assert _blocks(lab, "host1", f"{path}/{restored['disks'][0]['file']}", 24, tmp_path) == "p" * 6144
            _ok(task_done(api, api.post(f"/api/v1/vms/{restored['id']}/power/on").json()))
            # Its own guest identity from its own seed: the machine-id the server issued to it.
            issued = api.get(f"/api/v1/vms/{restored['id']}/customization").json()
            seen = _heartbeat(api, restored["id"], 0, "restored VM boots")["guest_info"]
            assert (seen["hostname"], seen["machine_id"], seen["instance_id"]) == ("restored1", issued["machine_id"], issued["instance_id"])
            assert seen["machine_id"] != before["machine_id"]
            assert seen["ssh_host_key"].startswith("SHA256:") and seen["ssh_host_key"] != before["ssh_host_key"]
            _ok(task_done(api, api.post(f"/api/v1/vms/{restored['id']}/power/off").json()))

            # Revert to the snapshot: the disk is as it was (empty), the guest runs.
            _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/snapshots/{snap['id']}/revert").json(), 60))
            assert api.get(f"/api/v1/vms/{vm_id}").json()["power_state"] == "poweredOn"
            assert set(_blocks(lab, "host1", disk, 4, tmp_path)) == {"0"}

            # Clone the running VM (placement picks the host); it keeps running, the clone boots.
            seq = _heartbeat(api, vm_id, 0, "heartbeat after revert")["guest_info"]["seq"]
            clone = _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/clone", json={"name": "clone1"}).json(), 120))
            assert clone["placement"] is not None
            cloned = api.get(f"/api/v1/vms/{clone['result']['clone_vm_id']}").json()
            assert cloned["host_id"] == host_id and cloned["libvirt_uuid"] != vm["libvirt_uuid"]
            _ok(task_done(api, api.post(f"/api/v1/vms/{cloned['id']}/power/on").json()))
            info = _heartbeat(api, cloned["id"], 0, "clone boots")["guest_info"]
            assert info["hostname"] == "clone1" and info["machine_id"] != before["machine_id"]
            assert info["ssh_host_key"].startswith("SHA256:") and info["ssh_host_key"] != before["ssh_host_key"]
            assert api.get(f"/api/v1/vms/{vm_id}").json()["power_state"] == "poweredOn"
            _heartbeat(api, vm_id, seq, "source keeps running")

            # A scheduled job (beat, compressed interval) with retention 1: a second point
            # replaces the first, whose file the agent removed after the second succeeded.
            often = api.post(
                f"/api/v1/vms/{vm_id}/backup-jobs", json={"name": "often", "datastore_id": ds["id"], "directory": "backups/often", "interval_s": 2, "keep": 1, "incremental": False}
            ).json()

            def points_of_often():
                return [p for p in api.get(f"/api/v1/vms/{vm_id}/backups").json() if p["job_id"] == often["id"] and p["state"] == "ok"]

            first = wait_for(lambda: points_of_often(), 60, what="a scheduled backup")[0]
            later = wait_for(lambda: [p for p in points_of_often() if p["id"] > first["id"]], 60, what="a second scheduled backup")[0]
            wait_for(lambda: first["id"] not in {p["id"] for p in points_of_often()}, 30, what="retention")
            assert lab.host("host1").run(["test", "-e", f"{path}/{first['files'][0]['file']}"], check=False).returncode != 0
            assert lab.host("host1").run(["test", "-s", f"{path}/{later['files'][0]['file']}"], check=False).returncode == 0
            api.patch(f"/api/v1/vms/{vm_id}/backup-jobs/{often['id']}", json={"enabled": False})
