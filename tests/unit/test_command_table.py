"""The command table (vcenter.messaging.commands.COMMANDS): every command the agent can execute
has an arguments model; each model reads the dict the server sent before the models existed
(the hand-built shapes below, copied from the builders they replaced) and writes back exactly
that dict, so the signed payload is the same; an optional key left out stays out and the
agent reads the default it used to read."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from vcenter.messaging.commands import (
    COMMANDS,
    BrowseArgs,
    CaptureArgs,
    DeleteArgs,
    GuestArgs,
    ImportDiskArgs,
    RestoreArgs,
    ShutdownArgs,
    SnapshotCreateArgs,
    SnapshotDeleteArgs,
    UnknownRelocationStep,
    UuidArgs,
    args_model,
    parse_args,
    parse_result,
    unmodelled,
)
from vcenter.messaging.results import BackupResult, CpuBaselineResult, NoPayload, SnapshotCreated, SnapshotsDeleted
from vcenter.messaging.contracts import CommandName, OfflineCopyArgs, OfflineDiscardArgs, RelocateArgs
from vcenter.messaging.signing import canonical_json

U = "6b1f7f0e-4c4e-4a53-9f59-5b8f6d1d2a11"
SPEC = {
    "name": "web",
    "uuid": U,
    "vcpus": 1,
    "memory_mib": 256,
    "guest_os": "other",
    "disks": [{"index": 0, "datastore_id": 1, "datastore_path": "/ds", "file": "web.qcow2", "capacity_mib": 64, "format": "qcow2", "bus": "virtio"}],
    "nics": [],
    "image": None,
    "guest_ip": None,
    "kernel": None,
    "initrd": None,
    "cmdline": None,
    "cpu": None,
    "resources": None,
}
UPLOAD = {"id": 4, "sha256": "ab" * 32, "size_bytes": 1024}
OPTIONS = {
    "dest_uri": "qemu+tcp://10.0.0.2/system",
    "dest_address": None,
    "max_downtime_ms": None,
    "bandwidth_mibps": None,
    "auto_converge": False,
    "postcopy": False,
    "postcopy_after_iterations": 3,
    "tls": False,
    "unsafe": False,
    "copy_storage": False,
    "copy_disks": None,
    "dest_disk_paths": None,
}
MOVE = {"index": 1, "target": "vdb", "format": "qcow2", "from": "/old/d1.qcow2", "to": "/new/d1.qcow2", "datastore_id": 7}

# (command name, args as the server built them by hand). Several shapes per name where the
# builder had several.
SENT: list[tuple[str, dict[str, typing.Any]]] = [
    ("vm.create", {"spec": SPEC}),
    ("vm.start", {"uuid": U}),
    ("vm.stop", {"uuid": U}),
    ("vm.reset", {"uuid": U}),
    ("vm.suspend", {"uuid": U}),
    ("vm.resume", {"uuid": U}),
    ("vm.shutdown", {"uuid": U, "timeout": 120}),
    ("vm.shutdown", {"uuid": U, "timeout": 2.5}),
    ("vm.ha_start", {"spec": SPEC}),
    ("vm.reconfigure", {"uuid": U, "vcpus": 2, "memory_mib": None}),
    ("vm.delete", {"uuid": U, "disks": ["/ds/web.qcow2"]}),
    ("vm.guest", {"uuid": U, "line": "hostname", "timeout": 10.0}),
    ("vm.migrate", {"uuid": U, "options": OPTIONS}),
    ("vm.relocate", {"uuid": U, "moves": [MOVE], "running": False}),
    ("vm.relocate", {"uuid": U, "moves": [MOVE], "running": True, "migrate": {**OPTIONS, "copy_storage": True}}),
    ("vm.relocate", {"offline_step": "copy", "uuid": U, "copies": [{"from": "/a/x.qcow2", "to": "/b/x.qcow2", "format": "qcow2"}]}),
    ("vm.relocate", {"offline_step": "define", "spec": SPEC}),
    ("vm.relocate", {"offline_step": "finish", "uuid": U, "remove": ["/a/x.qcow2"]}),
    ("vm.relocate", {"offline_step": "discard", "uuid": None, "paths": ["/b/x.qcow2"]}),
    ("host.cpu_baseline", {"cpu_xmls": ["<cpu/>", "<cpu/>"]}),
    ("host.cpu_compare", {"cpu": {"model": "Haswell", "features_disable": ["avx2"]}}),
    ("host.refresh", {}),
    ("vm.snapshot.create", {"uuid": U, "name": "s1", "description": ""}),
    ("vm.snapshot.revert", {"uuid": U, "name": "s1"}),
    ("vm.snapshot.delete", {"uuid": U, "name": "s1", "children": True}),
    ("vm.clone", {"uuid": U, "linked": True, "disks": [{"target": "vda", "path": "/ds/c.qcow2", "base_path": "/ds/base.qcow2"}]}),
    ("vm.clone", {"uuid": U, "linked": False, "disks": [{"target": "vda", "path": "/ds/c.qcow2", "base_path": None}]}),
    ("vm.promote", {"uuid": U}),
    ("vm.backup", {"uuid": U, "disks": [{"target": "vda", "path": "/bk/p2.qcow2", "parent_path": "/bk/p1.qcow2"}], "incremental_from": "vc-backup-1", "checkpoint": "vc-backup-2", "delete_after": []}),
    ("vm.backup", {"uuid": U, "disks": [{"target": "vda", "path": "/bk/p1.qcow2", "parent_path": None}], "incremental_from": None, "checkpoint": "vc-backup-1", "delete_after": ["/bk/p0.qcow2"]}),
    ("vm.restore", {"disks": [{"source": "/bk/p1.qcow2", "path": "/ds/web.qcow2", "format": "qcow2"}], "replace_uuid": U}),
    ("vm.restore", {"disks": [{"source": "/bk/p1.qcow2", "path": "/ds/new.qcow2", "format": "qcow2"}], "spec": SPEC, "seed": {"path": "/ds/new-seed.iso"}}),
    (
        "template.capture",
        {
            "uuid": U,
            "datastore_path": "/ds",
            "dir": "templates/t-v1-3",
            "meta": {
                "template_id": 3,
                "name": "t",
                "version": 1,
                "guest_os": "other",
                "hardware": {"vcpus": 1, "memory_mib": 256, "nics": 1, "boot": None},
                "origin": {"kind": "vm", "vm_id": 9, "vm_name": "web", "at": "2026-01-01T00:00:00+00:00"},
            },
            "disks": [{"index": 0, "file": "web.qcow2", "format": "qcow2"}],
            "seed_files": [],
        },
    ),
    ("template.release", {"spec": SPEC, "moves": [{"from": "/ds/templates/t/disk0.qcow2", "to": "/ds/web.qcow2"}], "datastore_path": "/ds", "dir": "templates/t"}),
    ("template.delete", {"datastore_path": "/ds", "dir": "templates/t"}),
    ("template.verify", {"datastore_path": "/ds", "dir": "templates/t", "disks": [{"file": "disk0.qcow2", "sha256": "cd" * 32}]}),
    ("datastore.browse", {"datastore_path": "/ds", "path": "isos"}),
    (
        "vm.deploy",
        {
            "spec": SPEC,
            "clones": [{"index": 0, "mode": "linked", "source": "/ds/templates/t/disk0.qcow2", "source_format": "qcow2", "dest": "/ds/web.qcow2"}],
            "mode": "linked",
            "seed": {"path": "/ds/web-seed.iso"},
        },
    ),
    ("vm.deploy", {"spec": SPEC, "clones": [], "mode": "clone", "seed": {"path": "/ds/web-seed.iso"}}),
    ("vm.import_disk", {"spec": SPEC, "dest": "/ds/web.qcow2", "format": None, "upload": UPLOAD}),
    ("vm.import_disk", {"spec": SPEC, "dest": "/ds/web.qcow2", "format": "vmdk", "path": "in/a.vmdk", "source_datastore_path": "/ds2"}),
    ("vm.import_ova", {"spec": SPEC, "upload": UPLOAD, "disks": [{"index": 0, "member": "disk1.vmdk", "dest": "/ds/web.qcow2"}]}),
    (
        "vm.export",
        {
            "uuid": U,
            "name": "web",
            "hardware": {"vcpus": 1, "memory_mib": 256, "guest_os": "other", "nics": 1},
            "disks": [{"path": "/ds/web.qcow2", "format": "qcow2"}],
            "upload_id": 5,
            "workdir": "/ds/.exports/5",
        },
    ),
    (
        "vm.export",
        {
            "uuid": None,
            "name": "t-v1",
            "hardware": {"vcpus": 1, "memory_mib": 256, "guest_os": "other", "nics": 0},
            "disks": [{"path": "/ds/templates/t/disk0.qcow2", "format": "qcow2"}],
            "upload_id": 6,
            "workdir": "/ds/.exports/6",
        },
    ),
    ("console.open", {"uuid": U}),
]


def test_every_command_name_has_a_row_and_the_table_names_no_other():
    names = typing.get_args(CommandName)
    assert unmodelled(names) == []
    assert sorted(COMMANDS) == sorted(names)


def test_every_command_the_agent_executes_has_a_model():
    from workers.agent import commands

    assert unmodelled(tuple(commands.HANDLERS)) == []


def test_every_row_has_a_sample_of_what_the_server_sends():
    assert sorted({name for name, _ in SENT}) == sorted(COMMANDS)


@pytest.mark.parametrize(("name", "sent"), SENT, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SENT)])
def test_a_model_writes_back_the_dict_it_read(name, sent):
    model = parse_args(name, sent)
    assert model.args() == sent
    assert list(model.args()) == list(sent)  # the builder's order too
    assert canonical_json(model.args()) == canonical_json(sent)  # what the signature covers
    assert type(model).model_validate(model.args()) == model


def test_relocate_picks_its_step_model_by_offline_step():
    assert args_model("vm.relocate", {"uuid": U, "moves": [], "running": False}) is RelocateArgs
    assert args_model("vm.relocate", {"offline_step": "copy"}) is OfflineCopyArgs
    assert args_model("vm.relocate", {"offline_step": "discard"}) is OfflineDiscardArgs
    with pytest.raises(UnknownRelocationStep, match="unknown relocation step 'teleport'"):
        args_model("vm.relocate", {"offline_step": "teleport"})


def test_a_key_the_server_leaves_out_stays_out_and_reads_as_the_old_default():
    assert ShutdownArgs(uuid=U).args() == {"uuid": U}
    assert ShutdownArgs.model_validate({"uuid": U}).timeout == 120
    assert GuestArgs.model_validate({"uuid": U, "line": "x"}).timeout == 10
    assert BrowseArgs(datastore_path="/ds").args() == {"datastore_path": "/ds"}
    browse = BrowseArgs.model_validate({"datastore_path": "/ds"})
    assert (browse.path, browse.limit) == ("", 1000)
    assert SnapshotCreateArgs.model_validate({"uuid": U, "name": "s"}).description == ""
    assert SnapshotDeleteArgs.model_validate({"uuid": U, "name": "s"}).children is False
    assert DeleteArgs.model_validate({"uuid": U}).disks == []
    assert RestoreArgs(disks=[], replace_uuid=U).args() == {"disks": [], "replace_uuid": U}
    assert ImportDiskArgs(spec=SPEC, dest="/d", format=None, upload=UPLOAD).args() == {"spec": SPEC, "dest": "/d", "format": None, "upload": UPLOAD}
    assert CaptureArgs.model_validate({**dict(SENT)["template.capture"], "seed_files": []}).seed_files == []


def test_numbers_keep_their_json_type():
    assert ShutdownArgs(uuid=U, timeout=120).args()["timeout"] == 120
    assert canonical_json(ShutdownArgs(uuid=U, timeout=120).args()) == canonical_json({"uuid": U, "timeout": 120})
    assert isinstance(ShutdownArgs(uuid=U, timeout=2.5).args()["timeout"], float)


def test_an_unknown_key_or_a_missing_one_is_refused():
    with pytest.raises(ValidationError):
        UuidArgs.model_validate({"uuid": U, "password": "x"})
    with pytest.raises(ValidationError):
        parse_args("vm.backup", {"uuid": U, "disks": []})  # no checkpoint


def test_a_domain_uuid_is_read_from_the_args_or_their_spec():
    assert parse_args("vm.start", {"uuid": U}).domain_uuid() == U
    assert parse_args("vm.create", {"spec": SPEC}).domain_uuid() == U
    assert parse_args("template.delete", {"datastore_path": "/ds", "dir": "templates/t"}).domain_uuid() is None


def test_results_read_their_fields_and_keep_the_rest():
    created = parse_result(
        "vm.snapshot.create", {"name": "s1", "parent": None, "description": "", "state": "running", "memory": True, "created": "2026-01-01T00:00:00+00:00", "current": True, "checkpoints_dropped": []}
    )
    assert isinstance(created, SnapshotCreated) and created.memory and created.current is True  # a field now; extras: test_command_results
    deleted = parse_result("vm.snapshot.delete", {"deleted": [], "already_done": True})
    assert isinstance(deleted, SnapshotsDeleted) and deleted.deleted == [] and deleted.checkpoints_dropped is None
    backup = parse_result("vm.backup", {"kind": "full", "checkpoint": "c", "files": {"vda": 1024}, "running": True, "retention_removed": []})
    assert isinstance(backup, BackupResult) and backup.files == {"vda": 1024}
    baseline = parse_result("host.cpu_baseline", {"xml": "<cpu/>", "model": "Haswell", "features": ["sse"]})
    assert isinstance(baseline, CpuBaselineResult) and baseline.model_features == []
    # A command whose result carries nothing says so in its row (it raised KeyError before
    # every row had a result model).
    assert isinstance(parse_result("vm.start", {}), NoPayload)


def test_every_result_model_reads_an_empty_failure_result_or_names_what_success_needs():
    # A failed report carries {}; handlers that read a result before looking at ``ok`` need a
    # model that accepts it (backups do).
    assert BackupResult.model_validate({}).kind is None


def test_the_snapshot_operations_read_the_result_model_of_their_command():
    from vcenter.services.operations import REGISTRY

    for kind in ("vm.snapshot.create", "vm.snapshot.revert", "vm.snapshot.delete", "vm.promote"):
        assert getattr(REGISTRY[kind], "result_model") is COMMANDS[kind].result
