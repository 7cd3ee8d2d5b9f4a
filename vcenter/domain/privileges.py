"""Privileges, built-in roles and the permission-merge rule: who may do what where.

Vocabulary (vCenter's):
- privilege: one right, dotted like ``VirtualMachine.PowerOn``; ``System.View`` lets a user
  see an object at all (read routes need it).
- role: a named set of privileges. Built in: Administrator (all), Read-only (System.View),
  No access (nothing, and it wins), VM operator (view + power, console, snapshots).
- permission: (principal = user or group, role, object, propagate). Set on an object it
  applies there, and below it when ``propagate``.
- effective privileges of a user on an object (``effective_privileges``): walk from the
  object up to the root along *each* parent path. On each path the nearest permissions
  decide (a more specific permission overrides an inherited one; on one object a user's own
  permission overrides its groups' ones, and the groups' roles are united). A VM has two
  parents (its folder and its resource pool); the paths are merged as vCenter does for
  multiple inheritance: the union of what each path grants, except that "No access" found
  nearest on any path wins over every grant.

Pure: no I/O; callers give the permissions on the path as plain tuples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# The catalog. Every route declares one of these (tests walk app.routes and check).
PRIVILEGES: dict[str, str] = {
    "System.View": "see the object and read its state, events and tasks",
    "System.Anonymous": "reach the server without a session (login, health, agent routes)",
    "Global.Settings": "change server-wide settings",
    "Global.CancelTask": "cancel a task someone else started",
    "Global.Diagnostics": "read the audit log and export it",
    "Permissions.Modify": "grant and revoke permissions on the object",
    "Authorization.ModifyRoles": "create, change and delete roles",
    "Users.Modify": "create, change and delete users, groups and API tokens",
    "Datacenter.Create": "create a datacenter",
    "Datacenter.Modify": "rename a datacenter",
    "Datacenter.Delete": "delete a datacenter",
    "Folder.Create": "create a folder",
    "Folder.Delete": "delete a folder",
    "Folder.Modify": "rename or move a folder or an object between folders",
    "Cluster.Create": "create a cluster",
    "Cluster.Modify": "change a cluster's settings (EVC, DRS, DPM, HA, rules)",
    "Cluster.Delete": "delete a cluster",
    "Cluster.DRS": "run DRS and apply its recommendations",
    "Cluster.HA": "configure HA and its admission control",
    "Host.Add": "add or register a host",
    "Host.Remove": "remove a host",
    "Host.Maintenance": "enter and exit maintenance mode",
    "Host.Power": "standby, power a host on or off",
    "Host.Configure": "change a host's settings, datastores and port groups",
    "Datastore.AllocateSpace": "place disks on the datastore",
    "Datastore.Configure": "create, change and delete datastores",
    "Datastore.Browse": "browse files and upload to the datastore",
    "Network.Configure": "create, change and delete port groups",
    "Network.Assign": "connect a VM's NIC to the port group",
    "Resource.CreatePool": "create, change and delete resource pools",
    "Resource.AssignVM": "move a VM into a resource pool",
    "VirtualMachine.Create": "create a VM",
    "VirtualMachine.Delete": "delete a VM and its disks",
    "VirtualMachine.Configure": "change a VM's hardware, name or folder",
    "VirtualMachine.PowerOn": "power on, resume",
    "VirtualMachine.PowerOff": "power off, shut down, reset, suspend",
    "VirtualMachine.Console": "open the VM's console",
    "VirtualMachine.GuestOperations": "run commands in the guest",
    "VirtualMachine.Migrate": "VMotion: move a running VM to another host",
    "VirtualMachine.Relocate": "Storage VMotion: move a VM's disks",
    "VirtualMachine.Snapshot": "create, revert and delete snapshots",
    "VirtualMachine.Clone": "clone a VM",
    "VirtualMachine.Backup": "back up and restore a VM",
    "VirtualMachine.Import": "import a disk or an appliance; adopt an orphaned VM",
    "VirtualMachine.Export": "export a VM as an appliance",
    "Template.Create": "convert a VM to a template, create templates",
    "Template.Deploy": "deploy a VM from a template",
    "Template.Delete": "delete a template",
    "Alarm.Create": "create, change and delete alarm definitions",
    "Alarm.Acknowledge": "acknowledge and reset triggered alarms",
}

VIEW = "System.View"
ANONYMOUS = "System.Anonymous"

ADMINISTRATOR = "Administrator"
READ_ONLY = "Read-only"
NO_ACCESS = "No access"
VM_OPERATOR = "VM operator"

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    ADMINISTRATOR: frozenset(p for p in PRIVILEGES if p != ANONYMOUS),
    READ_ONLY: frozenset({VIEW}),
    NO_ACCESS: frozenset(),
    VM_OPERATOR: frozenset({VIEW, "VirtualMachine.PowerOn", "VirtualMachine.PowerOff", "VirtualMachine.Console", "VirtualMachine.Snapshot", "VirtualMachine.GuestOperations", "Alarm.Acknowledge"}),
}


def unknown_privileges(privileges: Iterable[str]) -> list[str]:
    return sorted(p for p in privileges if p not in PRIVILEGES or p == ANONYMOUS)


@dataclass(frozen=True)
class Grant:
    """One permission as the merge sees it: on which object (by its position on the path),
    for whom, which role's privileges, and whether it reaches below its object."""

    principal_is_user: bool
    privileges: frozenset[str]
    no_access: bool
    propagate: bool


def _decide_on_object(grants: Sequence[Grant], is_target: bool) -> tuple[frozenset[str], bool] | None:
    """What the permissions set on one object give (privileges, no_access); None when none
    of them applies here."""
    applicable = [g for g in grants if is_target or g.propagate]
    if not applicable:
        return None
    own = [g for g in applicable if g.principal_is_user]
    chosen = own or applicable  # a user's own permission overrides its groups' ones
    if any(g.no_access for g in chosen):
        return frozenset(), True
    return frozenset().union(*(g.privileges for g in chosen)), False


def privileges_on_path(path: Sequence[Sequence[Grant]]) -> tuple[frozenset[str], bool] | None:
    """The nearest deciding object on one path (path[0] is the object itself, then its
    parents up to the root) gives (privileges, no_access); None when nothing applies."""
    for depth, grants in enumerate(path):
        decided = _decide_on_object(grants, is_target=depth == 0)
        if decided is not None:
            return decided
    return None


def effective_privileges(paths: Sequence[Sequence[Sequence[Grant]]], is_superuser: bool = False) -> frozenset[str]:
    """Merge the paths: union of grants; an explicit "No access" nearest on any path wins."""
    if is_superuser:
        return BUILTIN_ROLES[ADMINISTRATOR]
    result: set[str] = set()
    for path in paths:
        decided = privileges_on_path(path)
        if decided is None:
            continue
        privileges, no_access = decided
        if no_access:
            return frozenset()
        result |= privileges
    return frozenset(result)
