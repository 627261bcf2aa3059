"""The documents code cites: every `docs/NAME.md#section` reference names a document and a heading that
exist, no reference points outside the repository, and every setting config.py reads is documented.

Comments and docstrings cite sections by their GitHub anchors, so a renamed heading breaks a citation
silently; this test finds it. Standard library only: it runs without a database.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("ynet_db", "workers", "migrations", "tests", "bench", "docs")
SUFFIXES = (".py", ".md")

REFERENCE = re.compile(r"(?P<path>[A-Za-z0-9_./-]+\.md)#(?P<anchor>[A-Za-z0-9_-]+)")
# This file is not scanned (its fixtures cite missing sections on purpose); the stale names in them are
# split, and the patterns below spelled, so that a plain grep for stale references does not find it either.
STALE = (
    (re.compile(r"design\s+principle\s+\d", re.IGNORECASE), "cites a design principle by number, not its section"),
    (re.compile(r"shared[/]docs"), "points at documents outside the repository"),
)
BARE_DOCUMENT = re.compile(r"(?<!docs/)\b(?:method|design)[.]md\b")
"""A document named without its folder; only the documents themselves may do that (links within docs/)."""
CONFIG_READS = re.compile(r"""env(?:\.get\(|\[)["'](YNET_[A-Z_]+)["']""")


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading line: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """The anchors of a document's headings (outside code blocks), with GitHub's -1, -2 for repeats."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            slug = anchor(line)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def source_files(root: Path) -> list[Path]:
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    for folder in SCANNED:
        files += sorted(p for p in (root / folder).rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts)
    return files


def lines(root: Path) -> list[tuple[Path, int, str]]:
    return [
        (path, number, line)
        for path in source_files(root)
        if path.resolve() != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    ]


def target(root: Path, source: Path, reference: str) -> Path:
    """A Markdown file's links are relative to its folder; code cites documents from the repository root."""
    beside = source.parent / reference
    return beside if source.suffix == ".md" and beside.is_file() else root / reference


def broken_references(root: Path) -> list[str]:
    """'file:line: reference: why' for each reference whose document or heading does not exist."""
    problems = []
    for path, number, line in lines(root):
        for match in REFERENCE.finditer(line):
            document = target(root, path, match["path"])
            where = f"{path.relative_to(root)}:{number}: {match[0]}"
            if not document.is_file():
                problems.append(f"{where}: no such document")
            elif match["anchor"] not in anchors(document):
                problems.append(f"{where}: no heading with that anchor in {document.relative_to(root)}")
    return problems


def stale_references(root: Path) -> list[str]:
    """'file:line: why' for each reference that leads outside the repository or names no section."""
    problems = []
    for path, number, line in lines(root):
        where = f"{path.relative_to(root)}:{number}"
        problems += [f"{where}: {why}" for pattern, why in STALE if pattern.search(line)]
        if path.parent != root / "docs" and BARE_DOCUMENT.search(line):
            problems.append(f"{where}: names a document without its folder (write docs/NAME.md#section)")
    return problems


def test_every_cited_section_exists() -> None:
    assert broken_references(ROOT) == []


def test_no_reference_leaves_the_repository() -> None:
    assert stale_references(ROOT) == []


def test_every_setting_config_reads_is_documented() -> None:
    read = set(CONFIG_READS.findall((ROOT / "ynet_db" / "config.py").read_text(encoding="utf-8")))
    documented = (ROOT / "docs" / "design.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    assert len(read) >= 9, read  # the pattern still finds what config.py reads
    assert sorted(name for name in read if f"`{name}`" not in documented) == []


def test_anchors_are_githubs() -> None:
    assert anchor("### 7. Inputs are untrusted") == "7-inputs-are-untrusted"
    assert anchor("## Ingestion: from a row to `an embedding`, (again)") == "ingestion-from-a-row-to-an-embedding-again"
    assert anchor("## The training-free context re-rank") == "the-training-free-context-re-rank"


def test_a_missing_document_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    design = "# Design\n\n## Settings\n\n```\n## Not a heading\n```\n\n## Settings\n"
    (tmp_path / "docs" / "design.md").write_text(design)
    (tmp_path / "ynet_db").mkdir()
    (tmp_path / "ynet_db" / "a.py").write_text(
        '"""docs/design.md#settings, docs/design.md#settings-1 and docs/design.md#not-a-heading.\n'
        'Also docs/gone.md#x."""\n'
    )
    assert broken_references(tmp_path) == [
        "ynet_db/a.py:1: docs/design.md#not-a-heading: no heading with that anchor in docs/design.md",
        "ynet_db/a.py:2: docs/gone.md#x: no such document",
    ]


def test_links_inside_docs_are_relative_to_their_folder(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    method = "method" + ".md"
    (tmp_path / "docs" / method).write_text("# Method\n\n## Losses\n")
    (tmp_path / "docs" / "README.md").write_text(f"[losses]({method}#losses), [gone]({method}#gone)\n")
    assert broken_references(tmp_path) == [
        f"docs/README.md:1: {method}#gone: no heading with that anchor in docs/{method}"
    ]


def test_references_outside_the_repository_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("See method" + ".md for the model.\n")
    (tmp_path / "ynet_db").mkdir()
    (tmp_path / "ynet_db" / "a.py").write_text(
        "# bound parameters (design " + "principle 7)\n"
        "# see /work/shared" + "/docs/design.md\n"
        "# as method" + ".md says; docs/method.md#losses is fine\n"
    )
    assert stale_references(tmp_path) == [
        "ynet_db/a.py:1: cites a design principle by number, not its section",
        "ynet_db/a.py:2: points at documents outside the repository",
        "ynet_db/a.py:3: names a document without its folder (write docs/NAME.md#section)",
    ]
