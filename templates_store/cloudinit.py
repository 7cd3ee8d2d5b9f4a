"""Guest customisation as cloud-init NoCloud seeds.

A seed is three files on a volume labelled ``cidata`` (ISO 9660 with Rock Ridge and Joliet
names, as ``cloud-localds`` makes it): ``meta-data`` (instance-id, local-hostname),
``user-data`` (``#cloud-config``: hostname, users with SSH keys, run-once commands, a fresh
machine-id, fresh SSH host keys) and ``network-config`` (version 2; DHCP when no address).

What this module decides:
- Every deployed VM gets its own ``instance-id`` (cloud-init re-runs its per-instance modules,
  so users, runcmd and SSH host key regeneration happen on the clone's first boot even when
  the template had booted before) and its own ``machine-id`` written to /etc/machine-id.
- SSH host keys: ``ssh_deletekeys: true`` removes the template's keys, ``ssh_genkeytypes``
  makes new ones, on every new instance.
- ``runcmd`` runs once per instance (cloud-init's semantics).
- The user-data is YAML written by PyYAML with the keys in a fixed order; the lab guest
  (vcenter.lab.guest) reads ``local-hostname``/``instance-id`` from meta-data and the
  machine-id's ``write_files`` entry from user-data.

Secrets (password hashes, keys) live in the seed only: it is built server-side and fetched
by the agent with its host credential, never sent on a queue.
"""

from __future__ import annotations

import io
from typing import Any

import yaml

SEED_LABEL = "cidata"
SSH_KEY_TYPES = ["rsa", "ecdsa", "ed25519"]


def render_seed(custom: dict[str, Any], *, instance_id: str, machine_id: str, hostname: str, macs: list[str] | None = None) -> dict[str, str]:
    """{"meta-data", "user-data", "network-config"} texts of one VM's seed."""
    meta = {"instance-id": instance_id, "local-hostname": hostname}
    config: dict[str, Any] = {
        "hostname": hostname,
        "preserve_hostname": False,
        "ssh_deletekeys": True,
        "ssh_genkeytypes": list(SSH_KEY_TYPES),
    }
    users: list[Any] = []
    for user in custom.get("users") or []:
        entry: dict[str, Any] = {"name": user["name"], "shell": user.get("shell") or "/bin/sh"}
        if user.get("ssh_authorized_keys"):
            entry["ssh_authorized_keys"] = list(user["ssh_authorized_keys"])
        if user.get("groups"):
            entry["groups"] = ",".join(user["groups"])
        if user.get("sudo"):
            entry["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
        if user.get("password_hash"):
            entry["hashed_passwd"] = user["password_hash"]
            entry["lock_passwd"] = False
        else:
            entry["lock_passwd"] = True
        users.append(entry)
    if users:
        config["users"] = ["default", *users]
    config["write_files"] = [{"path": "/etc/machine-id", "content": machine_id, "permissions": "0444", "owner": "root:root"}]
    if custom.get("runcmd"):
        config["runcmd"] = [str(c) for c in custom["runcmd"]]
    user_data = "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=4096)
    network = custom.get("network")
    ethernet: dict[str, Any] = {}
    if network and network.get("address"):
        ethernet = {"addresses": [network["address"]]}
        if network.get("gateway"):
            ethernet["routes"] = [{"to": "0.0.0.0/0", "via": network["gateway"]}]
        if network.get("dns"):
            ethernet["nameservers"] = {"addresses": list(network["dns"])}
    else:
        ethernet = {"dhcp4": True}
    if macs:
        ethernet = {"match": {"macaddress": macs[0]}, "set-name": "eth0", **ethernet}
    else:
        ethernet = {"match": {"name": "e*"}, **ethernet}
    network_config = yaml.safe_dump({"version": 2, "ethernets": {"eth0": ethernet}}, sort_keys=False, default_flow_style=False)
    return {"meta-data": yaml.safe_dump(meta, sort_keys=False, default_flow_style=False), "user-data": user_data, "network-config": network_config}


def build_seed_iso(files: dict[str, str], dest: str) -> None:
    """Write the NoCloud seed volume (ISO 9660, label cidata) to ``dest`` (via a temporary
    name)."""
    import os

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    for i, (name, text) in enumerate(sorted(files.items())):
        data = text.encode()
        short = "".join(c for c in name.upper() if c.isalnum())[:8] or f"F{i}"
        iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name, joliet_path=f"/{name}")
    tmp = f"{dest}.part"
    iso.write(tmp)
    iso.close()
    os.rename(tmp, dest)


def read_seed_iso(path: str) -> dict[str, str]:
    """The files of a seed volume, by their Rock Ridge names (for tests and checks)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        out = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            out[name] = buf.getvalue().decode()
        return out
    finally:
        iso.close()
