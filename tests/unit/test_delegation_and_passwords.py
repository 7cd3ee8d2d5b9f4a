"""The pure rules behind delegation (vcenter.domain.delegation) and the password policy
(vcenter.domain.passwords)."""

from __future__ import annotations

from vcenter.domain.delegation import ALL, ROOT, Holdings, administrator_equivalent, covers_cheaply, missing, role_is_administrator_equivalent
from vcenter.domain.passwords import password_weakness
from vcenter.domain.privileges import Grant

VIEW = frozenset({"System.View"})
OPS = frozenset({"System.View", "VirtualMachine.PowerOn"})


def _grant(privileges, propagate=True, no_access=False, user=True) -> Grant:
    return Grant(principal_is_user=user, privileges=frozenset(privileges), no_access=no_access, propagate=propagate)


def test_bound_and_floor():
    root_ops = Holdings(grants={ROOT: [_grant(OPS)]})
    assert root_ops.bound() == OPS and root_ops.floor() == OPS
    # a non-propagating root permission holds on the root only: nothing everywhere
    assert Holdings(grants={ROOT: [_grant(OPS, propagate=False)]}).floor() == frozenset()
    # a permission below the root: the floor needs the inventory
    assert Holdings(grants={("datacenter", 1): [_grant(OPS)]}).floor() is None
    assert Holdings().floor() == frozenset() and Holdings().bound() == frozenset()
    assert Holdings(everything=True, narrowed=VIEW).floor() == VIEW
    assert Holdings(grants={ROOT: [_grant(ALL)], ("vm", 3): [_grant((), no_access=True)]}).bound() == ALL


def test_cheap_cover_decides_the_common_cases_only():
    admin = Holdings(everything=True)
    root_ops = Holdings(grants={ROOT: [_grant(OPS)]})
    root_view = Holdings(grants={ROOT: [_grant(VIEW)]})
    assert covers_cheaply(root_ops, root_view) is True
    assert covers_cheaply(root_view, Holdings()) is True
    assert covers_cheaply(root_view, root_ops) is None  # maybe the target's PowerOn gives nothing: look object by object
    assert covers_cheaply(root_ops, admin) is False
    assert covers_cheaply(admin, admin) is True
    assert covers_cheaply(Holdings(everything=True, narrowed=OPS), root_ops) is True


def test_administrator_equivalence():
    assert administrator_equivalent(Holdings(everything=True))
    assert administrator_equivalent(Holdings(grants={ROOT: [_grant(ALL, user=False)]}))
    assert not administrator_equivalent(Holdings(grants={ROOT: [_grant(ALL, propagate=False)]}))
    assert not administrator_equivalent(Holdings(grants={("datacenter", 1): [_grant(ALL)]}))
    assert not administrator_equivalent(Holdings(grants={ROOT: [_grant(ALL - {"Alarm.Create"})]}))
    assert role_is_administrator_equivalent(ALL) and not role_is_administrator_equivalent(OPS)


def test_missing_is_per_object():
    actor = {ROOT: OPS, ("datacenter", 1): frozenset()}
    target = {ROOT: VIEW, ("datacenter", 1): VIEW}
    assert missing(actor, actor.__getitem__, target.__getitem__) == {("datacenter", 1): VIEW}


def test_password_weakness():
    common = {"password", "12345678", "qwerty123456"}
    check = lambda p, **kw: password_weakness(p, min_length=12, common=common, **kw)  # noqa: E731
    assert check("12345678") == "too_short"
    assert check("Password2024!") == "common" and check("QWERTY123456") == "common"
    assert check("passwordpassword") == "repeated" and check("zzzzzzzzzzzzzz") == "repeated"
    assert check("Opsteam-Lead1", username="opsteam-lead1") == "user_name"
    assert check("tangerine-kayak-orbit") is None and check("opsteam-lead1-pass", username="opsteam-lead1") is None
    assert password_weakness("12345678", min_length=8, common=common) == "common"
