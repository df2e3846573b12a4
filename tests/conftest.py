"""Shared pytest fixtures (keep them generic: other test modules use them too)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder that holds ``pyproject.toml``)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The embedded demo data set: ``data/demo`` of the repository when it has been built
    (``make data``), otherwise built once per test session into a temporary folder."""
    here = REPO_ROOT / "data" / "demo"
    if (here / "manifest.json").is_file() and (here / "singlecoil_train").is_dir():
        return here
    from kdmri_lib.demo_data import build_demo_data

    out = tmp_path_factory.mktemp("demo")
    build_demo_data(out, progress=False, log=lambda *_: None)
    return out
