"""`vcenter lab`: bring the lab of real libvirt/QEMU hosts up and down, show it, break it.

Mounted by vcenter.cli as ``app.add_typer(lab_app, name="lab")``. Needs root on Linux.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from vcenter.lab import faults
from vcenter.lab.hosts import DEFAULT_WORKDIR, Capacity, Lab

lab_app = typer.Typer(help="The lab: real libvirt/QEMU hosts in namespaces on this machine.", no_args_is_help=True, add_completion=False)
fault_app = typer.Typer(help="Faults on demand, each with its opposite.", no_args_is_help=True)
lab_app.add_typer(fault_app, name="fault")

_WORKDIR = typer.Option(DEFAULT_WORKDIR, "--workdir", help="the lab's state and host directories")


def _lab(workdir: Path) -> Lab:
    lab = Lab(workdir)
    if not lab.state["hosts"]:
        typer.echo(f"no lab at {workdir} (run `vcenter lab up`)", err=True)
        raise typer.Exit(1)
    return lab


@lab_app.command()
def up(
    hosts: int = typer.Option(3, "--hosts", min=1, max=20, help="number of hosts"),
    cpus: int = typer.Option(2, help="declared CPUs per host"),
    memory_mib: int = typer.Option(4096, help="declared memory per host (MiB)"),
    guests: int = typer.Option(0, "--guests", min=0, max=8, help="tiny Linux guests to start on each host"),
    workdir: Path = _WORKDIR,
) -> None:
    """Create HOSTS lab hosts (cleaning up a previous lab first), optionally with running guests."""
    t0 = time.monotonic()
    lab = Lab(workdir)
    lab.up(hosts, Capacity(cpus=cpus, memory_mib=memory_mib))
    for h in lab.hosts:
        typer.echo(f"{h.name}  {h.address}  {h.uri}")
    hosts_done = time.monotonic() - t0
    if guests:
        started = start_guests(lab, guests)
        typer.echo(f"guests running: {', '.join(started)}")
    typer.echo(f"lab up: {hosts} hosts in {hosts_done:.1f} s, with {guests * hosts} guests running in {time.monotonic() - t0:.1f} s (state in {lab.state_file})")


def start_guests(lab: Lab, per_host: int) -> list[str]:
    """Define and start ``per_host`` tiny Linux guests on every host, straight through each
    host's libvirt (no server involved): for lab checks and timing."""
    import uuid as uuidlib

    from vcenter.hypervisor.libvirt.driver import LibvirtDriver
    from vcenter.lab.guest import build_guest
    from vcenter.messaging.contracts import VmSpec

    image = build_guest()
    names = []
    for index, host in enumerate(lab.hosts):
        driver = LibvirtDriver(host.local_uri)
        driver.connect()
        try:
            for i in range(1, per_host + 1):
                name = f"{host.name}-g{i}"
                spec = VmSpec(
                    name=name,
                    uuid=str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{name}.lab.virtcenter")),
                    vcpus=1,
                    memory_mib=image.memory_mib,
                    kernel=str(image.kernel),
                    initrd=str(image.initrd),
                    cmdline=image.cmdline_for(hostname=name, ip=f"10.98.{index}.{i + 10}/16"),
                )
                driver.define(spec)
                driver.start(spec.uuid)
                names.append(name)
        finally:
            driver.close()
    return names


@lab_app.command()
def down(workdir: Path = _WORKDIR) -> None:
    """Remove every namespace, link, process, mount and cgroup of the lab."""
    t0 = time.monotonic()
    Lab(workdir).down()
    typer.echo(f"lab down in {time.monotonic() - t0:.1f} s")


@lab_app.command()
def status(workdir: Path = _WORKDIR, as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
    """Hosts with address, state, declared capacity and running guests."""
    st = Lab(workdir).status()
    if as_json:
        typer.echo(json.dumps(st, indent=1))
        return
    if not st["hosts"]:
        typer.echo(f"no lab at {workdir}")
        return
    typer.echo(f"{'HOST':8} {'ADDRESS':12} {'STATE':13} {'CPUS':>4} {'MEM MiB':>8}  NET              GUESTS")
    for h in st["hosts"]:
        n = h["net"]
        netinfo = ",".join(x for x in ("isolated" if n["isolated"] else "", f"loss={n['loss']}%" if n["loss"] else "", f"{n['kbit']}kbit" if n["kbit"] else "") if x) or "ok"
        guests = "-" if h["guests"] is None else (" ".join(h["guests"]) or "(none)")
        typer.echo(f"{h['name']:8} {h['address']:12} {h['state']:13} {h['capacity']['cpus']:>4} {h['capacity']['memory_mib']:>8}  {netinfo:16} {guests}")
    for name, ds in st["datastores"].items():
        gone = f" (gone on {', '.join(ds['gone'])})" if ds["gone"] else ""
        typer.echo(f"datastore {name}: {ds['size_mib']} MiB at {ds['path']} on {', '.join(ds['hosts'])}{gone}")


@fault_app.command("kill-host")
def kill_host(host: str, workdir: Path = _WORKDIR) -> None:
    """Power loss: SIGKILL every process of HOST (agent, libvirtd, QEMU)."""
    faults.kill_host(_lab(workdir), host)


@fault_app.command("start-host")
def start_host(host: str, workdir: Path = _WORKDIR) -> None:
    """Power on HOST: fresh libvirtd, datastores, agent; no guest runs."""
    faults.start_host(_lab(workdir), host)


@fault_app.command("crash-libvirtd")
def crash_libvirtd(host: str, workdir: Path = _WORKDIR) -> None:
    """Kill only HOST's libvirtd; its guests keep running."""
    faults.crash_libvirtd(_lab(workdir), host)


@fault_app.command("restart-libvirtd")
def restart_libvirtd(host: str, workdir: Path = _WORKDIR) -> None:
    """Start HOST's libvirtd again; it re-attaches the running guests."""
    faults.restart_libvirtd(_lab(workdir), host)


@fault_app.command("isolate")
def isolate(host: str, workdir: Path = _WORKDIR) -> None:
    """Take HOST's link down (guests keep running)."""
    faults.isolate(_lab(workdir), host)


@fault_app.command("reconnect")
def reconnect(host: str, workdir: Path = _WORKDIR) -> None:
    """Bring HOST's link up again."""
    faults.reconnect(_lab(workdir), host)


@fault_app.command("loss")
def loss(host: str, percent: int = typer.Option(..., "--percent", min=0, max=100), workdir: Path = _WORKDIR) -> None:
    """Drop PERCENT % of HOST's packets in each direction (nftables)."""
    faults.set_loss(_lab(workdir), host, percent)


@fault_app.command("bandwidth")
def bandwidth(host: str, kbit: int = typer.Option(..., "--kbit", min=1), workdir: Path = _WORKDIR) -> None:
    """Limit HOST's link to KBIT kbit/s in each direction (tbf)."""
    faults.set_bandwidth(_lab(workdir), host, kbit)


@fault_app.command("clear-net")
def clear_net(host: str, workdir: Path = _WORKDIR) -> None:
    """Remove packet loss and bandwidth limits of HOST."""
    faults.clear_net(_lab(workdir), host)


@fault_app.command("datastore-gone")
def datastore_gone(datastore: str, host: Optional[list[str]] = typer.Option(None, "--host", help="only on these hosts"), workdir: Path = _WORKDIR) -> None:
    """DATASTORE disappears (lazy unmount) from its hosts."""
    faults.datastore_gone(_lab(workdir), datastore, host or None)


@fault_app.command("datastore-back")
def datastore_back(datastore: str, host: Optional[list[str]] = typer.Option(None, "--host", help="only on these hosts"), workdir: Path = _WORKDIR) -> None:
    """DATASTORE is mounted again on its hosts."""
    faults.datastore_back(_lab(workdir), datastore, host or None)


@lab_app.command("datastore-create")
def datastore_create(
    name: str,
    size_mib: int = typer.Option(256, "--size-mib", min=8),
    host: list[str] = typer.Option(..., "--host", help="a host that mounts it (repeat)"),
    path: Optional[str] = typer.Option(None, help="mount path inside the hosts"),
    workdir: Path = _WORKDIR,
) -> None:
    """A loop-mounted ext4 datastore of SIZE MiB, shared by the given hosts."""
    typer.echo(_lab(workdir).create_datastore(name, size_mib, host, path))


@lab_app.command("portgroup")
def portgroup(host: str, bridge: str, vlan: int = typer.Option(..., "--vlan", min=1, max=4094), workdir: Path = _WORKDIR) -> None:
    """Port group BRIDGE with VLAN id on HOST (a VXLAN segment per VLAN id in the lab)."""
    _lab(workdir).ensure_portgroup(host, bridge, vlan)


if __name__ == "__main__":
    lab_app()
