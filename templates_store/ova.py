"""OVA archives: a tar whose first member is the OVF descriptor, then an optional manifest
(``.mf``: ``SHA256(name)= hex`` lines), then the files the descriptor references.

Reading never trusts the archive: only regular files with a plain name (no folder, no ``..``,
no leading dot) are looked at, links and devices are skipped, every file is written under a
folder we chose with a name we checked, and digests listed in the manifest are verified while
the bytes stream through (OVA_DIGEST_MISMATCH). Writing produces the same layout, with SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
from collections.abc import Callable

from templates_store.ovf import OvfError

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")
_MF_RE = re.compile(r"^(SHA1|SHA256|SHA512)\(([^)]+)\)\s*=\s*([0-9a-fA-F]+)\s*$")


def plain_name(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and ".." not in name


def _members(tar: tarfile.TarFile):
    for member in tar:
        if not member.isfile() or not plain_name(member.name):
            continue  # a folder, a link, a device, or a name with a path: never extracted
        yield member


def read_descriptor(path: str) -> tuple[str, bytes, dict[str, tuple[str, str]]]:
    """(descriptor name, descriptor bytes, manifest {file: (algorithm, hex)}) of an OVA."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            name, data, manifest = None, None, {}
            for member in _members(tar):
                if member.name.lower().endswith(".ovf") and data is None:
                    if member.size > 4 << 20:
                        raise OvfError("OVF_INVALID", "the OVF descriptor is larger than 4 MiB")
                    name, data = member.name, tar.extractfile(member).read()
                elif member.name.lower().endswith(".mf") and member.size < 1 << 20:
                    manifest = parse_manifest(tar.extractfile(member).read().decode("utf-8", "replace"))
            if data is None:
                raise OvfError("OVA_INVALID", "the archive holds no OVF descriptor")
    except tarfile.TarError as exc:
        raise OvfError("OVA_INVALID", f"not a tar archive: {exc}") from None
    if name in manifest:
        algorithm, digest = manifest[name]
        if hashlib.new(algorithm.lower(), data).hexdigest() != digest.lower():
            raise OvfError("OVA_DIGEST_MISMATCH", f"{name} does not match the archive's manifest")
    return name, data, manifest


def parse_manifest(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in text.splitlines():
        m = _MF_RE.match(line.strip())
        if m:
            out[m.group(2).strip()] = (m.group(1), m.group(3))
    return out


def extract_files(path: str, wanted: set[str], dest_dir: str, *, cancel: threading.Event | None = None, on_progress: Callable[[float], None] | None = None) -> dict[str, str]:
    """Stream the wanted members of an OVA into ``dest_dir``; {name: path}. Digests from the
    archive's manifest are checked; a missing wanted member is OVA_INVALID."""
    _, _, manifest = read_descriptor(path)
    out: dict[str, str] = {}
    total = os.path.getsize(path) or 1
    done = 0
    with tarfile.open(path, mode="r:") as tar:
        for member in _members(tar):
            if member.name not in wanted or member.name in out:
                continue
            target = os.path.join(dest_dir, member.name)
            algorithm, digest = manifest.get(member.name, ("SHA256", None))
            h = hashlib.new(algorithm.lower())
            src = tar.extractfile(member)
            with open(target + ".part", "wb") as f:
                while chunk := src.read(4 << 20):
                    if cancel is not None and cancel.is_set():
                        f.close()
                        os.unlink(target + ".part")
                        raise OvfError("CANCELLED", "extraction cancelled")
                    h.update(chunk)
                    f.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(min(1.0, done / total))
            if digest is not None and h.hexdigest() != digest.lower():
                os.unlink(target + ".part")
                raise OvfError("OVA_DIGEST_MISMATCH", f"{member.name} does not match the archive's manifest")
            os.rename(target + ".part", target)
            out[member.name] = target
    missing = wanted - set(out)
    if missing:
        raise OvfError("OVA_INVALID", f"the archive lacks {', '.join(sorted(missing))}")
    return out


def _sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_ova(dest: str, ovf_name: str, ovf: bytes, files: list[tuple[str, str]]) -> str:
    """Write the OVA (descriptor, manifest, files in order) via a temporary name; returns
    its SHA-256."""
    lines = [f"SHA256({ovf_name})= {hashlib.sha256(ovf).hexdigest()}"]
    lines += [f"SHA256({name})= {_sha256_of(p)}" for name, p in files]
    mf = ("\n".join(lines) + "\n").encode()
    tmp = dest + ".part"
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((ovf_name, ovf), (ovf_name.rsplit(".", 1)[0] + ".mf", mf)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, p in files:
            info = tar.gettarinfo(p, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with open(p, "rb") as f:
                tar.addfile(info, f)
    os.rename(tmp, dest)
    return _sha256_of(dest)
