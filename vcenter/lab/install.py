"""How a lab host gets virtcenter's agent: by deploy/install-host.sh, the installer of a real
host, run inside the host with its default paths and no lab option; what the lab adds is what
a machine would already have (its disk) and what an operator would type.

What this module decides:
- The wheel the hosts install is built once per process from the tree this module lives in
  (``pip wheel --no-deps``), so a lab host runs the code under test, as a real host runs the
  wheel it was given.
- A host's /opt/virtcenter is an overlay (vcenter.lab.hosts) on a *host image*: the installer
  run once, in a throwaway mount namespace, into a cached directory
  (``<cache>/<key>/opt``; the key hashes pyproject.toml and Debian's Python version, the two
  things the virtual environment's contents follow). Installing into an empty /opt/virtcenter
  takes about 100 s here (the dependencies); on the image the installer's second-run path
  takes seconds per host, and reinstalls the wheel each time.
- The Debian packages step is left out (``--no-packages``): the lab runs on this machine's
  packages, installed by scripts/install.sh, as a host whose packages an image provides.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "deploy" / "install-host.sh"
DEFAULT_IMAGE_CACHE = Path("/var/cache/virtcenter/lab-host-image")
# Where the agent's settings file is and how a host without systemd starts the agent: the
# installer's own words (deploy/install-host.sh, step 4), used by the lab for every host.
AGENT_ENV = "/etc/virtcenter/agent.env"
BOOTSTRAP = ["sh", "-c", f"set -a; . {AGENT_ENV}; set +a; exec /opt/virtcenter/bin/vcenter agent"]
# The paths the installer writes (besides /opt/virtcenter): private per lab host.
INSTALL_DIRS = ("/etc/virtcenter", "/var/lib/virtcenter", "/etc/systemd/system")


def _require_installer() -> None:
    if not INSTALLER.is_file():
        raise RuntimeError(f"{INSTALLER} is missing: the lab installs its hosts from a checkout of the repository")


def installer_env() -> dict[str, str]:
    """The installer's environment: a root shell's, plus how this machine reaches the package
    index (PIP_*), nothing of the caller's Python."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    return env


@functools.cache
def build_wheel() -> Path:
    """virtcenter's wheel from this tree (built once per process)."""
    _require_installer()
    out = Path(tempfile.mkdtemp(prefix="virtcenter-lab-wheel-"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("virtcenter-*.whl")
    return wheel


def image_key() -> str:
    """What the image's virtual environment depends on: the dependencies (pyproject.toml) and
    the interpreter the installer uses (Debian's python3)."""
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True).stdout
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + version.encode()).hexdigest()[:16]


def private_mounts(backing: Mapping[str, str | Path]) -> list[str]:
    """Shell lines that bind each backing directory over its path (run in a private mount
    namespace); the mount points are made in the root fs (an empty directory is harmless)."""
    lines = []
    for inside, source in backing.items():
        lines += [f"mkdir -p {shlex.quote(inside)}", f"mount --bind {shlex.quote(str(source))} {shlex.quote(inside)}"]
    return lines


def host_image(cache: Path = DEFAULT_IMAGE_CACHE) -> Path:
    """The /opt/virtcenter every lab host's overlay starts from, made on first use (see the
    module docstring); returns its directory."""
    _require_installer()
    final = cache / image_key() / "opt"
    if final.is_dir():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two labs starting at once build it once
        if final.is_dir():
            return final
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
        try:
            # Everything the installer writes is private here, the machine's libvirt config included.
            backing = {inside: scratch / inside.strip("/").replace("/", "-") for inside in (*INSTALL_DIRS, "/etc/libvirt", "/opt/virtcenter")}
            for d in backing.values():
                d.mkdir()
            install = [
                "sh",
                str(INSTALLER),
                "--server",
                "http://127.0.0.1:9",
                "--registration-token",
                "host-image",
                "--wheel",
                str(build_wheel()),
                "--no-packages",
                "--no-start",
            ]
            script = "\n".join(["set -e", "mount --make-rprivate /", *private_mounts(backing), shlex.join(install)])
            done = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=installer_env(), capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"the lab's host image failed to install:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(backing["/opt/virtcenter"], final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return final
