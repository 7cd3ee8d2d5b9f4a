"""A real vSphere client nobody here wrote (issue 19): Ansible's ``vmware.vmware_rest`` 4.9.0
(ansible 12.3.0, in the venv scripts/install.sh makes: ANSIBLE_VENV) runs
tests/data/vsphere/playbook.yml against the server over HTTPS with its self-signed
certificate, which the client verifies (SSL_CERT_FILE). The inventory is seeded through our
/api/v1 with simulated host agents (tests/vsphere_world.py: items 1-3 claim no VM feature, so
no guest needs to run).

What must hold: the playbook passes (its asserts check each answer), every ``_info`` module of
the inventory and every ``_moid`` lookup ran at least one "ok" and one "refused" check (the
JSON callback's output), and every answer the collection received (VMWARE_REST_LOG_FILE
records them) validates against the upstream specification (tests/vsphere_spec.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for
from tests.clihelpers import wait_for_https
from tests.conftest import REDIS_URL, make_settings, redis_db_url
from tests.vsphere_spec import problems
from tests.vsphere_world import ADMIN, AUDITOR, NOBODY, seed
from vcenter.lab.stack import Stack

DATA = Path(__file__).resolve().parents[1] / "data" / "vsphere"
# The venv scripts/install.sh makes (ansible and aiohttp, apart from the project's own).
ANSIBLE_VENV = Path(os.environ.get("VCENTER_TEST_ANSIBLE_VENV", Path.home() / ".cache" / "virtcenter" / "ansible-12.3.0"))
PORTS = range(18500, 18600)
MODULES = [
    "vcenter_datacenter_info",
    "vcenter_cluster_info",
    "vcenter_host_info",
    "vcenter_datastore_info",
    "vcenter_network_info",
    "vcenter_folder_info",
    "vcenter_resourcepool_info",
    "vcenter_vm_info",
]
MODULES += [f"vcenter_vm_{m}_info" for m in ("power", "hardware", "hardware_cpu", "hardware_memory", "hardware_boot", "hardware_disk", "hardware_ethernet")]
LOOKUPS = ["datacenter_moid", "cluster_moid", "host_moid", "vm_moid", "datastore_moid", "folder_moid", "network_moid", "resource_pool_moid"]
# One exchange of the collection's REST log: "METHOD: url", its headers, status and answer.
EXCHANGE = re.compile(r"^(GET|POST|DELETE|PATCH|PUT): (\S+)\nheaders: .*?\n  status: (\d+)\n  answer: (.*?)\n\n", re.M | re.S)


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def _vsphere_ids(ids: dict[str, int]) -> dict[str, str]:
    named = {"dc1": f"datacenter-{ids['dc1']}", "dc2": f"datacenter-{ids['dc2']}", "cluster1": f"domain-c{ids['cluster1']}"}
    named |= {h: f"host-{ids[h]}" for h in ("esx1", "esx2", "esx3", "esx9")}
    named |= {"shared1": f"datastore-{ids['shared1']}", "vm-network": f"network-{ids['vm-network']}", "prod": f"group-v{2 * ids['prod'] + 1}"}
    named |= {"vm_folder": f"group-v{2 * ids['dc1']}", "host_folder": f"group-h{2 * ids['dc1']}", "Resources": f"resgroup-{ids['Resources']}", "pool1": f"resgroup-{ids['pool1']}"}
    return named | {vm: f"vm-{ids[vm]}" for vm in ("web1", "web2", "db1")}


@pytest.mark.timeout(900)
def test_ansible_vmware_rest_reads_the_inventory_over_https(tmp_path):
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        pytest.skip(f"{playbook} is missing: scripts/install.sh installs ansible 12.3.0 there")
    redis_url = redis_db_url(REDIS_URL, 12)
    stack = Stack.create(tmp_path / "stack", None, redis_url, tls_self_signed="true")
    stack.api_port = _free_port()
    stack.scheme = "https"
    stack.env |= {"VCENTER_API_PORT": str(stack.api_port), "VCENTER_PUBLIC_URL": stack.url}
    try:
        stack.run_cli("db", "upgrade")
        stack.run_cli("admin", "create", ADMIN[0], "--password", ADMIN[1], "--exist-ok")
        settings = make_settings(tmp_path, database_url=stack.env["VCENTER_DATABASE_URL"], redis_url=redis_url)
        with TestClient(app_for(settings)) as client:
            ids = _vsphere_ids(seed(client, settings).ids)
        stack._spawn("api", ["serve"])
        cert = tmp_path / "stack" / "keys" / "tls" / "api.crt"
        wait_for_https(stack, cert)
        # plain HTTP to the session route of the HTTPS listener: never a session (the listener
        # speaks TLS only; behind a proxy the route refuses it: tests/api/test_vsphere_api.py)
        try:
            plain = httpx.post(f"http://127.0.0.1:{stack.api_port}/rest/com/vmware/cis/session", auth=ADMIN, timeout=5)
            assert plain.status_code >= 400 and "value" not in plain.text, plain.text
        except httpx.HTTPError:
            pass

        variables = {
            "server": f"127.0.0.1:{stack.api_port}",
            "admin_user": ADMIN[0],
            "admin_password": ADMIN[1],
            "auditor_user": AUDITOR[0],
            "auditor_password": AUDITOR[1],
            "nobody_user": NOBODY[0],
            "nobody_password": NOBODY[1],
            "ids": ids,
            "ansible_python_interpreter": str(ANSIBLE_VENV / "bin" / "python"),
        }
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        log = tmp_path / "rest.log"
        env = {
            "PATH": f"{ANSIBLE_VENV / 'bin'}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
            "SSL_CERT_FILE": str(cert),
            "VMWARE_REST_LOG_FILE": str(log),
            # cloud.common's turbo lookup base: a stand-in of ours (tests/data/vsphere/README.md)
            "ANSIBLE_COLLECTIONS_PATH": str(DATA / "collections"),
        }
        started = time.monotonic()
        run = subprocess.run([str(playbook), "-i", "localhost,", str(DATA / "playbook.yml"), "-e", f"@{tmp_path / 'vars.json'}"], env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.monotonic() - started
        try:
            output = json.loads(run.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"no JSON from ansible-playbook (rc {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")

        checks: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        failed = []
        for play in output["plays"]:
            for task in play["tasks"]:
                name = task["task"]["name"]
                result = task["hosts"].get("localhost", {})
                match = re.match(r"([a-z_]+): (ok|refused)\b", name)
                if match:
                    checks[match.group(1)][match.group(2)].append(name)
                if result.get("failed"):
                    failed.append(f"{name}: {json.dumps(result)[:1500]}")
        # the module calls whose refusal a check asserts are the ignored failures, and only they
        assert len(failed) == output["stats"]["localhost"]["ignored"], "\n".join(failed)
        assert run.returncode == 0 and output["stats"]["localhost"]["failures"] == 0, (run.returncode, output["stats"], run.stderr[-3000:])
        for name in MODULES + LOOKUPS:
            assert checks[name]["ok"] and checks[name]["refused"], (name, dict(checks[name]))

        exchanges = EXCHANGE.findall(log.read_text())
        assert len(exchanges) > 40, log.read_text()[:2000]
        invalid = []
        for method, url, status, answer in exchanges:
            path = urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else "")
            body = json.loads(answer) if answer.strip() else None
            found = problems(method, path, int(status), body)
            if found:
                invalid.append(f"{method} {path} {status}: {found}")
        assert not invalid, "\n".join(invalid)
        print(f"\nansible-playbook: {sum(len(v['ok']) + len(v['refused']) for v in checks.values())} checks, {len(exchanges)} REST exchanges validated, {elapsed:.1f} s")
    finally:
        stack.stop()
