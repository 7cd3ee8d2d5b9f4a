"""The result of every agent command has a model (vcenter.messaging.results, named in the
command table): the dict an agent sent before the models existed (the samples below, copied
from the agent's and the libvirt driver's hand-built dicts) reads into that model and is
written back unchanged, key order included; an older agent's result without a newer key still
parses, a newer agent's extra key is kept; and the agent's handlers build through the models
the dicts they used to build by hand."""

from __future__ import annotations

import os
import typing
from types import SimpleNamespace

import pytest

from vcenter.core.clock import utcnow
from vcenter.messaging.commands import COMMANDS, BackupArgs, DeleteArgs, HaStartArgs, SnapshotCreateArgs, parse_result
from vcenter.messaging.contracts import Command, DomainState, MigrationOptions, MigrationProgress, OfflineDiscardArgs, OfflineFinishArgs, RelocateArgs
from vcenter.messaging.results import BackupResult, MigrateResult, MigrationStats, NoPayload, RelocateResult, RestoreResult, Result
from vcenter.messaging.signing import canonical_json
from workers.agent import commands, relocation, vmdata
from workers.agent.command_context import CURRENT_COMMAND
from tests.conftest import make_settings

U = "6b1f7f0e-4c4e-4a53-9f59-5b8f6d1d2a11"
STATS = {**MigrationProgress(phase="completed", data_total=100, data_processed=100, data_remaining=0, downtime_ms=42).model_dump(mode="json"), "call_ms": 812.4}
MANIFEST = {"format": 1, "template_id": 3, "name": "t", "version": 1, "disks": [{"index": 0, "file": "disk0.qcow2", "sha256": "ab" * 32}]}

# (command name, a result as the agent sent it). Several shapes per name where it had several.
RESULTS: list[tuple[str, dict[str, typing.Any]]] = [
    ("vm.create", {"disks": ["/ds/web.qcow2"]}),
    ("vm.create", {"already_defined": True}),
    ("vm.start", {}),
    ("vm.stop", {}),
    ("vm.shutdown", {}),
    ("vm.reset", {}),
    ("vm.suspend", {}),
    ("vm.resume", {}),
    ("vm.reconfigure", {}),
    ("vm.ha_start", {"defined": True}),
    ("vm.ha_start", {"already_running": True, "defined": False}),
    ("vm.delete", {"deleted_disks": ["/ds/web.qcow2"]}),
    ("vm.guest", {"reply": {"ok": True, "out": "web1"}}),
    ("vm.migrate", {"stats": STATS}),
    ("vm.relocate", {"moved": ["/ds2/web.qcow2"], "removed": ["/ds/web.qcow2"]}),
    ("vm.relocate", {"stats": STATS, "moved": ["/ds2/web.qcow2"], "removed": []}),
    ("vm.relocate", {"copied": ["/ds2/web.qcow2"], "bytes": 67108864, "elapsed_ms": 1200}),
    ("vm.relocate", {"already_defined": True}),
    ("vm.relocate", {"defined": True}),
    ("vm.relocate", {"removed": ["/ds/web.qcow2"], "not_removed": ["/ds/x.qcow2: Permission denied"]}),
    ("vm.relocate", {"removed": []}),
    ("host.cpu_baseline", {"xml": "<cpu><model>Haswell</model></cpu>", "model": "Haswell", "model_features": ["vmx"], "features": ["sse", "vmx"]}),
    ("host.cpu_compare", {"compatible": False, "detail": "Host CPU does not provide required features: avx2"}),
    ("host.refresh", {}),
    (
        "vm.snapshot.create",
        {"name": "s1", "parent": None, "description": "", "state": "running", "memory": True, "created": "2026-01-01T00:00:00+00:00", "current": True, "checkpoints_dropped": []},
    ),
    ("vm.snapshot.create", {"name": "s1", "parent": "s0", "description": "d", "state": "shutoff", "memory": False, "created": "2026-01-01T00:00:00+00:00", "current": False, "already_done": True}),
    ("vm.snapshot.revert", {"reverted_to": "s1", "checkpoints_dropped": ["vc-backup-1", "vc-backup-1 (bitmap)"]}),
    ("vm.snapshot.delete", {"deleted": ["s1", "s2"], "checkpoints_dropped": []}),
    ("vm.snapshot.delete", {"deleted": [], "already_done": True}),
    ("vm.clone", {"files": {"vda": "/ds/c.qcow2"}, "elapsed_ms": 310}),
    ("vm.clone", {"files": {"vda": "/ds/c.qcow2"}, "already_done": True}),
    ("vm.promote", {"flattened": ["vda"], "checkpoints_dropped": []}),
    ("vm.backup", {"kind": "full", "checkpoint": "vc-backup-1", "running": True, "mode": "push", "elapsed_ms": 900, "bytes": 1048576, "files": {"vda": 2048}, "retention_removed": []}),
    ("vm.backup", {"kind": "full", "checkpoint": None, "running": False, "mode": "convert", "elapsed_ms": 50, "bytes": 4096, "files": {"vda": 2048}, "retention_removed": ["/bk/p0.qcow2"]}),
    ("vm.backup", {"kind": "incremental", "checkpoint": "vc-backup-2", "already_done": True, "files": {"vda": 512}, "retention_removed": []}),
    ("vm.restore", {"restored": ["/ds/web.qcow2"], "snapshots_forgotten": ["s1"], "elapsed_ms": 75}),
    ("vm.restore", {"restored": ["/ds/new.qcow2"], "snapshots_forgotten": [], "elapsed_ms": 75, "seed": "/ds/new-seed.iso"}),
    ("vm.restore", {"already_done": True}),
    ("template.capture", {"manifest": MANIFEST}),
    ("template.capture", {"manifest": MANIFEST, "already_done": True}),
    ("template.release", {"disks": ["/ds/web.qcow2"]}),
    ("template.release", {"already_defined": True}),
    ("template.delete", {"removed": "templates/t-v1-3"}),
    ("template.delete", {"removed": None}),
    ("template.verify", {"disks": [{"file": "disk0.qcow2", "sha256": "ab" * 32, "ok": True}], "ok": True}),
    (
        "datastore.browse",
        {
            "path": "isos",
            "entries": [
                {"name": "a.qcow2", "kind": "file", "size_bytes": 196624, "format": "qcow2", "virtual_size": 67108864, "backing_file": None},
                {"name": "b.iso", "kind": "file", "size_bytes": 10, "format": None},
                {"name": "notes.txt", "kind": "file", "size_bytes": 5},
                {"name": "sub", "kind": "dir", "size_bytes": None},
            ],
            "truncated": False,
        },
    ),
    ("vm.deploy", {"disks": ["/ds/web.qcow2"], "mode": "linked", "timings": {"disk0_ms": 12.5}}),
    ("vm.deploy", {"already_defined": True}),
    ("vm.import_disk", {"source_format": "vmdk", "virtual_size": 67108864, "capacity_mib": 64, "disk": "/ds/web.qcow2"}),
    ("vm.import_disk", {"already_defined": True}),
    ("vm.import_ova", {"formats": {"disk1.vmdk": "vmdk"}, "disks": ["/ds/web.qcow2"]}),
    ("vm.export", {"upload_id": 5, "sha256": "cd" * 32, "size_bytes": 123456, "disks": 1}),
    ("console.open", {}),
]


def test_every_command_has_a_result_model_and_a_sample():
    assert all(issubclass(row.result, Result) for row in COMMANDS.values())
    assert sorted({name for name, _ in RESULTS}) == sorted(COMMANDS)


@pytest.mark.parametrize(("name", "sent"), RESULTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(RESULTS)])
def test_a_result_reads_into_its_model_and_writes_back_the_same_dict(name, sent):
    model = parse_result(name, sent)
    assert type(model) is COMMANDS[name].result
    assert model.model_extra == {}  # every key the agent sends is a field of the model
    assert model.result() == sent
    assert list(model.result()) == list(sent)  # the agent's key order too
    assert canonical_json(model.result()) == canonical_json(sent)
    assert type(model).model_validate(model.result()) == model


def test_an_older_agents_result_without_a_newer_key_still_parses():
    required = {name for name, row in COMMANDS.items() if any(f.is_required() for f in row.result.model_fields.values())}
    # Only what every agent since the command existed has sent is required.
    assert required == {"host.cpu_baseline", "host.cpu_compare", "vm.snapshot.create", "template.capture"}
    for name, row in COMMANDS.items():
        if name not in required:
            assert row.result.model_validate({}).result() == {}
    # A test's or an older agent's migration stats: a few keys, no phase.
    assert parse_result("vm.migrate", {"stats": {"downtime_ms": 42}}).stats.downtime_ms == 42
    assert parse_result("vm.migrate", {}).stats is None
    assert parse_result("vm.snapshot.delete", {"deleted": ["s1"]}).checkpoints_dropped is None


def test_a_newer_agents_extra_key_is_kept():
    backup = parse_result("vm.backup", {"kind": "full", "files": {}, "dedup_ratio": 1.4})
    assert backup.model_extra == {"dedup_ratio": 1.4} and backup.result() == {"kind": "full", "files": {}, "dedup_ratio": 1.4}
    stats = parse_result("vm.migrate", {"stats": {"phase": "completed", "rdma": True}}).stats
    assert stats.result() == {"phase": "completed", "rdma": True}


def test_numbers_keep_their_json_type():
    deploy = parse_result("vm.deploy", {"disks": [], "mode": "full", "timings": {"disk0_ms": 3, "disk1_ms": 2.5}})
    assert deploy.result()["timings"] == {"disk0_ms": 3, "disk1_ms": 2.5} and isinstance(deploy.result()["timings"]["disk0_ms"], int)
    assert isinstance(MigrateResult(stats=MigrationStats(call_ms=812)).result()["stats"]["call_ms"], int)


def test_a_result_that_does_not_fit_is_a_stable_4xx_on_the_server():
    from vcenter.core.errors import Invalid
    from vcenter.services.operations import AgentResult

    report = AgentResult(host=None, ok=True, result={"files": {"vda": "big"}})
    with pytest.raises(Invalid) as exc:
        report.typed(BackupResult)
    assert exc.value.code == "AGENT_RESULT_INVALID" and exc.value.details == {"fields": ["files.vda"]}


# --- the agent builds through the models what it built by hand --------------------------------


class Driver:
    def __init__(self, domain: DomainState | None = None) -> None:
        self.domain = domain
        self.undefined: list[tuple[str, list[str]]] = []

    def domain_state(self, uuid):
        return self.domain

    def undefine(self, uuid, disks):
        self.undefined.append((uuid, disks))

    def define(self, spec):
        self.domain = DomainState(uuid=spec.uuid, name=spec.name, power_state="poweredOff")
        return self.domain

    def start(self, uuid):
        self.domain = DomainState(uuid=uuid, name="web", power_state="poweredOn")
        return self.domain

    def migrate(self, uuid, options, on_progress=None, cancel=None):
        return MigrationProgress(phase="completed", downtime_ms=7)

    # the snapshot/backup operations of the libvirt driver (vcenter.hypervisor.libvirt.vmdata)
    def backup(self, uuid, disks, incremental_from, checkpoint, on_progress=None, cancel=None):
        return {"kind": "full", "checkpoint": checkpoint, "running": True, "mode": "push", "elapsed_ms": 9, "bytes": 100, "files": {"vda": 64}}

    def snapshot_create(self, uuid, name, description=""):
        return {"name": name, "parent": None, "description": description, "state": "running", "memory": True, "created": "2026-01-01T00:00:00+00:00", "current": True, "checkpoints_dropped": []}


def _agent(tmp_path, driver):
    return SimpleNamespace(driver=driver, settings=make_settings(tmp_path), api=SimpleNamespace(post=lambda *a, **k: {"proceed": True}))


def _spec(tmp_path):
    disk = tmp_path / "web.qcow2"
    disk.write_bytes(b"")
    return {"name": "web", "uuid": U, "vcpus": 1, "memory_mib": 64, "disks": [{"index": 0, "datastore_id": 1, "datastore_path": str(tmp_path), "file": disk.name, "capacity_mib": 64}]}


def test_the_agent_handlers_send_the_dicts_they_built_by_hand(tmp_path):
    CURRENT_COMMAND.set(Command(command_id="c1", task_id=1, host_id=1, name="vm.backup", args={}, issued_at=utcnow()))
    agent = _agent(tmp_path, Driver())
    assert commands._delete(agent, DeleteArgs(uuid=U, disks=["/ds/a.qcow2"]))[1].result() == {"deleted_disks": ["/ds/a.qcow2"]}
    state, started = commands._ha_start(agent, HaStartArgs(spec=_spec(tmp_path)))
    assert state.power_state == "poweredOn" and started.result() == {"defined": True}
    assert commands._ha_start(agent, HaStartArgs(spec=_spec(tmp_path)))[1].result() == {"already_running": True, "defined": False}
    started_again = commands._simple("start")(agent, SimpleNamespace(uuid=U))[1]
    assert isinstance(started_again, NoPayload) and started_again.result() == {}

    migrated = commands._relocate_to_host(agent, RelocateArgs(uuid=U, moves=[], running=True), MigrationOptions(dest_uri="qemu+tcp://h2/system"))[1].result()
    assert list(migrated) == ["stats", "moved", "removed"] and migrated["stats"]["downtime_ms"] == 7 and isinstance(migrated["stats"]["call_ms"], float)
    assert list(migrated["stats"]) == [*MigrationProgress.model_fields, "call_ms"]  # every job stat, then the call's time

    old = tmp_path / "old.qcow2"
    old.write_bytes(b"")
    agent.driver.domain = DomainState(uuid=U, name="web", power_state="poweredOff")  # undefined on its old host
    assert relocation.run(agent, OfflineFinishArgs(uuid=U, remove=[str(old), str(tmp_path / "gone")]))[1].result() == {"removed": [str(old)], "not_removed": []}
    assert relocation.run(agent, OfflineDiscardArgs(uuid=None, paths=[str(tmp_path / "gone")]))[1].result() == {"removed": []}

    after = tmp_path / "p0.qcow2"
    after.write_bytes(b"")
    backed = vmdata._backup(agent, BackupArgs(uuid=U, disks=[], checkpoint="vc-backup-1", delete_after=[str(after)]))[1]
    assert backed.result() == {**Driver().backup(U, [], None, "vc-backup-1"), "retention_removed": [str(after)]} and not os.path.exists(after)
    snap = vmdata._snapshot_create(agent, SnapshotCreateArgs(uuid=U, name="s1"))[1].result()
    assert snap == Driver().snapshot_create(U, "s1") and list(snap) == list(Driver().snapshot_create(U, "s1"))


def test_a_restore_into_a_new_vm_names_its_seed_last():
    restored = RestoreResult.model_validate({"restored": ["/ds/n.qcow2"], "snapshots_forgotten": [], "elapsed_ms": 3})
    restored.seed = "/ds/n-seed.iso"  # what vmdata._restore does once it wrote the seed
    assert list(restored.result()) == ["restored", "snapshots_forgotten", "elapsed_ms", "seed"]
    assert RelocateResult(removed=[]).result() == {"removed": []}
