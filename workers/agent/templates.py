"""Agent commands of the template library, guest customisation and import/export.

Each handler runs on the host that mounts the datastore it touches (the agent sees the
datastore at its mount path, as libvirtd does), is idempotent (a redelivered command finds its
earlier result and returns it), writes files under temporary names, and on failure removes
what this attempt made. Long steps report progress to the Task and stop when the server
answers "do not proceed" (cancel): qemu-img is killed, the partial files removed, and the
command ends with CANCELLED.

Bulk data never rides the queue: an upload is pulled from the server over HTTPS with this
host's credential (and its SHA-256 checked), an export is pushed the same way, and a VM's
cloud-init seed is fetched from the server and written as a NoCloud ISO here.

They hold the hypervisor lock only around libvirt calls, so a long copy does not stall the
host's other commands (UNLOCKED).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from typing import Any

from vcenter.core.clock import utcnow
from vcenter.hypervisor import images
from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.bootimages import with_boot_files
from vcenter.messaging.commands import (
    BrowseArgs,
    CaptureArgs,
    ExportArgs,
    ImportDiskArgs,
    ImportOvaArgs,
    ReleaseArgs,
    TemplateDirArgs,
    UploadRef,
    VerifyArgs,
)
from vcenter.messaging.contracts import DeployArgs, DomainState, TaskProgress, VmSpec
from vcenter.messaging.results import (
    BrowseEntry,
    BrowseResult,
    CaptureResult,
    DeployResult,
    ExportResult,
    ImportOvaResult,
    ImportResult,
    ReleaseResult,
    TemplateDeleted,
    VerifiedImage,
    VerifyResult,
)
from workers.agent.api_client import PermanentReportError
from workers.agent.command_context import CURRENT_COMMAND
from workers.agent.service import AgentService

log = logging.getLogger(__name__)

UNLOCKED = ("template.capture", "template.release", "template.delete", "template.verify", "datastore.browse", "vm.deploy", "vm.import_disk", "vm.import_ova", "vm.export")
MIB = 1 << 20


class Reporter:
    """Progress of one command to its Task (at most every 0.5 s); ``cancel`` is set when the
    server answers that the task should not proceed."""

    def __init__(self, agent: AgentService) -> None:
        self.agent = agent
        self.command = CURRENT_COMMAND.get()
        self.cancel = threading.Event()
        self._last = 0.0

    def __call__(self, step: str, percent: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        body = TaskProgress(command_id=self.command.command_id, step=step, progress=max(0, min(99, int(percent)))).model_dump()
        try:
            answer = self.agent.api.post(f"/tasks/{self.command.task_id}/progress", body, retry_for=2)
            if not answer.get("proceed", True):
                self.cancel.set()
        except (ConnectionError, PermanentReportError) as exc:
            log.warning("progress of task %s not reported: %s", self.command.task_id, exc)

    def part(self, step: str, lo: float, hi: float):
        return lambda fraction: self(step, lo + (hi - lo) * fraction)

    def check(self) -> None:
        if self.cancel.is_set():
            raise DriverError("CANCELLED", "cancelled")


def _unlink(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)


def _define(agent: AgentService, spec: VmSpec) -> DomainState:
    spec = with_boot_files(spec, agent.settings)
    with agent.driver_lock:
        agent.driver.create_disks(spec)  # only the missing ones (none, normally)
        return agent.driver.define(spec)


def _existing(agent: AgentService, uuid: str) -> DomainState | None:
    with agent.driver_lock:
        return agent.driver.domain_state(uuid)


# --- deploy -----------------------------------------------------------------------------


def deploy(agent: AgentService, args: DeployArgs) -> tuple[DomainState, DeployResult]:
    """Clone a template's images (linked: qcow2 overlays; full: qemu-img convert), write the
    VM's NoCloud seed, define the domain."""
    spec = args.spec
    existing = _existing(agent, spec.uuid)
    if existing is not None:
        return existing, DeployResult(already_defined=True)
    report = Reporter(agent)
    made: list[str] = []
    timings: dict[str, float] = {}
    try:
        clones = list(args.clones)
        for i, clone in enumerate(clones):
            report.check()
            if os.path.exists(clone.dest):
                continue
            t0 = time.monotonic()
            if clone.mode == "linked":
                images.create_linked(clone.source, clone.dest, clone.source_format)
            else:
                images.convert(
                    clone.source,
                    clone.source_format,
                    clone.dest,
                    "qcow2",
                    on_progress=report.part(f"cloning disk {i}", 10 + 80 * i / len(clones), 10 + 80 * (i + 1) / len(clones)),
                    cancel=report.cancel,
                )
            made.append(clone.dest)
            timings[f"disk{clone.index}_ms"] = round((time.monotonic() - t0) * 1000, 2)
        seed = args.seed
        if seed:
            report("writing cloud-init seed", 92, force=True)
            from templates_store.cloudinit import build_seed_iso

            files = agent.api.get_json(f"/seeds/{spec.uuid}")["files"]
            if not os.path.exists(seed.path):
                build_seed_iso(files, seed.path)
                made.append(seed.path)
        report.check()
        state = _define(agent, spec)
    except BaseException:
        _unlink(made)
        raise
    return state, DeployResult(disks=[c.dest for c in args.clones], mode=args.mode, timings=timings)


# --- template capture / release / delete ----------------------------------------------


def capture(agent: AgentService, args: CaptureArgs) -> tuple[None, CaptureResult]:
    """Turn a powered-off VM's disks into a template folder: each disk moved (renamed, when it
    is a standalone qcow2) or converted (flattened) into ``<dir>/disk<i>.qcow2``, checksummed,
    the manifest written; only then is the domain undefined (its seed and converted sources
    removed). Any failure before that moves everything back."""
    from templates_store import manifest as mf

    ds = args.datastore_path
    root = images.resolve_in_datastore(ds, args.dir, must_exist=False)
    manifest_path = os.path.join(root, mf.MANIFEST_FILE)
    if os.path.exists(manifest_path):
        found = mf.loads(open(manifest_path).read())
        if found.get("template_id") == args.meta.template_id:
            return None, CaptureResult(manifest=found, already_done=True)
        raise DriverError("TEMPLATE_EXISTS", f"{args.dir} holds another template")
    state = _existing(agent, args.uuid)
    if state is not None and state.power_state != "poweredOff":
        raise DriverError("VM_POWERED_ON", f"VM {state.name} is {state.power_state}: power it off first")
    os.makedirs(root, exist_ok=True)
    report = Reporter(agent)
    moved: list[tuple[str, str, bool]] = []
    disks_out = []
    try:
        disks = list(args.disks)
        for n, d in enumerate(disks):
            report.check()
            src = os.path.join(ds, d.file)
            dst = os.path.join(root, f"disk{d.index}.qcow2")
            if not os.path.exists(src) and os.path.exists(dst):
                moved.append((src, dst, True))  # renamed by an earlier attempt that died
                continue
            if not os.path.exists(src):
                raise DriverError("DISK_NOT_FOUND", f"disk {d.file} does not exist on the datastore")
            if images.backing_of(src) or d.format != "qcow2":
                images.convert(src, d.format, dst, "qcow2", cancel=report.cancel, on_progress=report.part(f"flattening disk {d.index}", 5, 60))
                moved.append((src, dst, False))
            else:
                os.rename(src, dst)
                moved.append((src, dst, True))
        for n, d in enumerate(disks):
            dst = os.path.join(root, f"disk{d.index}.qcow2")
            sha = images.sha256_file(dst, cancel=report.cancel, on_progress=report.part(f"checksumming disk {d.index}", 60 + 35 * n / len(disks), 60 + 35 * (n + 1) / len(disks)))
            disks_out.append(
                {
                    "index": d.index,
                    "file": os.path.basename(dst),
                    "format": "qcow2",
                    "capacity_mib": math.ceil(images.virtual_size(dst, "qcow2") / MIB),
                    "size_bytes": os.path.getsize(dst),
                    "sha256": sha,
                }
            )
        meta = args.meta
        manifest = mf.build_manifest(
            template_id=meta.template_id, name=meta.name, version=meta.version, guest_os=meta.guest_os, hardware=meta.hardware, disks=disks_out, origin=meta.origin, created_at=utcnow().isoformat()
        )
        tmp = manifest_path + ".part"
        with open(tmp, "w") as f:
            f.write(mf.dumps(manifest))
        os.rename(tmp, manifest_path)
    except BaseException:
        for src, dst, renamed in reversed(moved):
            try:
                if renamed:
                    os.rename(dst, src)
                else:
                    os.unlink(dst)
            except OSError as exc:
                log.error("rollback of template capture: %s -> %s failed: %s", dst, src, exc)
        shutil.rmtree(root, ignore_errors=True)
        raise
    drop = [src for src, _dst, renamed in moved if not renamed] + [os.path.join(ds, f) for f in args.seed_files]
    if state is not None:
        with agent.driver_lock:
            agent.driver.undefine(args.uuid, drop)
    else:
        _unlink(drop)
    return None, CaptureResult(manifest=manifest)


def release(agent: AgentService, args: ReleaseArgs) -> tuple[DomainState, ReleaseResult]:
    """Convert a template back to a VM: its images renamed to the VM's disk files, the domain
    defined, the template folder removed."""
    spec = args.spec
    existing = _existing(agent, spec.uuid)
    root = images.resolve_in_datastore(args.datastore_path, args.dir, must_exist=False)
    if existing is not None:
        shutil.rmtree(root, ignore_errors=True)
        return existing, ReleaseResult(already_defined=True)
    done: list[tuple[str, str]] = []
    try:
        for move in args.moves:
            if os.path.exists(move.from_) and not os.path.exists(move.to):
                os.rename(move.from_, move.to)
                done.append((move.from_, move.to))
            elif not os.path.exists(move.to):
                raise DriverError("DISK_NOT_FOUND", f"template image {os.path.basename(move.from_)} is missing")
        state = _define(agent, spec)
    except BaseException:
        for src, dst in reversed(done):
            os.rename(dst, src)
        raise
    shutil.rmtree(root, ignore_errors=True)
    return state, ReleaseResult(disks=[m.to for m in args.moves])


def delete(agent: AgentService, args: TemplateDirArgs) -> tuple[None, TemplateDeleted]:
    root = images.resolve_in_datastore(args.datastore_path, args.dir, must_exist=False)
    if not args.dir.startswith("templates/"):
        raise DriverError("PATH_INVALID", "only a template folder is deleted here")
    existed = os.path.isdir(root)
    shutil.rmtree(root, ignore_errors=True)
    return None, TemplateDeleted(removed=args.dir if existed else None)


def verify(agent: AgentService, args: VerifyArgs) -> tuple[None, VerifyResult]:
    """Recompute the SHA-256 of a template's images; TEMPLATE_CHECKSUM_MISMATCH names those
    that differ from the manifest."""
    root = images.resolve_in_datastore(args.datastore_path, args.dir)
    report = Reporter(agent)
    disks = list(args.disks)
    out = []
    for n, d in enumerate(disks):
        path = images.resolve_in_datastore(root, d.file)
        sha = images.sha256_file(path, cancel=report.cancel, on_progress=report.part(f"checksumming {d.file}", 100 * n / len(disks), 100 * (n + 1) / len(disks)))
        out.append(VerifiedImage(file=d.file, sha256=sha, ok=sha == d.sha256))
    bad = [d.file for d in out if not d.ok]
    if bad:
        raise DriverError("TEMPLATE_CHECKSUM_MISMATCH", f"images differ from the manifest: {', '.join(bad)}")
    return None, VerifyResult(disks=out, ok=True)


def browse(agent: AgentService, args: BrowseArgs) -> tuple[None, BrowseResult]:
    """List one folder of a datastore: every entry's name, kind (file, dir, symlink: never
    followed) and size; files that qemu-img reads as images with their format and virtual
    size. At most ``limit`` entries."""
    import stat as st

    root = images.resolve_in_datastore(args.datastore_path, args.path, allow_root=True)
    if not os.path.isdir(root):
        raise DriverError("PATH_NOT_A_FOLDER", f"{args.path} is not a folder")
    entries = []
    names = sorted(os.listdir(root))
    for name in names[: args.limit]:
        full = os.path.join(root, name)
        info = os.lstat(full)
        kind = "symlink" if st.S_ISLNK(info.st_mode) else "dir" if st.S_ISDIR(info.st_mode) else "file" if st.S_ISREG(info.st_mode) else "other"
        image: dict[str, Any] = {}  # only an image file's entry names these keys
        if kind == "file" and name.rsplit(".", 1)[-1].lower() in ("qcow2", "raw", "img", "vmdk", "vhd", "vhdx", "vdi", "iso"):
            try:
                data = images.info(full)
                image = {"format": data.get("format"), "virtual_size": data.get("virtual-size"), "backing_file": data.get("backing-filename")}
            except DriverError:
                image = {"format": None}
        entries.append(BrowseEntry(name=name, kind=kind, size_bytes=info.st_size if kind == "file" else None, **image))
    return None, BrowseResult(path=args.path, entries=entries, truncated=len(names) > len(entries))


# --- import -----------------------------------------------------------------------------


def _pull(agent: AgentService, report: Reporter, upload: UploadRef, dest: str, lo: float, hi: float) -> None:
    total = max(1, int(upload.size_bytes or 1))
    try:
        size, sha = agent.api.download(
            f"/uploads/{upload.id}/content", dest, timeout=agent.settings.agent_transfer_timeout, on_bytes=lambda n: report("downloading", lo + (hi - lo) * min(1.0, n / total)), cancel=report.cancel
        )
    except InterruptedError:
        raise DriverError("CANCELLED", "cancelled during the download") from None
    except PermanentReportError as exc:
        raise DriverError("UPLOAD_UNAVAILABLE", str(exc)) from None
    if upload.sha256 and sha != upload.sha256:
        raise DriverError("UPLOAD_CHECKSUM_MISMATCH", f"upload {upload.id} arrived with SHA-256 {sha}, expected {upload.sha256}")
    if upload.size_bytes is not None and size != upload.size_bytes:
        raise DriverError("UPLOAD_CHECKSUM_MISMATCH", f"upload {upload.id} arrived with {size} bytes, expected {upload.size_bytes}")


def import_disk(agent: AgentService, args: ImportDiskArgs) -> tuple[DomainState, ImportResult]:
    """One disk image (VMDK, VHD/VHDX, VDI, raw, qcow2) into a new VM: pulled from the server
    (an upload) or taken from a datastore path, checked (no references to other files),
    converted to qcow2 as the VM's disk, the domain defined."""
    spec = args.spec
    existing = _existing(agent, spec.uuid)
    if existing is not None:
        return existing, ImportResult(already_defined=True)
    dest = args.dest
    report = Reporter(agent)
    work = os.path.join(os.path.dirname(dest), f".import-{spec.uuid[:8]}")
    made: list[str] = []
    try:
        if args.upload:
            os.makedirs(work, exist_ok=True)
            src = os.path.join(work, "source")
            _pull(agent, report, args.upload, src, 5, 50)
        else:
            src = images.resolve_in_datastore(args.source_datastore_path, args.path)
        report.check()
        fmt, info = images.importable_format(src, args.format)
        existed = os.path.exists(dest)
        images.convert(src, fmt, dest, "qcow2", on_progress=report.part("converting", 50, 95), cancel=report.cancel)
        if not existed:
            made.append(dest)
        state = _define(agent, spec)
    except BaseException:
        _unlink(made)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return state, ImportResult(source_format=fmt, virtual_size=int(info["virtual-size"]), capacity_mib=math.ceil(int(info["virtual-size"]) / MIB), disk=dest)


def import_ova(agent: AgentService, args: ImportOvaArgs) -> tuple[DomainState, ImportOvaResult]:
    """An OVA appliance into a new VM: the archive pulled, the disks its descriptor names
    extracted (digests checked against its manifest), each converted to qcow2, defined."""
    from templates_store.ova import extract_files
    from templates_store.ovf import OvfError

    spec = args.spec
    existing = _existing(agent, spec.uuid)
    if existing is not None:
        return existing, ImportOvaResult(already_defined=True)
    disks = list(args.disks)
    report = Reporter(agent)
    work = os.path.join(os.path.dirname(disks[0].dest), f".import-{spec.uuid[:8]}")
    made: list[str] = []
    formats = {}
    try:
        os.makedirs(work, exist_ok=True)
        ova = os.path.join(work, "appliance.ova")
        _pull(agent, report, args.upload, ova, 5, 40)
        try:
            files = extract_files(ova, {d.member for d in disks}, work, cancel=report.cancel, on_progress=report.part("extracting", 40, 55))
        except OvfError as exc:
            raise DriverError(exc.code, exc.message) from None
        os.unlink(ova)
        for n, d in enumerate(disks):
            fmt, _info = images.importable_format(files[d.member])
            formats[d.member] = fmt
            existed = os.path.exists(d.dest)
            images.convert(files[d.member], fmt, d.dest, "qcow2", cancel=report.cancel, on_progress=report.part(f"converting disk {n}", 55 + 40 * n / len(disks), 55 + 40 * (n + 1) / len(disks)))
            if not existed:
                made.append(d.dest)
        state = _define(agent, spec)
    except BaseException:
        _unlink(made)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return state, ImportOvaResult(formats=formats, disks=[d.dest for d in disks])


# --- export -----------------------------------------------------------------------------


def export(agent: AgentService, args: ExportArgs) -> tuple[DomainState | None, ExportResult]:
    """A VM's or template's disks as stream-optimised VMDKs with an OVF descriptor in an OVA,
    built in a work folder on the datastore and pushed to the server."""
    from templates_store.ova import write_ova
    from templates_store.ovf import build_ovf

    report = Reporter(agent)
    work = args.workdir
    name = args.name
    os.makedirs(work, exist_ok=True)
    try:
        files = []
        disks = list(args.disks)
        for n, d in enumerate(disks):
            out = os.path.join(work, f"{name}-disk{n + 1}.vmdk")
            images.convert(
                d.path,
                d.format,
                out,
                "vmdk",
                options=["subformat=streamOptimized"],
                cancel=report.cancel,
                on_progress=report.part(f"converting disk {n}", 5 + 70 * n / len(disks), 5 + 70 * (n + 1) / len(disks)),
            )
            files.append({"file": os.path.basename(out), "path": out, "size": os.path.getsize(out), "capacity_bytes": images.virtual_size(d.path, d.format)})
        hw = args.hardware
        ovf = build_ovf(name=name, vcpus=hw.vcpus, memory_mib=hw.memory_mib, guest_os=hw.guest_os, disks=files, nics=hw.nics)
        report("packaging", 80, force=True)
        report.check()
        ova_path = os.path.join(work, f"{name}.ova")
        sha = write_ova(ova_path, f"{name}.ovf", ovf, [(f["file"], f["path"]) for f in files])
        report("uploading", 88, force=True)
        answer = agent.api.upload_file(f"/uploads/{args.upload_id}/content", ova_path, timeout=agent.settings.agent_transfer_timeout)
        if answer.get("sha256") != sha:
            raise DriverError("EXPORT_CHECKSUM_MISMATCH", f"the server received SHA-256 {answer.get('sha256')}, we sent {sha}")
        size = os.path.getsize(ova_path)
    except PermanentReportError as exc:
        raise DriverError("EXPORT_UPLOAD_FAILED", str(exc)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    domain = _existing(agent, args.uuid) if args.uuid else None
    return domain, ExportResult(upload_id=args.upload_id, sha256=sha, size_bytes=size, disks=len(files))


HANDLERS = {
    "template.capture": capture,
    "template.release": release,
    "template.delete": delete,
    "template.verify": verify,
    "datastore.browse": browse,
    "vm.deploy": deploy,
    "vm.import_disk": import_disk,
    "vm.import_ova": import_ova,
    "vm.export": export,
}
