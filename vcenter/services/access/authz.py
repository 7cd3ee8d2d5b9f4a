"""Authorization: does a user hold a privilege on an inventory object, and which objects of a
kind may a user see (a SQL clause applied before counting and paging).

The merge rule is vcenter.domain.privileges'. This module supplies the inventory tree:

- root (``("root", 0)``) is the parent of every datacenter;
- a datacenter's children: folders, clusters, standalone hosts, datastores, port groups;
- a folder's parent is its parent folder, else its datacenter;
- a cluster's parent is its datacenter; a host's is its cluster, else its datacenter;
- a resource pool's parent is its parent pool, else its cluster;
- a VM has TWO parents, as in vCenter: its folder (else its datacenter) and its resource
  pool (else its cluster, else its host). The merge over the two paths is the domain's:
  union of grants, a "No access" nearest on either path wins.
- any other kind with a ``datacenter_id`` column hangs under that datacenter, else under root.

Administrators (``users.is_admin``) hold every privilege everywhere; an API token narrows
whoever uses it to the token's role (intersection).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, false, or_, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Forbidden
from vcenter.core.ids import token_hash
from vcenter.db.models import (
    ApiToken,
    Cluster,
    Datacenter,
    Datastore,
    Folder,
    GroupMember,
    Host,
    Permission,
    PortGroup,
    ResourcePool,
    Role,
    Switch,
    Template,
    User,
    VirtualMachine,
)
from vcenter.domain.privileges import BUILTIN_ROLES, NO_ACCESS, VIEW, Grant, effective_privileges, privileges_on_path

Node = tuple[str, int]
ROOT: Node = ("root", 0)

_MODELS: dict[str, Any] = {
    "datacenter": Datacenter,
    "folder": Folder,
    "cluster": Cluster,
    "host": Host,
    "datastore": Datastore,
    "portgroup": PortGroup,
    "switch": Switch,  # under its datacenter; permissions on it come from there
    "pool": ResourcePool,
    "vm": VirtualMachine,
    "template": Template,  # under its datacenter
}


def register_kind(kind: str, model: Any) -> None:
    """Other packages' inventory kinds (templates, alarms...) join the tree through their
    ``datacenter_id`` column, if any."""
    _MODELS.setdefault(kind, model)


def role_privileges(role: Role) -> frozenset[str]:
    if role.builtin and role.name in BUILTIN_ROLES:
        return BUILTIN_ROLES[role.name]  # built-in roles follow the catalog as it grows
    return frozenset(role.privileges or [])


def ensure_builtin_roles(session: Session) -> dict[str, Role]:
    roles = {r.name: r for r in session.scalars(select(Role).where(Role.builtin.is_(True)))}
    for name in BUILTIN_ROLES:
        if name not in roles:
            roles[name] = Role(name=name, builtin=True, privileges=[], description=f"built-in role {name}")
            session.add(roles[name])
    session.flush()
    return roles


# --- grants ------------------------------------------------------------------------------


def user_grants(session: Session, user: User) -> dict[Node, list[Grant]]:
    """Every permission that applies to the user (its own and its groups'), by object."""
    group_ids = list(session.scalars(select(GroupMember.group_id).where(GroupMember.user_id == user.id)))
    query = (
        select(Permission, Role)
        .join(Role, Role.id == Permission.role_id)
        .where(((Permission.principal_type == "user") & (Permission.principal_id == user.id)) | ((Permission.principal_type == "group") & (Permission.principal_id.in_(group_ids or [-1]))))
    )
    grants: dict[Node, list[Grant]] = {}
    for permission, role in session.execute(query):
        grants.setdefault((permission.object_type, permission.object_id), []).append(
            Grant(principal_is_user=permission.principal_type == "user", privileges=role_privileges(role), no_access=role.builtin and role.name == NO_ACCESS, propagate=permission.propagate)
        )
    return grants


# session.info key: hashes of the tokens vcenter.services.access.auth found to be login
# sessions in this transaction (token_role then knows there is no API token to read).
LOGIN_SESSION_TOKENS = "login_session_token_hashes"


def token_role(session: Session, token: str | None) -> Role | None:
    """The role an API token narrows its user to; None for a login session."""
    if not token:
        return None
    if token_hash(token) in session.info.get(LOGIN_SESSION_TOKENS, ()):
        return None  # authenticated as a login session in this transaction: no API token
    api_token = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    return session.get(Role, api_token.role_id) if api_token is not None else None


# --- the tree ----------------------------------------------------------------------------


def _parents_of_row(kind: str, row: Any) -> list[Node]:
    if kind == "datacenter":
        return [ROOT]
    if kind == "folder":
        return [("folder", row.parent_id)] if row.parent_id else [("datacenter", row.datacenter_id)]
    if kind == "cluster":
        return [("datacenter", row.datacenter_id)]
    if kind == "host":
        return [("cluster", row.cluster_id)] if row.cluster_id else [("datacenter", row.datacenter_id)]
    if kind == "pool":
        return [("pool", row.parent_id)] if row.parent_id else [("cluster", row.cluster_id)]
    if kind == "vm":
        folder_side = ("folder", row.folder_id) if row.folder_id else ("datacenter", row.datacenter_id)
        if row.pool_id:
            pool_side = ("pool", row.pool_id)
        elif row.cluster_id:
            pool_side = ("cluster", row.cluster_id)
        elif row.host_id:
            pool_side = ("host", row.host_id)
        else:
            pool_side = ("datacenter", row.datacenter_id)
        return [folder_side, pool_side] if pool_side != folder_side else [folder_side]
    datacenter_id = getattr(row, "datacenter_id", None)
    return [("datacenter", datacenter_id)] if datacenter_id else [ROOT]


# The columns naming a row's parents (read by _parents_of_row), by model: one small SELECT per
# tree node, never the ORM object (a VM's would load its disks, NICs and statistics too).
_PARENT_COLUMNS = ("parent_id", "datacenter_id", "cluster_id", "folder_id", "pool_id", "host_id")
_PARENT_QUERIES: dict[Any, Any] = {}


def _parent_row(session: Session, model: Any, object_id: int) -> Any:
    """The id and parent columns of one row of ``model``, None when there is none."""
    query = _PARENT_QUERIES.get(model)
    if query is None:
        table = model.__table__
        query = select(table.c.id, *(table.c[name] for name in _PARENT_COLUMNS if name in table.c)).where(table.c.id == bindparam("object_id"))
        _PARENT_QUERIES[model] = query
    return session.execute(query, {"object_id": object_id}).first()


def _paths(session: Session, node: Node, depth: int = 0) -> list[list[Node]]:
    """Every path from the node up to root, the node first."""
    if node == ROOT or depth > 64:
        return [[ROOT]]
    kind, object_id = node
    model = _MODELS.get(kind)
    row = _parent_row(session, model, object_id) if model is not None else None
    if row is None:
        return [[node, ROOT]]
    return [[node, *path] for parent in _parents_of_row(kind, row) for path in _paths(session, parent, depth + 1)]


def privileges(session: Session, user: User, kind: str | None, object_id: int | None, token: str | None = None) -> frozenset[str]:
    if user.is_admin:  # every privilege everywhere: the object's place in the tree decides nothing
        result = effective_privileges([], is_superuser=True)
    else:
        node = ROOT if kind is None or object_id is None else (kind, object_id)
        grants = user_grants(session, user)
        result = effective_privileges([[grants.get(n, []) for n in path] for path in _paths(session, node)])
    narrowed = token_role(session, token)
    return result & role_privileges(narrowed) if narrowed is not None else result


def allowed(session: Session, user: User, privilege: str, kind: str | None = None, object_id: int | None = None, token: str | None = None) -> bool:
    return privilege in privileges(session, user, kind, object_id, token)


def check(session: Session, user: User, privilege: str, kind: str | None, object_id: int | None, token: str | None = None) -> None:
    if allowed(session, user, privilege, kind, object_id, token):
        return
    where = f"{kind} {object_id}" if kind and object_id is not None else "the inventory root"
    raise Forbidden(
        f"{user.username} lacks {privilege} on {where}",
        code="FORBIDDEN",
        details={"privilege": privilege, "object_type": kind, "object_id": object_id},
        audit={"kind": "authz.refused", "message": f"{user.username} refused: {privilege} on {where}", "username": user.username, "object_type": kind, "object_id": object_id, "reason": "FORBIDDEN"},
    )


# --- visibility for lists ---------------------------------------------------------------


class _Resolver:
    """Inherited decisions per tree node, memoized, for bulk visibility (one pass per list)."""

    def __init__(self, session: Session, grants: dict[Node, list[Grant]]):
        self.session = session
        self.grants = grants
        self.parents: dict[Node, list[Node]] = {ROOT: []}
        self.memo: dict[Node, tuple[frozenset[str], bool] | None] = {}
        self.loaded: set[str] = set()

    def load(self, kind: str) -> None:
        model = _MODELS[kind]
        if kind in self.loaded:
            return
        self.loaded.add(kind)
        # Plain columns, not ORM objects: tens of thousands of VMs load in tens of milliseconds.
        for row in self.session.execute(select(model.__table__)):
            self.parents[(kind, row.id)] = _parents_of_row(kind, row)

    def inherited(self, node: Node) -> tuple[frozenset[str], bool] | None:
        """What reaches ``node`` from above for its children: nearest propagating grants."""
        if node in self.memo:
            return self.memo[node]
        self.memo[node] = None  # a cycle (never expected) ends here
        here = [g for g in self.grants.get(node, []) if g.propagate]
        decided = privileges_on_path([here]) if here else None
        if decided is None:
            merged = [self.inherited(p) for p in self.parents.get(node, [])]
            decided = _merge(merged)
        self.memo[node] = decided
        return decided

    def effective(self, node: Node) -> frozenset[str]:
        own = privileges_on_path([self.grants.get(node, [])])
        if own is not None:
            return frozenset() if own[1] else own[0]
        merged = _merge([self.inherited(p) for p in self.parents.get(node, [])])
        return frozenset() if merged is None or merged[1] else merged[0]


def _merge(decisions: Iterable[tuple[frozenset[str], bool] | None]) -> tuple[frozenset[str], bool] | None:
    found = [d for d in decisions if d is not None]
    if not found:
        return None
    if any(no_access for _, no_access in found):
        return frozenset(), True
    return frozenset().union(*(p for p, _ in found)), False


_DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "datacenter": (),
    "folder": ("folder",),
    "cluster": (),
    "host": ("cluster",),
    "datastore": (),
    "portgroup": (),
    "pool": ("pool", "cluster"),
    "vm": ("folder", "pool", "cluster", "host"),
    "template": (),
}


def _visible_by_kind(session: Session, user: User, kinds: tuple[str, ...], privilege: str = VIEW, token: str | None = None) -> dict[str, set[int] | None]:
    """For each kind, the ids the user may see (None: all of them). The grants, the token's
    role and the inherited decisions are worked out once for all the kinds."""
    narrowed = token_role(session, token)
    if narrowed is not None and privilege not in role_privileges(narrowed):
        return {kind: set() for kind in kinds}
    if user.is_admin:
        return {kind: None for kind in kinds}
    grants = user_grants(session, user)
    if not grants:
        return {kind: set() for kind in kinds}
    if set(grants) == {ROOT}:  # the common case: one decision for the whole inventory
        decided = privileges_on_path([[g for g in grants[ROOT] if g.propagate]])
        everything = bool(decided) and not decided[1] and privilege in decided[0]
        return {kind: None if everything else set() for kind in kinds}
    resolver = _Resolver(session, grants)
    for kind in kinds:
        for dependency in ("datacenter", *_DEPENDS_ON.get(kind, ()), kind):
            if dependency in _MODELS:
                resolver.load(dependency)
    wanted = set(kinds)
    found: dict[str, set[int] | None] = {kind: set() for kind in kinds}
    for k, object_id in list(resolver.parents):
        if k in wanted and privilege in resolver.effective((k, object_id)):
            found[k].add(object_id)  # type: ignore[union-attr]
    return found


def visible_ids(session: Session, user: User, kind: str, privilege: str = VIEW, token: str | None = None) -> set[int] | None:
    """The ids of ``kind`` the user may see; None means all of them."""
    return _visible_by_kind(session, user, (kind,), privilege, token)[kind]


def visibility_clause(session: Session, user: User, kind: str, model: Any, token: str | None = None) -> Any:
    """A WHERE clause restricting ``model`` rows to the visible ones, None for no restriction.
    Hidden objects never count: the clause goes in before COUNT and OFFSET/LIMIT."""
    ids = visible_ids(session, user, kind, token=token)
    if ids is None:
        return None
    if not ids:
        return false()
    return model.id.in_(sorted(ids))


def event_visibility_clause(session: Session, user: User, model: Any, token: str | None = None) -> Any:
    """Tasks and events: visible when their object is visible (or, for rows without an
    inventory object, when the user started them: ``user_id``, never the name)."""
    if user.is_admin and token_role(session, token) is None:
        return None
    parts = [model.user_id == user.id]  # its own: by id, never by name (a user may be named like an actor)
    for kind, ids in _visible_by_kind(session, user, tuple(_MODELS), token=token).items():
        if ids is None:
            parts.append(model.object_type == kind)
        elif ids:
            parts.append(and_(model.object_type == kind, model.object_id.in_(sorted(ids))))
    return or_(*parts)


# --- holdings over the whole inventory (vcenter.services.access.delegation) -----------------------


def group_grants(session: Session, group_id: int) -> dict[Node, list[Grant]]:
    """The permissions of a group, as a member with no permission of its own holds them."""
    query = select(Permission, Role).join(Role, Role.id == Permission.role_id).where(Permission.principal_type == "group", Permission.principal_id == group_id)
    grants: dict[Node, list[Grant]] = {}
    for permission, role in session.execute(query):
        grants.setdefault((permission.object_type, permission.object_id), []).append(
            Grant(principal_is_user=False, privileges=role_privileges(role), no_access=role.builtin and role.name == NO_ACCESS, propagate=permission.propagate)
        )
    return grants


class InventoryTree:
    """Every inventory object with its parents, loaded once, and what given grants hold on
    each: for comparisons object by object over the whole inventory."""

    def __init__(self, session: Session):
        self.session = session
        self._parents: dict[Node, list[Node]] | None = None
        self._loaded: set[str] | None = None

    def _resolver(self, grants: dict[Node, list[Grant]]) -> _Resolver:
        resolver = _Resolver(self.session, grants)
        if self._parents is None:
            for kind in list(_MODELS):
                resolver.load(kind)
            self._parents, self._loaded = resolver.parents, resolver.loaded
        else:  # the tree is shared, only the memo of decisions is per grants
            resolver.parents, resolver.loaded = self._parents, self._loaded  # type: ignore[assignment]
        return resolver

    def nodes(self) -> list[Node]:
        """The root and every object that exists (a permission on a deleted object holds nothing)."""
        self._resolver({})
        return list(self._parents or {ROOT: []})

    def privileges_of(self, grants: dict[Node, list[Grant]]) -> Any:
        """node -> the privileges ``grants`` give there (as ``privileges`` decides for one)."""
        resolver = self._resolver(grants)
        return resolver.effective
