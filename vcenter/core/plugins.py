"""Plugins: what a seam of the product finds by name among the installed Python entry points.

What this module decides:
- A seam is an entry-point group ``virtcenter.<seam>`` (the groups are declared where the
  seam lives: vcenter.power.drivers, vcenter.hypervisor.bootimages, workers.agent.network).
  An entry point's name is the name that settings and requests use (power type ``lab``, boot
  image ``tiny-linux``, port-group mode ``vxlan``); its object is what the seam builds from.
- Why entry points, not a registration call made by the plugin: the processes that need a
  plugin are the product's own (``vcenter serve``, ``worker``, ``agent``), started by the
  lab's tests, by ``make run`` or by an operator with ``VCENTER_*`` variables only; no code of
  the plugin runs in them before they need it. Entry points are package metadata, present in
  every process of the installed package (the lab's are declared in pyproject.toml; install.sh
  re-installs whenever pyproject.toml changes), and the product names no plugin module.
- The metadata is written by installing the package: after a change of the entry points,
  install again (``make install``; install.sh does it whenever pyproject.toml changed).
  tests/unit/test_lab_plugin.py fails while the installed entry points differ from
  pyproject.toml's.
- Names are read from the metadata once per process and group. A plugin's module is imported
  only when its name is asked for: a process that never meets power type ``lab`` never
  imports the lab.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> frozenset[str]:
    """The names the installed packages provide for ``group``, without importing them."""
    return frozenset(_entry_points(group))


def load(group: str, name: str) -> Any | None:
    """The object of plugin ``name`` in ``group`` (its module imported now), None if none."""
    ep = _entry_points(group).get(name)
    return None if ep is None else ep.load()
