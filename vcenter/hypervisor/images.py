"""Disk images on a host's datastores through ``qemu-img``: inspect, convert, link, checksum.

What this module decides:
- Which images may come in from outside (import): formats QEMU reads losslessly (raw, qcow2,
  vmdk, vpc = VHD, vhdx, vdi) and nothing that points at other files: an image with a backing
  file, or a VMDK whose extents name another file, is refused (IMAGE_REFERENCES_FILES) since a
  crafted descriptor could otherwise read any file of the host. The format is always given to
  qemu-img explicitly (``-f``), never probed at conversion time.
- A linked clone is a qcow2 overlay whose backing file is named RELATIVE to the overlay's
  directory, so that every host mounting the datastore (at whatever path) reads the same chain;
  it is created in constant time whatever the base's size.
- Every file we make is written under a temporary name and renamed when complete, so that a
  crash or a cancel never leaves a half-made image under the final name.
- Long conversions report progress (qemu-img's ``-p``) and stop when ``cancel`` is set: the
  qemu-img process is killed, its temporary file removed, DriverError("CANCELLED").
- A user-given path resolves inside its datastore or is refused: ``..``/absolute paths by the
  pure rule of vcenter.domain.datastore_paths, symlinks and escapes here, on the host.

Codes: IMAGE_NOT_FOUND, IMAGE_UNREADABLE, IMAGE_FORMAT_UNSUPPORTED, IMAGE_REFERENCES_FILES,
IMAGE_CONVERT_FAILED, CANCELLED, PATH_ESCAPES, PATH_SYMLINK, PATH_ABSOLUTE, PATH_INVALID.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import threading
from collections.abc import Callable

from vcenter.domain.datastore_paths import PathRefused, validate_datastore_path
from vcenter.hypervisor.base import DriverError

# qemu-img format names of the images we take in, with the names operators use.
IMPORT_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vpc": "vpc", "vhd": "vpc", "vhdx": "vhdx", "vdi": "vdi"}
Progress = Callable[[float], None]  # fraction done, 0..1

_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def resolve_in_datastore(root: str, rel: str, *, allow_root: bool = False, must_exist: bool = True) -> str:
    """The absolute path of datastore path ``rel`` under the datastore mounted at ``root``.
    No component may be a symlink (a link could point anywhere, now or later), and the result
    stays under ``root``. Raises DriverError with the PathRefused code."""
    try:
        rel = validate_datastore_path(rel, allow_root=allow_root)
    except PathRefused as exc:
        raise DriverError(exc.code, exc.message) from None
    base = os.path.realpath(root)
    current = base
    parts = rel.split("/") if rel else []
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if must_exist:
                raise DriverError("IMAGE_NOT_FOUND", f"{rel} does not exist on the datastore") from None
            break
        if stat.S_ISLNK(st.st_mode):
            raise DriverError("PATH_SYMLINK", f"{rel} crosses a symbolic link ({'/'.join(parts[: i + 1])}): refused")
    final = os.path.realpath(os.path.join(base, rel)) if rel else base
    if final != base and not final.startswith(base + os.sep):
        raise DriverError("PATH_ESCAPES", f"{rel} resolves outside its datastore")
    return final


def info(path: str, fmt: str | None = None) -> dict:
    """``qemu-img info`` as JSON (share mode: works on an image a running VM uses)."""
    if not os.path.exists(path):
        raise DriverError("IMAGE_NOT_FOUND", f"{path} does not exist")
    args = ["qemu-img", "info", "-U", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    r = subprocess.run([*args, path], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise DriverError("IMAGE_UNREADABLE", f"qemu-img info {os.path.basename(path)}: {r.stderr.strip()[:300]}")
    return json.loads(r.stdout)


def importable_format(path: str, declared: str | None = None) -> tuple[str, dict]:
    """(qemu-img format, info) of an image taken in from outside, or DriverError. ``declared``
    (what the operator said) must agree with what qemu-img detects; a raw image is accepted
    only when declared raw or when nothing else is recognised."""
    detected = info(path)
    fmt = detected.get("format")
    want = IMPORT_FORMATS.get((declared or "").lower()) if declared else None
    if declared and want is None:
        raise DriverError("IMAGE_FORMAT_UNSUPPORTED", f"format {declared!r} is not one of {sorted(IMPORT_FORMATS)}")
    if fmt not in set(IMPORT_FORMATS.values()):
        raise DriverError("IMAGE_FORMAT_UNSUPPORTED", f"{os.path.basename(path)} is {fmt!r}, not one of vmdk, vhd, vhdx, vdi, raw, qcow2")
    if want and want != fmt:
        raise DriverError("IMAGE_FORMAT_MISMATCH", f"{os.path.basename(path)} was declared {declared} but is {fmt}")
    checked = info(path, fmt)  # read again with the format pinned, as the conversion will
    if checked.get("backing-filename") or checked.get("full-backing-filename"):
        raise DriverError("IMAGE_REFERENCES_FILES", f"{os.path.basename(path)} has a backing file ({checked.get('backing-filename')}): refused")
    extents = ((checked.get("format-specific") or {}).get("data") or {}).get("extents") or []
    own = os.path.realpath(path)
    for extent in extents:
        name = extent.get("filename")
        if name and os.path.realpath(name) != own:
            raise DriverError("IMAGE_REFERENCES_FILES", f"{os.path.basename(path)} names another file as an extent ({name}): refused")
    return fmt, checked


def _tmp_name(dest: str) -> str:
    return f"{dest}.part-{os.getpid()}-{threading.get_ident()}"


def _run_with_progress(args: list[str], on_progress: Progress | None, cancel: threading.Event | None, what: str) -> None:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    stopper_done = threading.Event()

    def stopper() -> None:
        while not stopper_done.wait(0.1):
            if cancel is not None and cancel.is_set() and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                return

    watcher = threading.Thread(target=stopper, daemon=True)
    watcher.start()
    buf = b""
    try:
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(256) if hasattr(proc.stdout, "read1") else proc.stdout.read(256)
            if not chunk:
                break
            buf = (buf + chunk)[-512:]
            found = _PROGRESS_RE.findall(buf)
            if found and on_progress is not None:
                on_progress(min(1.0, float(found[-1]) / 100))
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        rc = proc.wait()
    finally:
        stopper_done.set()
    if cancel is not None and cancel.is_set():
        raise DriverError("CANCELLED", f"{what}: cancelled")
    if rc != 0:
        raise DriverError("IMAGE_CONVERT_FAILED", f"{what}: {err.strip()[:400]}")


def convert(src: str, src_fmt: str, dest: str, dest_fmt: str, *, options: list[str] | None = None, on_progress: Progress | None = None, cancel: threading.Event | None = None) -> None:
    """``qemu-img convert`` (flattening any backing chain) into ``dest`` via a temporary name.
    An existing ``dest`` is left alone (a redelivered command finds its earlier result)."""
    if os.path.exists(dest):
        return
    if not os.path.isdir(os.path.dirname(dest)):
        raise DriverError("DATASTORE_ABSENT", f"directory {os.path.dirname(dest)} does not exist")
    tmp = _tmp_name(dest)
    args = ["qemu-img", "convert", "-p", "-f", src_fmt, "-O", dest_fmt]
    if dest_fmt in ("qcow2", "raw"):
        args += ["-W"]  # out-of-order writes: faster, and the result is the same
    for opt in options or []:
        args += ["-o", opt]
    try:
        _run_with_progress([*args, src, tmp], on_progress, cancel, f"convert {os.path.basename(src)}")
        os.rename(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def create_linked(base: str, dest: str, base_fmt: str = "qcow2") -> None:
    """A qcow2 overlay ``dest`` on ``base`` (backing path relative to dest's directory)."""
    if os.path.exists(dest):
        return
    if not os.path.exists(base):
        raise DriverError("IMAGE_NOT_FOUND", f"base image {base} does not exist")
    rel = os.path.relpath(base, os.path.dirname(dest))
    tmp = _tmp_name(dest)
    # qemu-img resolves a relative backing name against the overlay's directory; the
    # temporary file lives in the same directory, so the name stays valid after the rename.
    r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_fmt, "-b", rel, tmp], capture_output=True, text=True, timeout=60, cwd=os.path.dirname(dest))
    if r.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DriverError("IMAGE_CONVERT_FAILED", f"linked clone of {os.path.basename(base)}: {r.stderr.strip()[:300]}")
    os.rename(tmp, dest)


def backing_of(path: str) -> str | None:
    """The absolute backing file of an image, None without one."""
    data = info(path)
    return data.get("full-backing-filename") or data.get("backing-filename")


def sha256_file(path: str, *, cancel: threading.Event | None = None, on_progress: Progress | None = None) -> str:
    """SHA-256 of the file's bytes (the checksum a manifest records)."""
    h = hashlib.sha256()
    size = os.path.getsize(path) or 1
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
            done += len(chunk)
            if cancel is not None and cancel.is_set():
                raise DriverError("CANCELLED", f"checksum of {os.path.basename(path)}: cancelled")
            if on_progress is not None:
                on_progress(done / size)
    return h.hexdigest()


def virtual_size(path: str, fmt: str | None = None) -> int:
    return int(info(path, fmt)["virtual-size"])
