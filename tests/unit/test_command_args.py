"""Typed command arguments (vcenter.messaging.contracts): the dict a model builds is the one
the agent reads (same keys, same order, same JSON values), and it reads back into the model."""

from __future__ import annotations

from vcenter.messaging.contracts import (
    CreateArgs,
    DeployArgs,
    DiskSpec,
    MigrateArgs,
    MigrationOptions,
    OfflineCopyArgs,
    OfflineDefineArgs,
    OfflineDiscardArgs,
    OfflineFinishArgs,
    RelocateArgs,
    VmSpec,
)

MOVE = {"index": 1, "target": "vdb", "format": "qcow2", "from": "/old/web-disk1.qcow2", "to": "/new/web-disk1.qcow2", "datastore_id": 7}
OPTIONS = MigrationOptions(dest_uri="qemu+tcp://10.0.0.2/system", max_downtime_ms=300, auto_converge=True)


def test_migrate_args_are_the_uuid_and_the_options():
    args = MigrateArgs(uuid="u-1", options=OPTIONS).args()
    assert args == {"uuid": "u-1", "options": OPTIONS.model_dump(mode="json")}
    assert list(args) == ["uuid", "options"]
    assert MigrateArgs.model_validate(args).options == OPTIONS


def test_relocate_args_on_the_vms_host_carry_no_migration():
    args = RelocateArgs(uuid="u-1", moves=[MOVE], running=False).args()
    assert args == {"uuid": "u-1", "moves": [MOVE], "running": False}
    assert list(args["moves"][0]) == list(MOVE)  # "from", not the model's from_
    assert RelocateArgs.model_validate(args).moves[0].from_ == MOVE["from"]


def test_relocate_args_to_another_host_carry_the_migration_options():
    args = RelocateArgs(uuid="u-1", moves=[MOVE], running=True, migrate=OPTIONS.model_copy(update={"copy_storage": True})).args()
    assert list(args) == ["uuid", "moves", "running", "migrate"]
    assert args["migrate"]["copy_storage"] is True and args["migrate"]["bandwidth_mibps"] is None  # options keep their nulls


def test_offline_steps_name_their_step_first():
    spec = VmSpec(name="web", uuid="u-1", vcpus=1, memory_mib=256, disks=[DiskSpec(index=0, datastore_id=1, datastore_path="/ds", file="web.qcow2", capacity_mib=64, format="qcow2")])
    assert OfflineCopyArgs(uuid="u-1", copies=[{"from": "/a", "to": "/b", "format": "qcow2"}]).args() == {
        "offline_step": "copy",
        "uuid": "u-1",
        "copies": [{"from": "/a", "to": "/b", "format": "qcow2"}],
    }
    assert OfflineDefineArgs(spec=spec).args() == {"offline_step": "define", "spec": spec.model_dump(mode="json")}
    assert OfflineFinishArgs(uuid="u-1", remove=["/a"]).args() == {"offline_step": "finish", "uuid": "u-1", "remove": ["/a"]}
    # Discarding copies only (nothing defined on the target): the uuid is sent as null.
    assert OfflineDiscardArgs(uuid=None, paths=["/b"]).args() == {"offline_step": "discard", "uuid": None, "paths": ["/b"]}


def _spec() -> VmSpec:
    return VmSpec(name="web", uuid="u-1", vcpus=1, memory_mib=256, disks=[DiskSpec(index=0, datastore_id=1, datastore_path="/ds", file="web.qcow2", capacity_mib=64, format="qcow2")])


def test_create_and_deploy_args_carry_the_spec_as_json():
    spec = _spec()
    assert CreateArgs(spec=spec).args() == {"spec": spec.model_dump(mode="json")}
    # A clone as services.templates.deploy builds it (every key always present).
    clones = [{"index": 0, "mode": "linked", "source": "/t/base.qcow2", "source_format": "qcow2", "dest": "/ds/web-disk0.qcow2"}]
    args = DeployArgs(spec=spec, clones=clones, mode="linked", seed={"path": "/ds/web-seed.iso"}).args()
    assert args == {"spec": spec.model_dump(mode="json"), "clones": clones, "mode": "linked", "seed": {"path": "/ds/web-seed.iso"}}
    assert list(args) == ["spec", "clones", "mode", "seed"]
