"""Delegation never escalates: what an actor may change about another principal.

Vocabulary:
- holdings: what a principal (user or group) holds — every privilege everywhere (an
  administrator, ``everything``), or what its permissions give (``grants`` by object, merged
  by vcenter.domain.privileges), narrowed to a token's role when the actor uses an API token.
- cover: the actor covers a target when, on every object, it holds every privilege the target
  holds there. Changing a user's password, enabled state or group membership, a group's
  members, a role's privileges, or a permission needs the actor to cover every principal the
  change touches, as it is before and as it would be after.
- administrator-equivalent: an administrator (``users.is_admin``), or a principal holding a role
  with every privilege of the built-in Administrator role on the inventory root. Only an
  administrator (not narrowed by a token) changes one, or a role that grants that much.

The check is cheap in the common cases (``bound`` of the target within the actor's ``floor``);
otherwise the caller compares object by object over the whole inventory (``missing``).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vcenter.domain.privileges import ADMINISTRATOR, BUILTIN_ROLES, Grant, privileges_on_path

Node = tuple[str, int]
ROOT: Node = ("root", 0)
ALL: frozenset[str] = BUILTIN_ROLES[ADMINISTRATOR]


@dataclass(frozen=True)
class Holdings:
    everything: bool = False
    grants: Mapping[Node, Sequence[Grant]] = field(default_factory=dict)
    narrowed: frozenset[str] | None = None  # an API token's role

    def _narrow(self, privileges: frozenset[str]) -> frozenset[str]:
        return privileges & self.narrowed if self.narrowed is not None else privileges

    def bound(self) -> frozenset[str]:
        """Every privilege held on some object (an upper bound of any one object's)."""
        if self.everything:
            return self._narrow(ALL)
        return self._narrow(frozenset().union(*(g.privileges for gs in self.grants.values() for g in gs if not g.no_access)))

    def floor(self) -> frozenset[str] | None:
        """The privileges held on every object, when that is known without the inventory
        (an administrator, nothing at all, or permissions on the root only); else None."""
        if self.everything:
            return self._narrow(ALL)
        if not self.grants:
            return frozenset()
        if set(self.grants) != {ROOT}:
            return None
        at_root = privileges_on_path([self.grants[ROOT]])
        below = privileges_on_path([[], self.grants[ROOT]])  # what propagates to every child
        if at_root is None or below is None or at_root[1] or below[1]:
            return frozenset()
        return self._narrow(at_root[0] & below[0])


def role_is_administrator_equivalent(privileges: Iterable[str]) -> bool:
    return ALL <= frozenset(privileges)


def administrator_equivalent(holdings: Holdings) -> bool:
    """An administrator, or Administrator's privileges on the root reaching every object."""
    if holdings.everything:
        return True
    root = holdings.grants.get(ROOT)
    if not root:
        return False
    below = privileges_on_path([[], root])
    return below is not None and not below[1] and ALL <= below[0]


def covers_cheaply(actor: Holdings, target: Holdings) -> bool | None:
    """True when the actor surely covers the target, False when it surely does not (an
    administrator target, a non-administrator actor), None when only an object-by-object
    comparison can tell."""
    needed = target.bound()
    if not needed:
        return True
    if target.everything:
        return actor.floor() is not None and needed <= actor.floor()  # type: ignore[operator]
    floor = actor.floor()
    if floor is not None and needed <= floor:
        return True
    # Not "False" when the actor holds some of it nowhere: the target's permission may give
    # nothing (on an object since deleted, or under a No access).
    return None


def missing(nodes: Iterable[Node], actor_at: Callable[[Node], frozenset[str]], target_at: Callable[[Node], frozenset[str]]) -> dict[Node, frozenset[str]]:
    """Per object, the privileges the target holds there and the actor does not."""
    found: dict[Node, frozenset[str]] = {}
    for node in nodes:
        held = target_at(node)
        if held:
            lacking = held - actor_at(node)
            if lacking:
                found[node] = lacking
    return found
