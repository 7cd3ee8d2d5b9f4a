"""Port groups on a switch's uplinks (issue 17 item 4): the decisions of vcenter.domain.uplinks,
the NIC listing of vcenter.core.links, and what the agent runs for a port group on a switch
(workers.agent.network) against a recorded runner, with the refusals it reports."""

from __future__ import annotations

import json
import subprocess

import pytest

from vcenter.core import links
from vcenter.domain.uplinks import (
    UplinkRefused,
    check_nic_name,
    plan_uplink_portgroup,
    portgroup_bridge,
    switch_bridge,
    vlan_link_name,
    vlan_refusal,
)
from workers.agent.network import BridgeHostNetwork, SimulatedHostNetwork, make_uplink_portgroup


# --- decisions -------------------------------------------------------------------------------
def test_untagged_port_group_enslaves_the_first_uplink_the_host_has():
    plan = plan_uplink_portgroup("vcsw1", 0, ["ens4", "eth1"], {"eth0", "eth1"}, False, {})
    assert (plan.bridge, plan.nic, plan.vlan_link, plan.port) == ("vcsw1", "eth1", None, "eth1")


def test_failover_order_picks_the_first_listed_nic():
    assert plan_uplink_portgroup("vcsw1", 0, ["eth2", "eth1"], {"eth1", "eth2"}, True, {}).nic == "eth2"


def test_tagged_port_group_is_a_vlan_sub_interface_of_the_uplink():
    plan = plan_uplink_portgroup("vcpg7", 10, ["eth1"], {"eth1"}, True, {"eth1": "vcsw1"})
    assert (plan.vlan_link, plan.port, plan.vlan_id) == ("eth1.10", "eth1.10", 10)


@pytest.mark.parametrize("vlan_8021q", [False])
def test_tagged_port_group_on_a_kernel_without_8021q_is_refused_never_untagged(vlan_8021q):
    with pytest.raises(UplinkRefused) as exc:
        plan_uplink_portgroup("vcpg7", 10, ["eth1"], {"eth1"}, vlan_8021q, {})
    assert exc.value.code == "VLAN_UNSUPPORTED"


def test_unknown_8021q_is_tried_and_untagged_needs_none():
    assert plan_uplink_portgroup("vcpg7", 10, ["eth1"], {"eth1"}, None, {}).vlan_link == "eth1.10"
    assert plan_uplink_portgroup("vcsw1", 0, ["eth1"], {"eth1"}, False, {}).vlan_link is None


def test_missing_uplink_is_a_named_refusal():
    with pytest.raises(UplinkRefused) as exc:
        plan_uplink_portgroup("vcsw1", 0, ["ens4"], {"eth0"}, True, {})
    assert exc.value.code == "UPLINK_MISSING" and "ens4" in exc.value.message and "eth0" in exc.value.message


def test_a_nic_in_another_bridge_is_not_taken():
    with pytest.raises(UplinkRefused) as exc:
        plan_uplink_portgroup("vcsw2", 0, ["eth1"], {"eth1"}, True, {"eth1": "vcsw1"})
    assert exc.value.code == "UPLINK_IN_USE"
    assert plan_uplink_portgroup("vcsw1", 0, ["eth1"], {"eth1"}, True, {"eth1": "vcsw1"}).port == "eth1"  # already ours


def test_vlan_bounds():
    with pytest.raises(UplinkRefused):
        plan_uplink_portgroup("vcpg1", 4095, ["eth1"], {"eth1"}, True, {})


def test_bridge_names_fit_an_interface_name_and_untagged_ones_share_the_switch_bridge():
    assert portgroup_bridge(5, 3, 0) == switch_bridge(3) == "vcsw3"
    assert portgroup_bridge(5, 3, 10) == "vcpg5"
    assert portgroup_bridge(5, None, 0) == "vcpg5"
    assert len(portgroup_bridge(2**31 - 1, 2**31 - 1, 0)) <= 15 and len(portgroup_bridge(2**31 - 1, None, 7)) <= 15


def test_vlan_link_names_stay_within_15_characters_and_distinct():
    assert vlan_link_name("eth1", 4094) == "eth1.4094"
    long_a, long_b = vlan_link_name("enp129s0f1np1", 4094), vlan_link_name("enp129s0f0np0", 4094)
    assert len(long_a) <= 15 and len(long_b) <= 15 and long_a != long_b
    assert vlan_link_name("enp129s0f1np1", 4094) == long_a  # stable


@pytest.mark.parametrize("name", ["eth1", "ens4", "enp129s0f1np1", "bond0.1", "a"])
def test_valid_nic_names(name):
    assert check_nic_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "eth 1", "-eth", "eth/1", "eth1;rm", ".", ".."])
def test_invalid_nic_names(name):
    with pytest.raises(ValueError):
        check_nic_name(name)


def test_vlan_refusal_only_for_tagged_on_a_known_non_8021q_host():
    assert vlan_refusal(10, False) == "VLAN_UNSUPPORTED"
    assert vlan_refusal(0, False) is None and vlan_refusal(10, True) is None and vlan_refusal(10, None) is None


# --- the host's NICs --------------------------------------------------------------------------
LINKS = [
    {"ifname": "lo", "flags": ["LOOPBACK", "UP"]},
    {"ifname": "eth0", "flags": ["UP"], "linkinfo": {"info_kind": "veth"}},
    {"ifname": "eth1", "flags": ["UP"], "master": "vcsw1", "linkinfo": {"info_kind": "veth"}},
    {"ifname": "ens4", "flags": ["UP"]},
    {"ifname": "vcsw1", "flags": ["UP"], "linkinfo": {"info_kind": "bridge"}},
    {"ifname": "eth1.10", "flags": ["UP"], "master": "vcpg2", "linkinfo": {"info_kind": "vlan"}},
    {"ifname": "vxlan100", "flags": ["UP"], "linkinfo": {"info_kind": "vxlan"}},
    {"ifname": "vnet0", "flags": ["UP"], "master": "vcsw1", "linkinfo": {"info_kind": "tun"}},
]


def test_nics_are_physical_veth_or_dummy_links_only():
    assert links.nics(LINKS) == ["ens4", "eth0", "eth1"]
    assert links.masters(LINKS)["eth1"] == "vcsw1" and links.masters(LINKS)["ens4"] is None


class Recorder:
    """A runner that answers ``ip -d -j link show`` with ``links`` and records every command."""

    def __init__(self, links_: list[dict], refuse: tuple[str, ...] = ()):
        self.links = links_
        self.refuse = refuse
        self.calls: list[list[str]] = []

    def __call__(self, argv, check=True, input=None, timeout=20):
        argv = list(argv)
        self.calls.append(argv)
        if argv[:5] == ["ip", "-d", "-j", "link", "show"] and len(argv) == 5:
            return subprocess.CompletedProcess(argv, 0, json.dumps(self.links), "")
        if argv[:4] == ["ip", "link", "show", "dev"]:
            known = any(link["ifname"] == argv[4] for link in self.links)
            return subprocess.CompletedProcess(argv, 0 if known else 1, "", "")
        if any(word in argv for word in self.refuse):
            if check:
                raise links.NetworkError(f"{' '.join(argv)}: Error: Unknown device type.")
            return subprocess.CompletedProcess(argv, 2, "", "Error: Unknown device type.")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_agent_makes_the_switch_bridge_with_the_uplink_enslaved():
    run = Recorder([{"ifname": "lo", "flags": ["LOOPBACK", "UP"]}, {"ifname": "eth1", "flags": [], "linkinfo": {"info_kind": "veth"}}])
    make_uplink_portgroup({"bridge": "vcsw1", "vlan_id": 0, "uplinks": ["eth1"]}, False, run)
    assert ["ip", "link", "add", "name", "vcsw1", "type", "bridge", "stp_state", "0", "forward_delay", "0"] in run.calls
    assert ["ip", "link", "set", "dev", "eth1", "master", "vcsw1", "up"] in run.calls
    assert not any("vlan" in c for c in run.calls)


def test_agent_makes_a_vlan_sub_interface_and_releases_a_stale_port():
    current = [
        {"ifname": "eth1", "flags": ["UP"], "linkinfo": {"info_kind": "veth"}},
        {"ifname": "eth1.20", "flags": ["UP"], "master": "vcpg2", "linkinfo": {"info_kind": "vlan"}},
        {"ifname": "vnet3", "flags": ["UP"], "master": "vcpg2", "linkinfo": {"info_kind": "tun"}},
        {"ifname": "vcpg2", "flags": ["UP"], "linkinfo": {"info_kind": "bridge"}},
    ]
    run = Recorder(current)
    make_uplink_portgroup({"bridge": "vcpg2", "vlan_id": 10, "uplinks": ["eth1"]}, True, run)
    assert ["ip", "link", "add", "link", "eth1", "name", "eth1.10", "type", "vlan", "id", "10"] in run.calls
    assert ["ip", "link", "set", "dev", "eth1.20", "nomaster"] in run.calls
    assert ["ip", "link", "set", "dev", "vnet3", "nomaster"] not in run.calls  # a guest's tap stays
    assert ["ip", "link", "set", "dev", "eth1.10", "master", "vcpg2", "up"] in run.calls


def test_agent_reports_the_kernels_refusal_of_8021q_by_name():
    run = Recorder([{"ifname": "eth1", "flags": ["UP"], "linkinfo": {"info_kind": "veth"}}], refuse=("vlan",))
    with pytest.raises(UplinkRefused) as exc:
        make_uplink_portgroup({"bridge": "vcpg2", "vlan_id": 10, "uplinks": ["eth1"]}, None, run)
    assert exc.value.code == "VLAN_UNSUPPORTED" and "Unknown device type" in exc.value.message
    assert not any(c[-3:] == ["master", "vcpg2", "up"] for c in run.calls)  # nothing untagged in its place


def test_agent_refuses_before_making_anything_when_the_uplink_is_missing():
    run = Recorder([{"ifname": "eth0", "flags": ["UP"], "linkinfo": {"info_kind": "veth"}}])
    with pytest.raises(UplinkRefused) as exc:
        BridgeHostNetwork(run=run).ensure_portgroup({"bridge": "vcsw1", "vlan_id": 0, "uplinks": ["eth1"], "peers": []})
    assert exc.value.code == "UPLINK_MISSING"
    assert not any(c[:3] == ["ip", "link", "add"] and "bridge" in c for c in run.calls)


def test_probe_reports_what_the_kernel_does_and_cleans_up():
    refused = Recorder([], refuse=("vlan",))
    assert links.probe_8021q(refused) is False
    assert links.probe_8021q(Recorder([])) is True
    no_dummy = Recorder([], refuse=("dummy",))
    assert links.probe_8021q(no_dummy) is True and any("veth" in c for c in no_dummy.calls)  # this machine's kernel has no dummy links
    assert links.probe_8021q(Recorder([], refuse=("dummy", "veth"))) is None


def test_port_groups_without_a_switch_still_go_to_the_mode():
    made = []
    BridgeHostNetwork(make=made.append, run=Recorder([])).ensure_portgroup({"bridge": "vcpg1", "vlan_id": 100, "peers": []})
    assert made == [{"bridge": "vcpg1", "vlan_id": 100, "peers": []}]


def test_simulated_host_refuses_as_a_real_one_would():
    sim = SimulatedHostNetwork(nics=["eth0"], vlan_8021q=False)
    with pytest.raises(UplinkRefused) as exc:
        sim.ensure_portgroup({"bridge": "vcpg3", "vlan_id": 5, "uplinks": ["eth0"]})
    assert exc.value.code == "VLAN_UNSUPPORTED"
    sim.ensure_portgroup({"bridge": "vcsw1", "vlan_id": 0, "uplinks": ["eth0"]})
    assert sim.portgroups_present(["vcsw1", "vcpg3"]) == ["vcsw1"] and sim.facts() == (["eth0"], False)
