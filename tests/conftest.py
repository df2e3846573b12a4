"""Shared fixtures: the demo data folder and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# keep test runs lean and reproducible on a 2-core CI machine
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The embedded demo data: ``data/demo`` of the repository (``make data`` builds it), or a
    fresh build in a temporary folder when it is missing."""
    from kdmri_lib.datasets.demo_data import build_demo_data

    default = REPO / "data" / "demo"
    if (default / "manifest.json").exists():
        report = build_demo_data(default, progress=False)  # verifies; no work when up to date
        return report.out
    out = tmp_path_factory.mktemp("demo")
    build_demo_data(out, progress=False)
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the bad-input corpus tally (tests/_corpus.py) when it ran."""
    try:
        from _corpus import PASSED, tally
    except ImportError:  # pragma: no cover
        return
    if not PASSED:
        return
    t = tally()
    terminalreporter.section("bad-input corpus")
    for comp, (declared, ok) in t.items():
        terminalreporter.write_line(f"{comp:28s} {ok:4d} of {declared:4d} bad inputs: one clear error, files unchanged")
    terminalreporter.write_line(f"{'total':28s} {sum(o for _, o in t.values()):4d} of {sum(d for d, _ in t.values()):4d}")
