"""The permission merge rule: nearest permission wins on a path, a user's own over its
groups', union over a VM's two parent paths, "No access" wins."""

from vcenter.domain.privileges import (
    ADMINISTRATOR,
    BUILTIN_ROLES,
    PRIVILEGES,
    Grant,
    effective_privileges,
    privileges_on_path,
    unknown_privileges,
)

VIEW = frozenset({"System.View"})
POWER_ON = frozenset({"System.View", "VirtualMachine.PowerOn"})
POWER_OFF = frozenset({"System.View", "VirtualMachine.PowerOff"})


def g(privileges=VIEW, *, user=True, no_access=False, propagate=True) -> Grant:
    return Grant(principal_is_user=user, privileges=frozenset() if no_access else privileges, no_access=no_access, propagate=propagate)


def test_nearest_permission_on_a_path_overrides_an_inherited_one():
    # path: [vm, folder, datacenter, root]
    path = [[], [g(VIEW)], [], [g(BUILTIN_ROLES[ADMINISTRATOR])]]
    assert effective_privileges([path]) == VIEW


def test_non_propagating_permission_applies_only_on_its_object():
    path = [[], [g(POWER_ON, propagate=False)], [g(VIEW)]]
    assert effective_privileges([path]) == VIEW
    assert effective_privileges([[[g(POWER_ON, propagate=False)], [g(VIEW)]]]) == POWER_ON


def test_a_users_own_permission_overrides_its_groups_on_the_same_object():
    assert effective_privileges([[[g(VIEW, user=True), g(POWER_ON, user=False)]]]) == VIEW
    # groups alone: united
    assert effective_privileges([[[g(POWER_ON, user=False), g(POWER_OFF, user=False)]]]) == POWER_ON | POWER_OFF


def test_no_access_from_a_group_wins_over_other_groups_on_the_same_object():
    assert effective_privileges([[[g(POWER_ON, user=False), g(no_access=True, user=False)]]]) == frozenset()


def test_a_vm_with_two_parents_gets_the_union_of_both_paths():
    folder_path = [[], [g(POWER_ON)], []]
    pool_path = [[], [g(POWER_OFF)], [], []]
    assert effective_privileges([folder_path, pool_path]) == POWER_ON | POWER_OFF


def test_no_access_nearest_on_either_parent_path_wins():
    folder_path = [[], [g(POWER_ON)]]
    pool_path = [[], [g(no_access=True)], [g(BUILTIN_ROLES[ADMINISTRATOR])]]
    assert effective_privileges([folder_path, pool_path]) == frozenset()


def test_no_access_above_a_nearer_grant_does_not_win():
    # the more specific grant decides the path; the No access above it is overridden
    path = [[], [g(POWER_ON)], [g(no_access=True)]]
    assert effective_privileges([path]) == POWER_ON


def test_nothing_on_any_path_gives_nothing_and_superuser_gets_all():
    assert privileges_on_path([[], []]) is None
    assert effective_privileges([[[], []]]) == frozenset()
    assert effective_privileges([[[]]], is_superuser=True) == BUILTIN_ROLES[ADMINISTRATOR]


def test_catalog_and_builtin_roles():
    assert "System.Anonymous" not in BUILTIN_ROLES[ADMINISTRATOR]
    assert set(BUILTIN_ROLES[ADMINISTRATOR]) == set(PRIVILEGES) - {"System.Anonymous"}
    assert BUILTIN_ROLES["No access"] == frozenset()
    assert unknown_privileges(["System.View", "Bogus.Thing", "System.Anonymous"]) == ["Bogus.Thing", "System.Anonymous"]
