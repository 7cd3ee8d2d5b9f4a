"""Templates, deploy and import/export through the whole system on real lab hosts.

Two lab hosts sharing a loop-mounted datastore. A VM becomes a template; five linked clones
are deployed with placement choosing the hosts, boot, and each guest reports (through its
heartbeat channel) the hostname, machine-id and address of its own cloud-init seed, the ones
the server issued, no two alike, and an SSH host key fingerprint of its own (none equal to
the one the template's source VM reported when it booted) (and one clone pings another at its seed's address); the template cannot be deleted while they depend on it. A VMDK
and a VDI are uploaded and imported, boot, and each guest reports the SHA-256 of the disk it
sees, equal to the image's content. The VMDK VM is exported as an OVA (stream-optimised VMDK)
and the OVA imported again: that guest sees the same disk.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time


from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done
from vcenter.lab import faults


DISK_MIB = 4


def _ok(task: dict) -> dict:
    assert task["state"] == "success", (task["kind"], task["error_code"], task["error_message"])
    return task


def _guest(api, vm_id: int, check, what: str) -> dict:
    return wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm_id}").json()).get("guest_info") and check(v["guest_info"]) and v["guest_info"], 90, 0.5, what=what)


def _checksum(api, vm_id: int) -> dict:
    task = _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/guest/command", json={"command": "checksum", "argument": "vda", "timeout": 60}).json(), 90))
    reply = task["result"]["reply"]
    assert reply["ok"] is True, reply
    return reply


def _upload(api, path: str) -> dict:
    data = open(path, "rb").read()
    r = api.post(f"/api/v1/uploads?filename={os.path.basename(path)}&sha256={hashlib.sha256(data).hexdigest()}", content=data)
    assert r.status_code == 201, r.text
    return r.json()


def test_templates_linked_clones_import_and_export(tmp_path):
    with lab_stack(tmp_path, 2, task_lease=20, upload_dir=str(tmp_path / "uploads")) as (stack, lab, ctx):
        dc, cl, ids = ctx["dc"], ctx["cl"], ctx["ids"]
        with stack.client() as api:
            path = lab.create_datastore("tpl1", 256, list(ids))
            ds = api.post("/api/v1/datastores", json={"name": "tpl1", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": list(ids.values())}).json()

            # A VM that booted once (its guest made its SSH host key), powered off, becomes a template.
            base = _ok(
                task_done(
                    api,
                    api.post(
                        "/api/v1/vms",
                        json={"name": "base1", "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": 16}]},
                    ).json(),
                )
            )
            _ok(task_done(api, api.post(f"/api/v1/vms/{base['object_id']}/power/on").json()))
            source_key = _guest(api, base["object_id"], lambda g: g.get("ssh_host_key"), "base1 reports its SSH host key")["ssh_host_key"]
            assert source_key.startswith("SHA256:")
            _ok(task_done(api, api.post(f"/api/v1/vms/{base['object_id']}/power/off").json()))
            capture = _ok(task_done(api, api.post(f"/api/v1/vms/{base['object_id']}/template", json={"name": "tiny"}).json(), 60))
            template = api.get(f"/api/v1/templates/{capture['result']['template_id']}").json()
            assert template["state"] == "ready" and template["version"] == 1 and len(template["disks"][0]["sha256"]) == 64
            assert api.get(f"/api/v1/vms/{base['object_id']}").status_code == 404

            pg = api.post("/api/v1/portgroups", json={"name": "tplnet", "datacenter_id": dc["id"], "vlan_id": 77, "host_ids": list(ids.values())}).json()
            wait_for(lambda: sorted(api.get(f"/api/v1/portgroups/{pg['id']}").json()["present_on_host_ids"]) == sorted(ids.values()), 30, what="port group on both hosts")

            # Five linked clones, placement choosing the host of each; each seed gives a hostname
            # and an address.
            tasks = [
                api.post(
                    f"/api/v1/templates/{template['id']}/deploy",
                    json={
                        "name": f"clone{i}",
                        "cluster_id": cl["id"],
                        "mode": "linked",
                        "nics": [{"portgroup_id": pg["id"]}],
                        "customization": {"hostname": f"web-{i}", "runcmd": ["echo first boot"], "network": {"address": f"10.77.0.{10 + i}/24"}},
                    },
                ).json()
                for i in range(5)
            ]
            deployed = [_ok(task_done(api, t, 90)) for t in tasks]
            print("\nlinked-clone disk creation (agent):", [d["result"]["timings"] for d in deployed])
            assert all(d["placement"] and d["placement"]["host"] == str(d["host_id"]) for d in deployed)  # placement chose each host
            vm_ids = [d["object_id"] for d in deployed]
            r = api.delete(f"/api/v1/templates/{template['id']}")
            assert r.status_code == 409 and r.json()["code"] == "TEMPLATE_IN_USE" and all(f"clone{i}" in r.json()["message"] for i in range(5))
            for vm_id in vm_ids:
                _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json()))

            def reporting() -> dict:
                vms = {vm_id: api.get(f"/api/v1/vms/{vm_id}").json() for vm_id in vm_ids}
                return {vm_id: (v["power_state"], (v.get("guest_info") or {}).get("hostname")) for vm_id, v in vms.items()}

            # All five boot at once under TCG on a shared machine: wait for them together.
            deadline = time.monotonic() + 240
            while True:
                state = reporting()
                if all(h == f"web-{i}" for i, (_, h) in enumerate(state.values())):
                    break
                assert time.monotonic() < deadline, f"clones not all reporting their seeds' hostnames after 240 s: {state}"
                time.sleep(1)
            seen = []
            for i, vm_id in enumerate(vm_ids):
                issued = api.get(f"/api/v1/vms/{vm_id}/customization").json()
                info = _guest(api, vm_id, lambda g, i=i: g.get("hostname") == f"web-{i}", f"clone{i} reports its seed's hostname")
                assert info["machine_id"] == issued["machine_id"] and info["instance_id"] == issued["instance_id"]
                assert info["ip"] == f"10.77.0.{10 + i}/24"
                assert info["ssh_host_key"].startswith("SHA256:"), info
                seen.append((info["hostname"], info["machine_id"], info["instance_id"], info["ssh_host_key"]))
            assert len({s[0] for s in seen}) == len({s[1] for s in seen}) == len({s[2] for s in seen}) == 5
            # Fresh SSH host keys: no two clones share one, and none has the template's source's.
            assert len({s[3] for s in seen} | {source_key}) == 6, (source_key, seen)
            # The seed's address is really on the guest's NIC: clone0 reaches clone4 on the port group.
            ping = _ok(task_done(api, api.post(f"/api/v1/vms/{vm_ids[0]}/guest/command", json={"command": "ping", "argument": "10.77.0.14", "timeout": 30}).json(), 60))
            assert ping["result"]["reply"]["ok"] is True
            for vm_id in vm_ids:
                _ok(task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/off").json()))

            # A full clone (no backing file) becomes template v2, exported as an OVA, and back to a VM.
            full = _ok(task_done(api, api.post(f"/api/v1/templates/{template['id']}/deploy", json={"name": "full1", "host_id": ids["host2"], "mode": "full"}).json(), 90))
            assert api.get(f"/api/v1/vms/{full['object_id']}").json()["disks"][0]["backing_file"] is None
            v2 = _ok(task_done(api, api.post(f"/api/v1/vms/{full['object_id']}/template", json={"name": "tiny"}).json(), 60))["result"]["template_id"]
            assert [t["version"] for t in api.get("/api/v1/templates?name=tiny").json()] == [1, 2]
            exported = _ok(task_done(api, api.post(f"/api/v1/templates/{v2}/export").json(), 90))
            assert api.get(f"/api/v1/uploads/{exported['result']['upload_id']}/appliance").json()["name"] == "tiny-v2"
            back = _ok(task_done(api, api.post(f"/api/v1/templates/{v2}/vm", json={"name": "full1-again", "host_id": ids["host1"]}).json(), 60))
            assert api.get(f"/api/v1/templates/{v2}").status_code == 404
            assert api.get(f"/api/v1/vms/{back['result']['vm_id']}").json()["status"] == "ready"

            # The template's images still match their manifest; one changed on the datastore does not.
            assert _ok(task_done(api, api.post(f"/api/v1/templates/{template['id']}/verify").json(), 60))["result"]["ok"] is True
            lab.host("host2").run(["sh", "-c", f"printf x >> {path}/{template['dir']}/disk0.qcow2"])
            bad = task_done(api, api.post(f"/api/v1/templates/{template['id']}/verify").json(), 60)
            assert (bad["state"], bad["error_code"]) == ("error", "TEMPLATE_CHECKSUM_MISMATCH") and "disk0.qcow2" in bad["error_message"]

            # A path on the datastore that is a symlink out of it is refused by the agent.
            lab.host("host1").run(["ln", "-s", "/etc/passwd", f"{path}/evil.vmdk"])
            refused = task_done(api, api.post("/api/v1/imports/disk", json={"name": "evil", "host_id": ids["host1"], "datastore_id": ds["id"], "path": "evil.vmdk"}).json())
            assert (refused["state"], refused["error_code"]) == ("error", "PATH_SYMLINK")
            assert api.get(f"/api/v1/vms/{refused['object_id']}").status_code == 404
            top = {e["name"]: e for e in _ok(task_done(api, api.post(f"/api/v1/datastores/{ds['id']}/browse", json={"path": ""}).json()))["result"]["entries"]}
            assert top["evil.vmdk"]["kind"] == "symlink" and top["templates"]["kind"] == "dir"  # a link is listed, never followed
            folder = template["dir"].split("/", 1)[1]
            inside = _ok(task_done(api, api.post(f"/api/v1/datastores/{ds['id']}/browse", json={"path": template["dir"]}).json()))["result"]["entries"]
            assert {e["name"]: e.get("format") for e in inside} == {"disk0.qcow2": "qcow2", "manifest.json": None} and folder

            # Cancel an import while its agent pulls the upload over a slowed link: the task ends
            # cancelled, the VM is gone, nothing is left on the datastore.
            slow = tmp_path / "slow.raw"
            slow.write_bytes(os.urandom(4 << 20))
            upload = _upload(api, str(slow))
            faults.set_bandwidth(lab, "host1", 2000)
            try:
                task = api.post("/api/v1/imports/disk", json={"name": "slow1", "host_id": ids["host1"], "datastore_id": ds["id"], "upload_id": upload["id"], "format": "raw"}).json()
                wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["step"] == "downloading" and t["progress"] > 6, 60, 0.2, what="download under way")
                assert api.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 202
                ended = task_done(api, task, 60)
            finally:
                faults.clear_net(lab, "host1")
            assert (ended["state"], ended["error_code"]) == ("cancelled", "CANCELLED"), ended
            assert api.get(f"/api/v1/vms/{task['object_id']}").status_code == 404
            left = _ok(task_done(api, api.post(f"/api/v1/datastores/{ds['id']}/browse", json={"path": ""}).json()))["result"]["entries"]
            assert not [e["name"] for e in left if e["name"].startswith(".import-") or "slow1" in e["name"]]

            # Import a VMDK and a VDI; each guest reports the checksum of the disk it sees.
            raw = tmp_path / "data.raw"
            raw.write_bytes(os.urandom(DISK_MIB << 20))
            expected = hashlib.sha256(raw.read_bytes()).hexdigest()
            imported = {}
            for fmt in ("vmdk", "vdi"):
                image = tmp_path / f"data.{fmt}"
                subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(image)], check=True)
                upload = _upload(api, str(image))
                task = _ok(
                    task_done(
                        api,
                        api.post(
                            "/api/v1/imports/disk",
                            json={
                                "name": f"imp-{fmt}",
                                "cluster_id": cl["id"],
                                "datastore_id": ds["id"],
                                "upload_id": upload["id"],
                                "format": fmt,
                                "memory_mib": 96,
                                "kernel_boot": {"image": "tiny-linux"},
                            },
                        ).json(),
                        90,
                    )
                )
                assert task["result"]["source_format"] == fmt and task["result"]["capacity_mib"] == DISK_MIB
                imported[fmt] = task["object_id"]
                _ok(task_done(api, api.post(f"/api/v1/vms/{task['object_id']}/power/on").json()))
            for fmt, vm_id in imported.items():
                _guest(api, vm_id, lambda g: g.get("seq", 0) > 0, f"imported {fmt} guest boots")
                reply = _checksum(api, vm_id)
                assert (reply["sha256"], reply["bytes"]) == (expected, DISK_MIB << 20), fmt

            # Export the VMDK VM as an OVA, import the OVA again: the same disk.
            _ok(task_done(api, api.post(f"/api/v1/vms/{imported['vmdk']}/power/off").json()))
            export = _ok(task_done(api, api.post(f"/api/v1/vms/{imported['vmdk']}/export").json(), 120))
            ova = api.get(f"/api/v1/uploads/{export['result']['upload_id']}").json()
            assert ova["state"] == "ready" and ova["sha256"] == export["result"]["sha256"] and ova["filename"] == "imp-vmdk.ova"
            downloaded = api.get(f"/api/v1/uploads/{ova['id']}/content")
            assert hashlib.sha256(downloaded.content).hexdigest() == ova["sha256"]
            appliance = api.get(f"/api/v1/uploads/{ova['id']}/appliance").json()
            assert (appliance["vcpus"], appliance["memory_mib"], appliance["disks"][0]["capacity_bytes"]) == (1, 96, DISK_MIB << 20)
            again = _ok(
                task_done(
                    api,
                    api.post(
                        "/api/v1/imports/ova", json={"upload_id": ova["id"], "datastore_id": ds["id"], "name": "from-ova", "host_id": ids["host2"], "kernel_boot": {"image": "tiny-linux"}}
                    ).json(),
                    120,
                )
            )
            assert again["result"]["formats"] == {"imp-vmdk-disk1.vmdk": "vmdk"}
            _ok(task_done(api, api.post(f"/api/v1/vms/{again['object_id']}/power/on").json()))
            _guest(api, again["object_id"], lambda g: g.get("seq", 0) > 0, "OVA guest boots")
            assert _checksum(api, again["object_id"])["sha256"] == expected
