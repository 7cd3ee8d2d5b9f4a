"""A tiny Linux guest for the lab, built offline from Debian packages, and its disk pattern.

What this module decides:
- The guest is the Debian cloud kernel (the versioned package that ``linux-image-cloud-amd64``
  depends on) plus a gzip cpio initramfs holding only busybox-static, the few kernel modules
  it needs and ``/init`` (a busybox sh script, INIT_SCRIPT, read from guest-init.sh beside this
  module). It boots by direct kernel boot (``<kernel>``/``<initrd>``/``<cmdline>``); nothing is
  installed on a disk.
- On a host, boot image ``tiny-linux`` (vcenter.hypervisor.bootimages; entry point of the
  group ``virtcenter.boot_images``) is the newest image already built in the agent's
  ``lab_guest_cache`` (:func:`boot_files`): a host never builds, lab hosts have no route out.
- Packages come from ``apt-get download`` into a temporary directory and are unpacked with
  ``dpkg -x``. ``apt-get update`` runs only when apt has no (or stale) lists for them.
- The result is cached under ``cache_dir/<key>``; the key covers the package versions, the
  init script, the module list and the layout version, so a new kernel or a changed /init
  builds a new image and a second call returns the cached one without running apt at all
  (the resolved versions are reused while apt's list files are unchanged).
- SSH host keys: the guest has no sshd, but makes its host key as a real guest does on the
  first boot of an instance id (cloud-init's ssh module): ``dropbearkey`` from Debian's
  dropbear-bin (smaller than openssh-client's ssh-keygen, which needs libcrypto) with the
  shared libraries it needs (TOOL_PACKAGES, TOOL_LIBS: found in the unpacked packages, put in
  /lib/x86_64-linux-gnu, the loader also at /lib64). The root is an initramfs (RAM), so the
  "first boot of an instance id" is every boot here: a clone never carries its source's key.
- Kernel modules: the package ships no modules.dep (depmod runs at install time), so the
  load order is computed here from each module's ``depends=`` modinfo field; modules listed
  in modules.builtin are skipped. /init insmods them in that order.

The guest protocol (one virtio-serial port, ``org.virtcenter.heartbeat``, JSON lines):
- guest -> host every second: {"seq", "uptime", "hostname", "machine_id", "instance_id",
  "ssh_host_key" (the SHA256 fingerprint of its ed25519 host key, OpenSSH's format), "burn", "ip"}.
  Writes block while no host side is connected (virtio_console semantics), so the first line
  a newly connected host reads may be a few seconds old.
- host -> guest, one command per line, answered with {"reply": <command>, ...}:
  ``burn <pct>``, ``write-pattern <MiB>``, ``ping <ip>``, ``poweroff``, ``hostname``,
  ``checksum <vdX>`` (SHA-256 and size of a whole disk as the guest sees it).
- A cloud-init NoCloud seed on any virtio disk (ISO 9660 label cidata, templates_store.cloudinit)
  sets the hostname (meta-data local-hostname, over vc.hostname=), the instance id, the
  machine-id (user-data write_files /etc/machine-id) and eth0's address (network-config's first
  address, over vc.ip=); the heartbeat carries them.
- Kernel command line: ``vc.hostname=<name>``, ``vc.ip=<addr>/<prefix>`` (eth0),
  ``vc.seed=`` (reserved, ignored).
- The ACPI power button (``virDomainShutdown``) and ``poweroff`` both end in
  ``poweroff -f`` after a sync: QEMU exits with a guest shutdown, libvirt says
  STOPPED/SHUTDOWN.

The disk pattern of ``write-pattern <MiB>``: block i (4096 bytes, from offset 0 of /dev/vda)
is ``b"VCPAT%010d\\n" % i`` followed by 4079 ``.`` and one ``\\n``. ``verify_pattern``
checks it on the host.

Vocabulary: image = the kernel + initramfs pair of a GuestImage; key = the cache entry name.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.bootimages import BootFiles

if TYPE_CHECKING:
    from vcenter.core.settings import Settings

log = logging.getLogger(__name__)

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# dropbearkey (SSH host keys) and the shared libraries it loads; the loader comes with libc6.
TOOL_PACKAGES = ("dropbear-bin", "libtomcrypt1", "libtommath1", "libgmp10", "libc6")
TOOL_BINARIES = ("usr/bin/dropbearkey",)
TOOL_LIBS = ("ld-linux-x86-64.so.2", "libc.so.6", "libtomcrypt.so.1", "libtommath.so.1", "libgmp.so.10")
LIB_DIR = "lib/x86_64-linux-gnu"
HEARTBEAT_PORT = "org.virtcenter.heartbeat"
DEFAULT_CACHE_DIR = Path("/var/cache/virtcenter/guest")
# virtio_console for the heartbeat port, virtio_blk/virtio_net for disk and NIC, button (ACPI
# power button) + evdev (its /dev/input/event device, which /init watches).
# isofs: the cloud-init NoCloud seed volume (ISO 9660, label cidata) the guest reads at boot.
# virtio_balloon: its statistics tell the host how much memory the guest uses (DRS's demand).
WANTED_MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "virtio_net", "virtio_balloon", "button", "evdev", "isofs")
BASE_CMDLINE = "console=ttyS0 quiet"
LAYOUT_VERSION = 2

PATTERN_BLOCK = 4096
PATTERN_HEADER = b"VCPAT%010d\n"  # 16 bytes
PATTERN_PAD = b"." * (PATTERN_BLOCK - 16 - 1) + b"\n"

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

# /init of the initramfs: a busybox sh script kept beside this module (package data).
INIT_SCRIPT_FILE = "guest-init.sh"


def _read_init_script() -> str:
    """The text of INIT_SCRIPT_FILE as packaged (an installed package reads it from its wheel)."""
    return resources.files(__package__).joinpath(INIT_SCRIPT_FILE).read_bytes().decode("utf-8")


INIT_SCRIPT = _read_init_script()


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    cmdline: str
    memory_mib: int = 96
    versions: dict[str, str] = field(default_factory=dict, compare=False)

    def cmdline_for(self, hostname: str | None = None, ip: str | None = None) -> str:
        """The kernel command line with this guest's settings (vc.hostname=, vc.ip=)."""
        parts = [self.cmdline]
        if hostname is not None:
            if not _HOSTNAME_RE.match(hostname):
                raise ValueError(f"guest hostname {hostname!r} is not a DNS label")
            parts.append(f"vc.hostname={hostname}")
        if ip is not None:
            iface = ipaddress.IPv4Interface(ip)  # raises ValueError on garbage
            if "/" not in ip:
                raise ValueError(f"guest address {ip!r} needs a prefix length, e.g. /24")
            parts.append(f"vc.ip={iface.with_prefixlen}")
        return " ".join(parts)


# --- the disk pattern ----------------------------------------------------------------------


def pattern_block(i: int) -> bytes:
    return PATTERN_HEADER % i + PATTERN_PAD


def _image_format(path: Path) -> str:
    r = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"qemu-img info {path}: {r.stderr.strip()}")
    return json.loads(r.stdout)["format"]


def first_bad_block(image_path: Path | str, mib: int) -> int | None:
    """The first block of the first ``mib`` MiB not carrying the pattern, or None."""
    image_path = Path(image_path)
    fmt = _image_format(image_path)
    with contextlib.ExitStack() as stack:
        raw = image_path
        if fmt != "raw":
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vcpat-"))
            raw = Path(tmp) / "head.raw"
            r = subprocess.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", "bs=1M", f"count={mib}", f"if={image_path}", f"of={raw}"], capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"qemu-img dd {image_path}: {r.stderr.strip()}")
        with open(raw, "rb") as f:
            for i in range(mib * (1 << 20) // PATTERN_BLOCK):
                if f.read(PATTERN_BLOCK) != pattern_block(i):
                    return i
    return None


def verify_pattern(image_path: Path | str, mib: int) -> bool:
    """True when the first ``mib`` MiB of the image (raw or any qemu-img format) carry the
    pattern the guest's ``write-pattern <mib>`` writes."""
    return first_bad_block(image_path, mib) is None


# --- initramfs -----------------------------------------------------------------------------


class CpioWriter:
    """A minimal writer of the "newc" cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._ino += 1
        self._parts += [header, encoded, b"\0" * (-(110 + len(encoded)) % 4), data, b"\0" * (-len(data) % 4)]

    def dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def getvalue(self) -> bytes:
        trailer = CpioWriter()
        trailer._entry("TRAILER!!!", 0)
        return b"".join(self._parts + trailer._parts)


_DEPENDS_RE = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` modinfo field of a module file (uncompressed .ko)."""
    m = _DEPENDS_RE.search(ko)
    if not m:
        return []
    return [d for d in m.group(1).decode().split(",") if d]


def _norm(name: str) -> str:
    return name.replace("-", "_")


def module_load_order(modules_dir: Path, wanted: tuple[str, ...] | list[str]) -> list[tuple[str, Path]]:
    """(name, file) of ``wanted`` and their dependencies, dependencies first; built-ins skipped."""
    files = {_norm(p.name[:-3]): p for p in modules_dir.rglob("*.ko")}
    builtin_file = modules_dir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {_norm(Path(line).name.removesuffix(".ko")) for line in builtin_file.read_text().split()}
    order: list[tuple[str, Path]] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        name = _norm(name)
        if name in done or name in builtin:
            return
        if name in path:
            raise RuntimeError(f"module dependency cycle: {' -> '.join(path + (name,))}")
        if name not in files:
            raise RuntimeError(f"module {name} is neither built in nor in {modules_dir}")
        for dep in module_depends(files[name].read_bytes()):
            visit(dep, path + (name,))
        done.add(name)
        order.append((name, files[name]))

    for w in wanted:
        visit(w, ())
    return order


def _in_root(root: Path, rel: str) -> Path | None:
    """``rel`` inside an unpacked package tree, following symlinks (absolute ones relative to
    ``root``, as they would resolve on the installed system); None when absent."""
    path = root / rel.lstrip("/")
    for _ in range(20):
        if not path.is_symlink():
            return path if path.is_file() else None
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    return None


def tool_files(root: Path) -> dict[str, bytes]:
    """{path in the initramfs: content} of TOOL_BINARIES (into bin/) and TOOL_LIBS (into
    LIB_DIR), from the unpacked packages under ``root``."""
    out: dict[str, bytes] = {}
    for rel in TOOL_BINARIES:
        found = _in_root(root, rel)
        if found is None:
            raise RuntimeError(f"{rel} is not in the unpacked guest packages")
        out[f"bin/{Path(rel).name}"] = found.read_bytes()
    for soname in TOOL_LIBS:
        found = next((p for d in (LIB_DIR, f"usr/{LIB_DIR}") if (p := _in_root(root, f"{d}/{soname}")) is not None), None)
        if found is None:
            raise RuntimeError(f"shared library {soname} is not in the unpacked guest packages")
        out[f"{LIB_DIR}/{soname}"] = found.read_bytes()
    return out


def build_initramfs(busybox: Path, modules: list[tuple[str, Path]], init_script: str = INIT_SCRIPT, tools: dict[str, bytes] | None = None) -> bytes:
    """The gzip-compressed cpio initramfs: busybox + applet links, modules, /init, and the
    tools (dropbearkey and its libraries, see tool_files)."""
    cpio = CpioWriter()
    for d in ("bin", "dev", "etc", "etc/vc", "lib", "lib/modules", "proc", "sys", "run", "tmp"):
        cpio.dir(d, 0o1777 if d == "tmp" else 0o755)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    tools = tools or {}
    for applet in _busybox_applets(busybox):
        if applet != "busybox" and f"bin/{applet}" not in tools:
            cpio.symlink(f"bin/{applet}", "busybox")
    if tools:
        cpio.dir(LIB_DIR)
        cpio.dir("lib64")
        for name, data in sorted(tools.items()):
            cpio.file(name, data, 0o755)
        cpio.symlink("lib64/ld-linux-x86-64.so.2", f"/{LIB_DIR}/ld-linux-x86-64.so.2")
    for name, path in modules:
        cpio.file(f"lib/modules/{name}.ko", path.read_bytes())
    cpio.file("etc/vc/modules", "".join(f"{name}\n" for name, _ in modules).encode())
    cpio.file("etc/vc/pattern-pad", PATTERN_PAD)
    cpio.file("init", init_script.encode(), 0o755)
    return gzip.compress(cpio.getvalue(), compresslevel=6, mtime=0)


_FALLBACK_APPLETS = ("sh", "mount", "mkdir", "cat", "insmod", "hostname", "tr", "ip", "ln", "usleep", "sleep", "dd", "sync", "poweroff", "kill", "ping", "printf", "echo")


def _busybox_applets(busybox: Path) -> list[str]:
    try:
        r = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, timeout=10)
        applets = r.stdout.split()
        if r.returncode == 0 and "sh" in applets:
            return applets
    except OSError:
        pass
    return list(_FALLBACK_APPLETS)


# --- apt -----------------------------------------------------------------------------------


class AptError(RuntimeError):
    pass


_NO_LISTS_HINTS = ("Unable to locate package", "No packages found", "Can't select candidate", "has no installation candidate", "404", "Failed to fetch", "Can't find a source")


def _lists_fingerprint() -> list[list]:
    lists = Path("/var/lib/apt/lists")
    try:
        return sorted([p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in lists.iterdir() if "Packages" in p.name)
    except OSError:
        return []


def _apt_update() -> None:
    log.info("apt-get update (no usable package lists)")
    r = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise AptError(f"apt-get update failed: {r.stderr.strip() or r.stdout.strip()}")


def apt_resolve() -> dict[str, str]:
    """{package: version} of the versioned cloud kernel package, busybox-static and the
    TOOL_PACKAGES."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE, BUSYBOX_PACKAGE, *TOOL_PACKAGES], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AptError(r.stderr.strip() or f"apt-cache show exited {r.returncode}")
    out: dict[str, str] = {}
    for stanza in r.stdout.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if fields.get("Package") == KERNEL_META_PACKAGE:
            m = re.search(r"(linux-image-[0-9][^\s,(]*-cloud-amd64)(?: \(= ([^)]+)\))?", fields.get("Depends", ""))
            if not m:
                raise AptError(f"{KERNEL_META_PACKAGE} depends on no versioned kernel: {fields.get('Depends')}")
            out[m.group(1)] = m.group(2) or ""
        elif fields.get("Package") in (BUSYBOX_PACKAGE, *TOOL_PACKAGES) and fields["Package"] not in out:
            out[fields["Package"]] = fields["Version"]
    if len(out) != 2 + len(TOOL_PACKAGES) or not all(out.values()):
        raise AptError(f"cannot resolve guest packages from apt lists: {out}")
    return out


def apt_download(packages: dict[str, str], dest: Path) -> dict[str, Path]:
    """``apt-get download`` of exact versions into ``dest``; {package: .deb path}."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)  # apt's _apt sandbox user must be able to write there
    r = subprocess.run(["apt-get", "download", "-q", *(f"{p}={v}" for p, v in packages.items())], cwd=dest, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise AptError(r.stderr.strip() or r.stdout.strip())
    found = {}
    for p in packages:
        debs = sorted(dest.glob(f"{p}_*.deb"))
        if not debs:
            raise AptError(f"apt-get download left no .deb for {p}")
        found[p] = debs[-1]
    return found


def _lacks_lists(e: AptError) -> bool:
    return any(h in str(e) for h in _NO_LISTS_HINTS)


def _resolve(cache_dir: Path, refresh: bool = False) -> dict[str, str]:
    """Resolved versions, reused from cache_dir while apt's list files are unchanged."""
    memo = cache_dir / "resolved.json"
    fp = _lists_fingerprint()
    if not refresh and fp:
        try:
            saved = json.loads(memo.read_text())
            if saved["lists"] == fp and set(TOOL_PACKAGES) <= set(saved["packages"]):
                return saved["packages"]
        except (OSError, ValueError, KeyError):
            pass
    try:
        packages = apt_resolve()
    except AptError as e:
        if not _lacks_lists(e):
            raise
        _apt_update()
        packages = apt_resolve()
        fp = _lists_fingerprint()
    _atomic_write(memo, json.dumps({"lists": fp, "packages": packages}).encode())
    return packages


def _download(cache_dir: Path, packages: dict[str, str], dest: Path) -> tuple[dict[str, str], dict[str, Path]]:
    try:
        return packages, apt_download(packages, dest)
    except AptError as e:
        if not _lacks_lists(e):
            raise
    # Lists missing or stale (the mirror dropped that version): update once and retry.
    _apt_update()
    packages = _resolve(cache_dir, refresh=True)
    return packages, apt_download(packages, dest)


# --- the build -----------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_key(packages: dict[str, str]) -> str:
    kernel_pkg = next((p for p in packages if p.startswith("linux-image-")), "kernel")
    h = hashlib.sha256(
        json.dumps(
            {
                "packages": sorted(packages.items()),
                "init": hashlib.sha256(INIT_SCRIPT.encode()).hexdigest(),
                "modules": list(WANTED_MODULES),
                "cmdline": BASE_CMDLINE,
                "layout": LAYOUT_VERSION,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return f"{kernel_pkg.removeprefix('linux-image-')}-{h[:16]}"


def _from_entry(entry: Path) -> GuestImage:
    meta = json.loads((entry / "meta.json").read_text())
    return GuestImage(kernel=entry / "vmlinuz", initrd=entry / "initrd.gz", cmdline=meta["cmdline"], memory_mib=meta.get("memory_mib", 96), versions=meta["packages"])


def default_cache_dir() -> Path:
    env = os.environ.get("VCENTER_LAB_CACHE")
    return Path(env) if env else DEFAULT_CACHE_DIR


def cached_guest(cache_dir: Path | None = None) -> GuestImage | None:
    """The newest complete image in the cache, without asking apt anything: what a lab host
    uses (it has no route to a package mirror). None when nothing was built yet."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entries = sorted((m.parent for m in cache_dir.glob("*/meta.json") if not m.parent.name.startswith(".")), key=lambda e: (e / "meta.json").stat().st_mtime)
    return _from_entry(entries[-1]) if entries else None


def build_guest(cache_dir: Path | None = None) -> GuestImage:
    """The lab guest image, from the cache or built now (needs apt, dpkg and network once)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        packages = _resolve(cache_dir)
        entry = cache_dir / cache_key(packages)
        if (entry / "meta.json").exists():
            return _from_entry(entry)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmps:
            tmp = Path(tmps)
            os.chmod(tmp, 0o755)  # so that apt's _apt sandbox user reaches the download dir
            packages, debs = _download(cache_dir, packages, tmp / "debs")
            entry = cache_dir / cache_key(packages)
            root = tmp / "root"
            for deb in debs.values():
                r = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    raise RuntimeError(f"dpkg -x {deb.name}: {r.stderr.strip()}")
            kernels = sorted((root / "boot").glob("vmlinuz-*"))
            if len(kernels) != 1:
                raise RuntimeError(f"expected one kernel in the package, found {kernels}")
            kver = kernels[0].name.removeprefix("vmlinuz-")
            busybox = next((p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.exists()), None)
            if busybox is None:
                raise RuntimeError(f"{BUSYBOX_PACKAGE} has no busybox binary")
            modules = module_load_order(root / "lib/modules" / kver, WANTED_MODULES)
            out = tmp / "out"
            out.mkdir()
            shutil.copyfile(kernels[0], out / "vmlinuz")
            (out / "initrd.gz").write_bytes(build_initramfs(busybox, modules, tools=tool_files(root)))
            (out / "init").write_text(INIT_SCRIPT)
            (out / "meta.json").write_text(
                json.dumps(
                    {
                        "packages": packages,
                        "kernel_release": kver,
                        "cmdline": BASE_CMDLINE,
                        "memory_mib": 96,
                        "modules": [n for n, _ in modules],
                        "built_in_s": round(time.monotonic() - t0, 2),
                    },
                    indent=2,
                )
            )
            if entry.exists():  # an incomplete entry (no meta.json) from a crashed build
                shutil.rmtree(entry)
            os.rename(out, entry)
        log.info("built lab guest %s in %.1fs", entry.name, time.monotonic() - t0)
        return _from_entry(entry)


def boot_files(settings: Settings, *, hostname: str, ip: str | None) -> BootFiles:
    """Boot image ``tiny-linux`` on this host (a vcenter.hypervisor.bootimages resolver):
    only what is already built, BOOT_IMAGE_UNAVAILABLE otherwise."""
    image = cached_guest(Path(settings.lab_guest_cache))
    if image is None:
        raise DriverError("BOOT_IMAGE_UNAVAILABLE", f"no tiny-linux image built in {settings.lab_guest_cache} (vcenter lab up builds it)")
    return BootFiles(kernel=str(image.kernel), initrd=str(image.initrd), cmdline=image.cmdline_for(hostname=hostname, ip=ip))
