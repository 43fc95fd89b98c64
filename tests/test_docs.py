"""The documentation: every relative link resolves, the README stays a page and quotes no
timing, and docs/benchmarks.md is the file ``make bench`` generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

DOCS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (duplicates numbered)."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_anchors_follow_github():
    assert anchors("# A `b.csv` file\n## The seed tutorial's numbers\n## X\n## X\n") == {
        "a-bcsv-file", "the-seed-tutorials-numbers", "x", "x-1",
    }  # fmt: skip


def test_every_doc_is_checked():
    names = {p.name for p in DOCS}
    expected = {"science.md", "outputs.md", "engine.md", "reproducibility.md", "cluster.md",
                "peft.md", "contributing.md", "benchmarks.md"}  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(path):
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_readme_is_a_page_and_quotes_no_timing():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    timings = re.findall(
        r"\b\d+(?:\.\d+)?\s*(?:s|ms|µs|sec|seconds|min|minutes|hours?)\b(?! of)", readme
    )
    assert not timings, timings
    assert "benchmarks:start" not in readme
    assert "docs/benchmarks.md" in readme


def test_benchmarks_doc_is_the_generated_file():
    from benchmarks import common

    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert text.startswith(common.DOC_HEAD), "docs/benchmarks.md is written by make bench only"
    assert common.BENCHMARKS_DOC == REPO / "docs" / "benchmarks.md"
    assert re.search(r"^Latest run: \d{4}-\d{2}-\d{2}, on ", text, flags=re.M)


def test_benchmarks_doc_is_built_from_the_result_tables(tmp_path, monkeypatch):
    from benchmarks import common

    (tmp_path / "summary.csv").write_text("target,measured,goal,met\nx / y,0.5,<= 1,yes\n")
    monkeypatch.setattr(common, "OUT", tmp_path)
    text = common.benchmarks_doc("a test machine", "2000-01-01")
    assert text.startswith(common.DOC_HEAD)
    assert "Latest run: 2000-01-01, on a test machine." in text
    assert "**Targets**" in text and "| x / y" in text
