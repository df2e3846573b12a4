"""Every relative link in the README, the docs and the notebooks' markdown points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _documents():
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.md"))]:
        yield p, p.read_text(encoding="utf-8")
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        yield p, "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_relative_links_resolve():
    broken, checked = [], 0
    for path, text in _documents():
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            checked += 1
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert checked > 20                                    # the README, docs and notebooks do link
    assert not broken, "broken links:\n" + "\n".join(broken)
