"""VM-VM and VM-host rules: what they forbid, when they contradict, where they are violated.

Vocabulary:
- affinity: the VMs of the rule run on one host. anti-affinity: no two of them share a host.
- run-on / not-run-on: the VMs of a VM group run only on (never on) the hosts of a host group.
- must: never broken by any decision; placement rejects a host that would break it (the
  ``RuleFilter`` of vcenter.domain.placement).
- should: broken only when nothing else fits. Placement scores a should-rule with a weight that
  dominates every balance score, so a host breaking fewer should-rules always ranks first, and
  a chosen host that breaks one carries the note "should-rule 'x' broken: no other host fits".
- partners of a VM in a VM-VM rule: the rule's other VMs that run (or hold a pending
  reservation) somewhere. Only running VMs count: a powered-off VM binds nothing.
- contradiction: two rules no placement can satisfy together; the API refuses the second.
- violation: a rule the current placement breaks (after an operator's manual move, or a should
  rule that yielded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vcenter.domain.snapshot import ClusterSnapshot, Rule, RuleKind

VM_VM = (RuleKind.AFFINITY, RuleKind.ANTI_AFFINITY)


def index_by_vm(rules: Iterable[Rule]) -> dict[str, list[Rule]]:
    """Enabled rules by the VMs they name."""
    out: dict[str, list[Rule]] = {}
    for rule in rules:
        if not rule.enabled:
            continue
        for vm in rule.vms:
            out.setdefault(vm, []).append(rule)
    return out


def _hosts_text(rule: Rule, labels: Mapping[str, str] | None = None) -> str:
    if rule.host_group:
        return f"host group '{rule.host_group}'"
    names = sorted((labels or {}).get(h, h) for h in rule.hosts)
    return ", ".join(names) if names else "no hosts"


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """What placing one VM on each host does to one rule.

    ``broken[i]`` is True when placing the VM on host index i breaks ``rule``; ``describe(i)``
    says why, with the partners and hosts involved.
    """

    rule: Rule
    broken: np.ndarray
    describe: Callable[[int], str]
    satisfiable_bonus: bool = False  # affinity with placed partners: a host exists that satisfies it


def checks_for_vm(
    vm_id: str,
    rules: Sequence[Rule],
    locations: Mapping[str, Sequence[int]],
    host_ids: Sequence[str],
    host_labels: Sequence[str],
    vm_labels: Mapping[str, str],
    group_masks: dict[str, np.ndarray] | None = None,
) -> list[RuleCheck]:
    """Evaluate every rule naming ``vm_id`` against every host at once.

    ``locations`` maps a VM id to the host indices where it runs or holds a reservation;
    ``group_masks`` caches the host-group mask of VM-host rules by rule name.
    """
    n = len(host_ids)
    checks: list[RuleCheck] = []
    for rule in rules:
        if rule.kind in VM_VM:
            partners = [(p, locations[p]) for p in sorted(rule.vms) if p != vm_id and locations.get(p)]
            if not partners:
                continue
            if rule.kind == RuleKind.AFFINITY:
                ok = np.ones(n, dtype=bool)
                for _, where in partners:
                    m = np.zeros(n, dtype=bool)
                    m[list(where)] = True
                    ok &= m
                text = ", ".join(f"{vm_labels.get(p, p)} on {'/'.join(host_labels[i] for i in where)}" for p, where in partners)

                def describe_affinity(i: int, rule: Rule = rule, text: str = text) -> str:
                    return f"rule '{rule.name}' ({rule.strength}, affinity with {text})"

                checks.append(RuleCheck(rule, ~ok, describe_affinity, satisfiable_bonus=True))
            else:
                bad = np.zeros(n, dtype=bool)
                for _, where in partners:
                    bad[list(where)] = True

                def describe_anti(i: int, rule: Rule = rule, partners: list[tuple[str, Sequence[int]]] = partners) -> str:
                    here = [vm_labels.get(p, p) for p, where in partners if i in where]
                    return f"rule '{rule.name}' ({rule.strength}, anti-affinity with {', '.join(here)} on {host_labels[i]})"

                checks.append(RuleCheck(rule, bad, describe_anti))
        else:
            mask = None if group_masks is None else group_masks.get(rule.name)
            if mask is None:
                mask = np.fromiter((h in rule.hosts for h in host_ids), dtype=bool, count=n)
                if group_masks is not None:
                    group_masks[rule.name] = mask
            if rule.kind == RuleKind.RUN_ON:

                def describe_run_on(i: int, rule: Rule = rule) -> str:
                    return f"rule '{rule.name}' ({rule.strength} run on {_hosts_text(rule)}: {host_labels[i]} not in it)"

                checks.append(RuleCheck(rule, ~mask, describe_run_on))
            else:

                def describe_not_on(i: int, rule: Rule = rule) -> str:
                    return f"rule '{rule.name}' ({rule.strength} not run on {_hosts_text(rule)}: {host_labels[i]} is in it)"

                checks.append(RuleCheck(rule, mask, describe_not_on))
    return checks


@dataclass(frozen=True, slots=True)
class Contradiction:
    first: str
    second: str
    reason: str

    @property
    def names(self) -> tuple[str, str]:
        return (self.first, self.second)

    def __str__(self) -> str:
        return f"rules '{self.first}' and '{self.second}' contradict: {self.reason}"


def _pair_contradiction(a: Rule, b: Rule) -> str | None:
    common = a.vms & b.vms
    kinds = {a.kind, b.kind}
    if kinds == {RuleKind.AFFINITY, RuleKind.ANTI_AFFINITY}:
        # A must and a should on the same VMs is no contradiction: the should yields.
        if len(common) >= 2 and a.must == b.must:
            return f"affinity and anti-affinity ({a.strength}) on the same VMs {', '.join(sorted(common))}"
        return None
    if not common or not (a.must and b.must):
        return None
    vms = ", ".join(sorted(common))
    if kinds == {RuleKind.RUN_ON, RuleKind.NOT_RUN_ON}:
        run, avoid = (a, b) if a.kind == RuleKind.RUN_ON else (b, a)
        if not (run.hosts - avoid.hosts):
            return f"{vms} must run on {_hosts_text(run)} and must not run on {_hosts_text(avoid)}: no host left"
        return None
    if a.kind == b.kind == RuleKind.RUN_ON and not (a.hosts & b.hosts):
        return f"{vms} must run on {_hosts_text(a)} and on {_hosts_text(b)}, which share no host"
    return None


def find_contradictions(rules: Iterable[Rule]) -> list[Contradiction]:
    """Pairs of enabled rules that no placement can satisfy together, with both names.

    Detected: affinity vs anti-affinity of the same strength sharing two or more VMs; for the
    same VMs, must-run-on a host set entirely inside a must-not-run-on set; two must-run-on
    with disjoint host sets. The order follows the input (the older rule first).
    """
    rules = [r for r in rules if r.enabled]
    found: list[Contradiction] = []
    for i, a in enumerate(rules):
        for b in rules[i + 1 :]:
            reason = _pair_contradiction(a, b)
            if reason:
                found.append(Contradiction(a.name, b.name, reason))
    return found


def contradictions_with(rules: Iterable[Rule], new: Rule) -> list[Contradiction]:
    """Contradictions a new rule would bring into ``rules`` (the API refuses it if any)."""
    found = []
    for old in rules:
        if not old.enabled or old.name == new.name:
            continue
        reason = _pair_contradiction(old, new)
        if reason:
            found.append(Contradiction(old.name, new.name, reason))
    return found


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    must: bool
    message: str
    vms: tuple[str, ...]
    hosts: tuple[str, ...]

    def __str__(self) -> str:
        return f"rule '{self.rule}' ({'must' if self.must else 'should'}) violated: {self.message}"


def violations(snapshot: ClusterSnapshot, rules: Iterable[Rule] | None = None) -> list[Violation]:
    """Rules the current placement of running VMs breaks (pending reservations are not placements)."""
    where = {vm.id: vm.host for vm in snapshot.vms if vm.host is not None}
    labels = {vm.id: vm.label for vm in snapshot.vms}
    hlabels = {h.id: h.label for h in snapshot.hosts}
    out: list[Violation] = []
    for rule in snapshot.rules if rules is None else rules:
        if not rule.enabled:
            continue
        running = sorted((vm, where[vm]) for vm in rule.vms if vm in where)
        if rule.kind == RuleKind.AFFINITY:
            hosts = sorted({h for _, h in running})
            if len(hosts) > 1:
                text = ", ".join(f"{labels.get(v, v)} on {hlabels.get(h, h)}" for v, h in running)
                out.append(Violation(rule.name, rule.must, f"split across hosts: {text}", tuple(v for v, _ in running), tuple(hosts)))
        elif rule.kind == RuleKind.ANTI_AFFINITY:
            by_host: dict[str, list[str]] = {}
            for v, h in running:
                by_host.setdefault(h, []).append(v)
            for h, vs in sorted(by_host.items()):
                if len(vs) > 1:
                    out.append(Violation(rule.name, rule.must, f"{', '.join(labels.get(v, v) for v in vs)} together on {hlabels.get(h, h)}", tuple(vs), (h,)))
        else:
            inside = rule.kind == RuleKind.NOT_RUN_ON
            bad = [(v, h) for v, h in running if (h in rule.hosts) == inside]
            if bad:
                verb = "in" if inside else "outside"
                text = ", ".join(f"{labels.get(v, v)} on {hlabels.get(h, h)}" for v, h in bad)
                out.append(Violation(rule.name, rule.must, f"{text} ({verb} {_hosts_text(rule, hlabels)})", tuple(v for v, _ in bad), tuple(sorted({h for _, h in bad}))))
    return out
