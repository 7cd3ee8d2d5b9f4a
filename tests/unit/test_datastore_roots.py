"""A datastore lives only below a configured root: the pure rule (vcenter.domain.datastore_roots)
and the agent's own check with symlinks resolved on disk (workers.agent.datastore_guard)."""

import os

import pytest

from vcenter.core.settings import DEFAULT_DATASTORE_ROOTS, Settings
from vcenter.services.tasks.runtime import Runtime
from vcenter.domain.datastore_roots import CODE, DatastorePathRefused, check_datastore_path, check_root, parse_roots
from vcenter.hypervisor.base import DriverError
from workers.agent import datastore_guard

ROOTS = parse_roots(DEFAULT_DATASTORE_ROOTS)


@pytest.mark.parametrize(
    "path,normal",
    [
        ("/srv/ds1", "/srv/ds1"),
        ("/srv/ds1/", "/srv/ds1"),  # trailing slash
        ("/srv//ds1///", "/srv/ds1"),
        ("/srv/./ds1", "/srv/ds1"),
        ("/mnt/nfs/shared", "/mnt/nfs/shared"),
        ("/var/lib/virtcenter/datastores/local1", "/var/lib/virtcenter/datastores/local1"),
        ("/srv/..hidden", "/srv/..hidden"),  # dots inside a name are a name
    ],
)
def test_folders_below_a_root_are_accepted_in_normal_form(path, normal):
    assert check_datastore_path(path, ROOTS) == normal


@pytest.mark.parametrize(
    "path,reason",
    [
        ("/etc", "system_folder"),
        ("/etc/", "system_folder"),
        ("/etc/ssh", "system_folder"),
        ("/", "filesystem_root"),
        ("//", "filesystem_root"),
        ("/.", "filesystem_root"),
        ("/root", "system_folder"),
        ("/root/.ssh", "system_folder"),
        ("/proc/self", "system_folder"),
        ("/proc/1/root", "system_folder"),
        ("/sys/kernel", "system_folder"),
        ("/dev/shm", "system_folder"),
        ("/srv/../etc", "parent_reference"),
        ("/srv/ds1/..", "parent_reference"),
        ("/srv/a/../../etc", "parent_reference"),
        ("/srv", "is_a_root"),  # a root itself is not a datastore
        ("/srv/", "is_a_root"),
        ("/mnt", "is_a_root"),
        ("/srv2/ds1", "outside_roots"),  # prefix trick: /srv2 is not below /srv
        ("/srvx", "outside_roots"),
        ("/mnt2", "outside_roots"),
        ("/var/lib/virtcenter/datastores2/x", "outside_roots"),
        ("/var/lib/virtcenter", "outside_roots"),
        ("/tmp/ds", "outside_roots"),
        ("/home/user", "outside_roots"),
        ("srv/ds1", "not_absolute"),
        ("", "invalid"),
        ("/srv/ds\x00", "invalid"),
        ("/srv/ds\n1", "invalid"),
        ("/srv\\..\\etc", "invalid"),
    ],
)
def test_everything_else_is_refused_with_a_reason(path, reason):
    with pytest.raises(DatastorePathRefused) as refused:
        check_datastore_path(path, ROOTS)
    assert refused.value.reason == reason and refused.value.code == CODE == "DATASTORE_PATH_NOT_ALLOWED"


def test_system_folders_are_refused_even_below_a_configured_root():
    # A root cannot be a system folder (below), and a path in one is refused whatever the roots.
    for bad in ("/", "/etc", "/etc/virtcenter", "/proc", "/root/ds", "//", "/srv/../etc"):
        with pytest.raises(DatastorePathRefused):
            check_root(bad)
    with pytest.raises(DatastorePathRefused) as refused:
        check_datastore_path("/etc/x", ("/etc",))
    assert refused.value.reason == "system_folder"


def test_protected_folders_are_never_a_datastore_nor_inside_or_around_one():
    roots = ("/var/lib/virtcenter",)
    for path in ("/var/lib/virtcenter/agent", "/var/lib/virtcenter/agent/x"):
        with pytest.raises(DatastorePathRefused) as refused:
            check_datastore_path(path, roots, protected=("/var/lib/virtcenter/agent/",))
        assert refused.value.reason == "protected_folder"
    with pytest.raises(DatastorePathRefused):  # a datastore holding the state folder
        check_datastore_path("/var/lib/virtcenter/a", roots, protected=("/var/lib/virtcenter/a/agent",))
    assert check_datastore_path("/var/lib/virtcenter/agent2", roots, protected=("/var/lib/virtcenter/agent",)) == "/var/lib/virtcenter/agent2"


def test_roots_setting_is_parsed_and_checked_at_start():
    assert parse_roots("/srv/, /mnt//x,,/srv") == ("/srv", "/mnt/x")
    assert Settings().agent_datastore_roots == Settings().datastore_roots == DEFAULT_DATASTORE_ROOTS == "/var/lib/virtcenter/datastores,/srv,/mnt"
    assert parse_roots(DEFAULT_DATASTORE_ROOTS) == ("/var/lib/virtcenter/datastores", "/srv", "/mnt")
    for bad in ("/", "/etc", "/srv,/proc/self", "relative"):
        with pytest.raises(ValueError):
            parse_roots(bad)
        # The server's runtime refuses to start on such a root (the agent's service likewise).
        with pytest.raises(ValueError):
            Runtime.build(Settings(datastore_roots=bad))


# --- the agent: paths resolved on its host --------------------------------------------------


def _agent_settings(tmp_path):
    root = tmp_path / "roots"
    root.mkdir()
    return Settings(agent_datastore_roots=str(root), agent_state_dir=str(root / "agent-state")), root


def test_agent_refuses_a_symlink_out_of_its_roots(tmp_path):
    settings, root = _agent_settings(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "etc").symlink_to("/etc")
    (root / "inner").mkdir()
    (root / "alias").symlink_to(root / "inner")  # a symlink that stays inside is fine
    assert datastore_guard.check_path(settings, str(root / "inner")) == str(root / "inner")
    assert datastore_guard.check_path(settings, str(root / "alias")) == str(root / "alias")
    for path in (root / "escape", root / "escape" / "disk.qcow2", root / "etc", root / "etc" / "passwd", outside):
        with pytest.raises(DriverError) as refused:
            datastore_guard.check_path(settings, str(path))
        assert refused.value.code == "DATASTORE_PATH_NOT_ALLOWED"
    with pytest.raises(DriverError):  # its own state folder (credential, key) is no datastore
        datastore_guard.check_path(settings, str(root / "agent-state"))


def test_agent_root_that_is_a_symlink_keeps_working(tmp_path):
    real = tmp_path / "real-srv"
    (real / "ds1").mkdir(parents=True)
    link = tmp_path / "srv"
    link.symlink_to(real)
    settings = Settings(agent_datastore_roots=str(link), agent_state_dir=str(tmp_path / "state"))
    assert datastore_guard.check_path(settings, str(link / "ds1")) == str(link / "ds1")
    assert os.path.realpath(link / "ds1") == str(real / "ds1")


def test_agent_finds_every_path_a_command_names(tmp_path):
    settings, root = _agent_settings(tmp_path)
    ds = str(root / "ds1")
    good = {
        "spec": {"disks": [{"datastore_path": ds, "file": "vm-disk0.qcow2"}]},
        "moves": [{"from": f"{ds}/a", "to": f"{ds}/b"}],
        "disks": [f"{ds}/a"],
        "path": "images/x.vmdk",
        "dir": "templates/t1",
        "options": {"dest_disk_paths": {"vda": f"{ds}/c"}},
    }
    datastore_guard.check_command(settings, "vm.any", good)
    bad = [
        {"spec": {"disks": [{"datastore_path": "/etc", "file": "passwd"}]}},
        {"spec": {"disks": [{"datastore_path": ds, "file": "../../../etc/passwd"}]}},
        {"spec": {"disks": [{"datastore_path": ds, "file": "/etc/passwd"}]}},
        {"datastore_path": "/", "path": ""},
        {"datastore_path": ds, "path": "../.."},
        {"datastore_path": ds, "dir": "../../etc"},
        {"moves": [{"from": f"{ds}/a", "to": "/etc/cron.d/x"}]},
        {"remove": ["/root/.ssh/authorized_keys"]},
        {"paths": [f"{ds}/../../x"]},
        {"disks": ["/proc/self/mem"]},
        {"delete_after": ["/etc/shadow"]},
        {"workdir": "/tmp/export"},
        {"dest": "relative/disk.qcow2"},
        {"seed": {"path": "/etc/seed.iso"}},
        {"clones": [{"source": "/etc/shadow", "dest": f"{ds}/x"}]},
        {"options": {"dest_disk_paths": {"vda": "/etc/x"}}},
    ]
    for args in bad:
        with pytest.raises(DriverError) as refused:
            datastore_guard.check_command(settings, "vm.any", args)
        assert refused.value.code == "DATASTORE_PATH_NOT_ALLOWED", args
