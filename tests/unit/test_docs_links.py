"""The documentation's links resolve inside a clone of the repository.

Every Markdown link and image in README.md, CONTRIBUTING.md, CHANGELOG.md and docs/*.md is
checked: a relative target must name a file or folder of the repository, and must not leave
it (a clone has nothing beside it: data kept next to the repository, such as the GCD trace,
is named in the text, never linked). An anchor (``file.md#section``, ``#section``) must name a
heading of that Markdown file, spelled as GitHub spells heading anchors. Links with a scheme
(``https:``, ``mailto:``) are not followed. Code (fenced blocks and inline code spans) is not
read as links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# [text](target "title") and ![alt](target); the target may be wrapped in <...>.
INLINE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target   (reference definitions)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def doc_files(root: Path = ROOT) -> list[Path]:
    files = [root / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    return [f for f in files if f.exists()] + sorted((root / "docs").glob("*.md"))


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters,
    hyphens and spaces kept), spaces made hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text().split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    result = []
    for number, line in enumerate(prose_lines(path.read_text()), start=1):
        for pattern in (INLINE, REFERENCE):
            for match in pattern.finditer(line):
                result.append((number, match.group(1).strip("<>")))
    return result


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each link of ``path`` that does not resolve inside ``root``, with the reason."""
    problems = []
    root = root.resolve()
    for number, target in links(path):
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not target:
            problems.append(f"{where}: empty link")
            continue
        if SCHEME.match(target):
            continue  # https:, mailto: ...: not a file of the repository
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            problems.append(f"{where}: absolute path (give it relative to the file)")
            continue
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: no such file or folder in the repository")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{anchor} in {resolved.relative_to(root)}")
    return problems


def test_the_docs_exist():
    names = {p.relative_to(ROOT).as_posix() for p in doc_files()}
    for name in ("README.md", "docs/architecture.md", "docs/operations.md", "docs/api.md", "docs/lab.md", "docs/benchmarks.md", "docs/development.md", "docs/security.md"):
        assert name in names, f"{name} is missing"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(path: Path):
    assert links(path) or path.name in ("CHANGELOG.md", "security.md"), f"{path.name} links nowhere: is the parser blind?"
    assert broken_links(path) == []


def test_the_checker_finds_what_a_clone_would_miss(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A title, with `code`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[fine](docs/there.md) [anchor](docs/there.md#a-title-with-code) [second](docs/there.md#twice-1)\n"
        "[web](https://example.org/x) ![img](docs/) [self](#top)\n"
        "[gone](docs/missing.md) [outside](../shared/traces/GCD_VMs.tar.gz) [abs](/etc/passwd)\n"
        "[bad anchor](docs/there.md#nowhere)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[in a block](nowhere.md)\n```\n"
        "# Top\n"
    )
    problems = broken_links(page, tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/missing.md: no such file or folder in the repository",
        "../shared/traces/GCD_VMs.tar.gz: leaves the repository",
        "/etc/passwd: absolute path (give it relative to the file)",
        "docs/there.md#nowhere: no heading with anchor #nowhere in docs/there.md",
    ]


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("HA: restart what failed, never run a VM twice", "ha-restart-what-failed-never-run-a-vm-twice"),
        ("The dashboard (`/ui`) and the VM console", "the-dashboard-ui-and-the-vm-console"),
        ("DRS and DPM (trace replay)", "drs-and-dpm-trace-replay"),
        ("Two commands (fresh Debian 12, as root)", "two-commands-fresh-debian-12-as-root"),
    ],
)
def test_anchors_are_spelled_as_github_spells_them(heading: str, anchor: str):
    assert slug(heading) == anchor
