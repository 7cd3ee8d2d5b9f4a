"""deploy/install-host.sh, the one command that makes a Debian 12 KVM server a virtcenter host,
run as root with its default paths (/opt/virtcenter, /etc/virtcenter, /var/lib/virtcenter,
/etc/systemd/system) inside a mount namespace whose /etc, /var and /opt are private overlays:
it installs the wheel into a virtual environment that uses Debian's libvirt binding (no
compiler), writes the agent's settings readable by root only, installs a systemd unit that
`systemd-analyze verify` accepts (with the server's units), and a second run keeps what it is
not told again.

Not exercised here: the Debian packages step (`--no-packages`: scripts/install.sh installed
them; apt-get in the test would download lists) and `systemctl` (no systemd runs on this
machine: the script's no-systemd branch is taken and checked)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "deploy" / "install-host.sh"
UNITS = ROOT / "deploy" / "systemd"


def _in_private_root(work: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) as root in a new mount namespace where /etc, /var and /opt are
    overlays whose changes land in ``work``, and /run is empty (no systemd)."""
    mounts = []
    for top in ("etc", "var", "opt"):
        (work / f"{top}-up").mkdir(exist_ok=True)
        (work / f"{top}-work").mkdir(exist_ok=True)
        mounts.append(f"mount -t overlay overlay -o lowerdir=/{top},upperdir={work}/{top}-up,workdir={work}/{top}-work /{top}")
    prologue = "set -e\nmount --make-rprivate /\n" + "\n".join(mounts) + "\nmount -t tmpfs tmpfs /run\n"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_CONFIG_FILE"):
        if name in os.environ:  # how this machine reaches PyPI
            env[name] = os.environ[name]
    return subprocess.run(["unshare", "-m", "sh", "-c", prologue + script], env=env, capture_output=True, text=True, timeout=900)


FACTS = textwrap.dedent(
    """
    cp {units}/* /etc/systemd/system/
    cd /etc/systemd/system
    verify=0; systemd-analyze verify virtcenter-*.service virtcenter-server.target >/tmp/verify.out 2>&1 || verify=$?
    /opt/virtcenter/bin/python - "$verify" <<'PY'
    import json, os, stat, sys, libvirt
    env = dict(line.strip().split("=", 1) for line in open("/etc/virtcenter/agent.env") if "=" in line)
    print(json.dumps({{
        "verify": int(sys.argv[1]), "verify_out": open("/tmp/verify.out").read(),
        "env": env, "env_mode": stat.S_IMODE(os.stat("/etc/virtcenter/agent.env").st_mode),
        "state_mode": stat.S_IMODE(os.stat("/var/lib/virtcenter/agent").st_mode),
        "libvirt": libvirt.__file__,
        "unit": open("/etc/systemd/system/virtcenter-agent.service").read(),
        "libvirtd_conf": open("/etc/libvirt/libvirtd.conf").read(),
        "qemu_conf": open("/etc/libvirt/qemu.conf").read(),
    }}))
    PY
    """
)


@pytest.fixture(scope="module")
def host(tmp_path_factory, built_wheel):
    """The installer run twice in one private root: first with every option, then again with
    another server URL and no token (an upgrade); the facts seen after each."""
    work = tmp_path_factory.mktemp("host-root")
    first = f"sh {INSTALLER} --server http://192.0.2.1:8080 --registration-token one-time-abc --api-thumbprint AB:CD --address 192.0.2.11 --wheel {built_wheel} --no-packages\n"
    again = f"sh {INSTALLER} --server https://vc.example:8443 --wheel {built_wheel} --no-packages\n"
    facts = FACTS.format(units=UNITS)
    done = _in_private_root(work, first + facts + "echo ===\n" + again + facts)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jsons = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(jsons) == 2, done.stdout
    return {"first": json.loads(jsons[0]), "again": json.loads(jsons[1]), "stdout": done.stdout, "work": work}


def test_agent_settings_are_written_for_root_only(host):
    first = host["first"]
    assert first["env"] == {
        "VCENTER_PUBLIC_URL": "http://192.0.2.1:8080",
        "VCENTER_AGENT_REGISTRATION_TOKEN": "one-time-abc",
        "VCENTER_API_THUMBPRINT": "AB:CD",
        "VCENTER_AGENT_ADDRESS": "192.0.2.11",
    }
    assert first["env_mode"] == 0o600 and first["state_mode"] == 0o700


def test_the_agent_uses_debians_libvirt_binding(host):
    # python3-libvirt from Debian, seen through --system-site-packages: nothing compiled
    assert host["first"]["libvirt"].startswith("/usr/lib/python3/dist-packages/")


def test_units_pass_systemd_analyze_verify(host):
    assert host["first"]["verify"] == 0, host["first"]["verify_out"]
    unit = host["first"]["unit"]
    assert "ExecStart=/opt/virtcenter/bin/vcenter agent" in unit and "VCENTER_AGENT_SUPERVISE=false" in unit


def test_a_second_run_keeps_what_it_is_not_told_again(host):
    again = host["again"]["env"]
    assert again["VCENTER_PUBLIC_URL"] == "https://vc.example:8443"
    assert again["VCENTER_AGENT_REGISTRATION_TOKEN"] == "one-time-abc" and again["VCENTER_AGENT_ADDRESS"] == "192.0.2.11"
    assert "systemd is not running here" in host["stdout"]


def test_nothing_leaks_out_of_the_private_root(host):
    # the installer wrote into the overlays only
    assert (host["work"] / "opt-up" / "virtcenter" / "bin" / "vcenter").exists()
    assert not Path("/etc/virtcenter/agent.env").exists() or "one-time-abc" not in Path("/etc/virtcenter/agent.env").read_text()


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--registration-token", "t", "--wheel", "/nonexistent.whl", "--no-packages"], "--server URL is required"),
        (["--server", "ftp://x", "--registration-token", "t"], "must be an http(s) URL"),
        (["--server", "http://x", "--bogus"], "unknown option --bogus"),
    ],
)
def test_refuses_bad_invocations_with_exit_status_2(args, complaint):
    done = subprocess.run(["sh", str(INSTALLER), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and complaint in done.stderr


def _settings_of(conf: str) -> list[tuple[str, str]]:
    return [(k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#"))]


def test_libvirt_is_configured_for_tls_with_the_cluster_ca(host):
    """Issue 17 item 2: libvirtd's TLS listener and TLS migration streams that verify the peer,
    at libvirt's default certificate paths (the agent writes them from the cluster CA); a
    second run leaves each key once."""
    for facts in (host["first"], host["again"]):
        libvirtd, qemu = _settings_of(facts["libvirtd_conf"]), _settings_of(facts["qemu_conf"])
        assert [v for k, v in libvirtd if k == "listen_tls"] == ["1"], facts["libvirtd_conf"][-500:]
        assert [v for k, v in qemu if k == "migrate_tls_x509_verify"] == ["1"]
        # the paths stay libvirt's defaults, where the agent writes the host's files
        assert not any(k in ("cert_file", "key_file", "ca_file") for k, _ in libvirtd)
    assert "listen_tls = 1" in host["first"]["libvirtd_conf"]
