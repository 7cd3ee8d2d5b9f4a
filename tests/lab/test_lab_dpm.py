"""DPM on real hosts through IPMI: with idle guests, fully automated DPM evacuates a lab host
and powers it off through its BMC (real `ipmitool -I lanplus` against a pyghmi BMC on
loopback); when the guests burn CPU, DPM powers it back on and it leaves standby once its
agent reports again."""

from __future__ import annotations


from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done
from vcenter.lab.bmc import LabBmc
from vcenter.lab.hosts import Capacity, Lab
from vcenter.lab.stack import free_port


def test_dpm_powers_an_idle_host_off_through_ipmi_and_back_on_when_load_returns(tmp_path):
    with lab_stack(tmp_path, 2, capacity=Capacity(cpus=1, memory_mib=2048), dpm_period=2) as (stack, lab, ctx):
        ids, cl = ctx["ids"], ctx["cl"]
        bmcs = {}
        try:
            with stack.client() as api:
                for host in lab.hosts:
                    port = free_port()
                    bmcs[host.name] = LabBmc(lab, host.name, port, username="admin", password="bmc-secret")
                    bmcs[host.name].start()
                    power = {"type": "ipmi", "address": "127.0.0.1", "port": port, "username": "admin", "password": "bmc-secret"}
                    r = api.patch(f"/api/v1/hosts/{ids[host.name]}", json={"power": power})
                    assert r.status_code == 200, r.text
                    assert "password" not in r.json()["power_summary"]
                vms = []
                for name in ("g1", "g2"):
                    task = api.post("/api/v1/vms", json={"name": name, "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}}).json()
                    vm_id = task_done(api, task)["object_id"]
                    assert task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json())["state"] == "success"
                    vms.append(vm_id)
                for vm_id in vms:
                    wait_for(lambda: (api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"] or {}).get("seq"), 60, what="guest heartbeat")
                current = api.get(f"/api/v1/clusters/{cl['id']}").json()
                dpm_settings = {"enabled": True, "automation": "full", "sample_s": 2, "off_window_s": 6, "on_window_s": 4, "host_cooldown_s": 0, "min_hosts_on": 1}
                assert api.patch(f"/api/v1/clusters/{cl['id']}", json={"settings": {**current["settings"], "dpm": dpm_settings}, "version": current["version"]}).status_code == 200

                def standby_host():
                    for name, host_id in ids.items():
                        if api.get(f"/api/v1/hosts/{host_id}").json()["standby"]:
                            return name
                    return None

                sleeping = wait_for(standby_host, 90, what="DPM powered an idle host off")
                assert not lab.host(sleeping).powered and bmcs[sleeping].actions, "the BMC did the power-off"
                awake = next(n for n in ids if n != sleeping)
                # Every guest runs on the host that stayed on.
                assert {api.get(f"/api/v1/vms/{v}").json()["host_id"] for v in vms} == {ids[awake]}
                for vm_id in vms:
                    reply = api.post(f"/api/v1/vms/{vm_id}/guest/command", json={"command": "burn", "argument": "100"}).json()
                    assert task_done(api, reply)["state"] == "success"
                try:
                    back = wait_for(
                        lambda: (h := api.get(f"/api/v1/hosts/{ids[sleeping]}").json())["standby"] is False and h["connection_state"] == "connected" and h, 120, what="DPM powered the host back on"
                    )
                except AssertionError:
                    diag = {
                        "dpm": api.post(f"/api/v1/clusters/{cl['id']}/dpm/run").json(),
                        "tasks": [(t["kind"], t["state"], t["error_code"], t["error_message"]) for t in api.get("/api/v1/tasks?limit=10").json()["items"]],
                        "demand": {v: api.get(f"/api/v1/vms/{v}").json()["cpu_demand_mhz"] for v in vms},
                    }
                    raise AssertionError(diag)
                assert Lab(lab.workdir).host(sleeping).powered and back["maintenance"] is False  # a fresh view: the BMC changed the lab
                events = [e["kind"] for e in api.get(f"/api/v1/events?object_type=host&object_id={ids[sleeping]}&limit=100").json()["items"]]
                assert "host.standby.entered" in events and "host.standby.exited" in events
                for vm_id in vms:
                    api.post(f"/api/v1/vms/{vm_id}/guest/command", json={"command": "burn", "argument": "0"})
        finally:
            for bmc in bmcs.values():
                bmc.stop()
