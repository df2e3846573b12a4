"""The Colab path: one place for the repository's address, the notebooks' install cell made from it,
and the badges that point at it.

The repository's address lives in ``pyproject.toml`` (``[project.urls] Homepage``) and nowhere else:
each notebook's setup cell (:func:`setup_cell`) and the README's Binder and Colab badges
(:func:`badges`) are generated from it, and ``python -m kdmri_lib.teaching.colab --check`` (run by the
tests) says where a copy disagrees; ``--write`` rewrites them (after a fork changes the address).

The setup cell, on Colab only (``google.colab`` imported):

* installs ``fastmri`` without its dependencies (its wheel pulls torchvision and pytorch-lightning,
  which only its training scripts use), then the toolkit from the repository with ``torch`` pinned
  to the version Colab already has, so pip keeps Colab's CUDA build instead of replacing it;
* the environment variable ``KDMRI_SOURCE`` replaces the repository (a fork, a branch, or a local
  wheel — how ``tests/teaching/test_colab.py`` runs the cell without a network).

Elsewhere it only imports the toolkit. The pretrained zoo ships inside the package, so a notebook
run alone on Colab needs no other notebook's outputs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from kdmri_lib.core.errors import ConfigError

__all__ = ["NOTEBOOKS", "FASTMRI_VERSION", "repository_url", "github_slug", "setup_cell", "badges", "check", "write",
           "main"]

NOTEBOOKS = ("01_kspace_basics", "02_vit_teacher", "03_cnn_student", "04_distill", "05_evaluation")
#: the fastmri release the toolkit is tested with (the Makefile's FASTMRI_VERSION; a test checks they agree)
FASTMRI_VERSION = "0.3.0"
ROOT = Path(__file__).resolve().parents[2]
_SETUP_MARK = "# Setup."


def repository_url(root: Optional[Path] = None) -> str:
    """The repository's address: ``pyproject.toml``'s ``[project.urls] Homepage`` in a checkout, else
    the installed package's metadata (the same field)."""
    pyproject = Path(root or ROOT) / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["urls"]["Homepage"]
    from importlib.metadata import metadata

    for entry in metadata("kdmri").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "homepage":
            return url.strip()
    raise ConfigError("no repository address: neither pyproject.toml nor the installed kdmri's metadata has one")


def github_slug(url: str) -> str:
    """``"owner/name"`` of a GitHub address (Binder and Colab open GitHub repositories)."""
    m = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    if not m:
        raise ConfigError(f"repository address {url!r}: expected https://github.com/OWNER/NAME (Binder and Colab "
                          f"badges need a GitHub repository)")
    return f"{m.group(1)}/{m.group(2)}"


def setup_cell(name: str, url: str) -> str:
    """The setup cell of notebook ``name`` (module docstring)."""
    return f'''{_SETUP_MARK} On Colab this installs the toolkit (keeping Colab's own torch); elsewhere it only imports it.
import os, subprocess, sys
if "google.colab" in sys.modules:
    from importlib.metadata import version
    source = os.environ.get("KDMRI_SOURCE", "git+{url}")   # the repository: pyproject.toml [project.urls]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--no-deps", "fastmri=={FASTMRI_VERSION}"], check=True)
    subprocess.run(pip + [source, f"torch=={{version('torch')}}"], check=True)   # pinned: Colab's torch stays
import kdmri_lib as kd

ctx = kd.notebook.setup(globals(), "{name}")'''


def badges(url: str, name: str) -> dict[str, str]:
    """The Binder and Colab addresses that open notebook ``name`` of the repository at ``url``."""
    slug = github_slug(url)
    return {"binder": f"https://mybinder.org/v2/gh/{slug}/HEAD?urlpath=lab/tree/notebooks/{name}.ipynb",
            "colab": f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{name}.ipynb"}


_BADGE = re.compile(r"https://(?:mybinder\.org/v2/gh|colab\.research\.google\.com/github)/[^)\s]+?/notebooks/"
                    r"(\d\d_\w+)\.ipynb")


def _readme_fixed(text: str, url: str) -> str:
    def repl(m):
        kind = "binder" if "mybinder" in m.group(0) else "colab"
        return badges(url, m.group(1))[kind]

    return _BADGE.sub(repl, text)


def _setup_index(nb) -> int:
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and c.source.startswith(_SETUP_MARK):
            return i
    raise ConfigError(f"notebook {nb.metadata.get('name', '?')}: no setup cell (a code cell starting {_SETUP_MARK!r})")


def check(root: Optional[Path] = None) -> list[str]:
    """Where a notebook's setup cell, a README badge or the instructor's guide disagrees with the
    repository address (empty: all agree)."""
    import nbformat

    root = Path(root or ROOT)
    url, bad = repository_url(root), []
    for name in NOTEBOOKS:
        nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        if nb.cells[_setup_index(nb)].source != setup_cell(name, url):
            bad.append(f"notebooks/{name}.ipynb: the setup cell is not the one made from {url}")
    readme = (root / "README.md").read_text(encoding="utf-8")
    if _readme_fixed(readme, url) != readme:
        bad.append(f"README.md: a Binder or Colab badge does not point at {github_slug(url)}")
    for name in NOTEBOOKS:
        if badges(url, name)["colab"] not in readme:
            bad.append(f"README.md: no Colab badge for {name}")
    guide = (root / "notebooks" / "INSTRUCTOR.md").read_text(encoding="utf-8")
    if f"git+{url}" not in guide:
        bad.append(f"notebooks/INSTRUCTOR.md: does not name the install source git+{url}")
    return bad


def write(root: Optional[Path] = None) -> list[str]:
    """Rewrite the setup cells and the README's badges from the repository address; returns the
    files changed."""
    import nbformat

    from kdmri_lib.core.atomic import atomic_write

    root = Path(root or ROOT)
    url, changed = repository_url(root), []
    for name in NOTEBOOKS:
        path = root / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = nb.cells[_setup_index(nb)]
        if cell.source != setup_cell(name, url):
            cell.source = setup_cell(name, url)
            with atomic_write(path) as tmp:
                nbformat.write(nb, str(tmp))
            changed.append(str(path.relative_to(root)))
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    if _readme_fixed(text, url) != text:
        with atomic_write(readme) as tmp:
            Path(tmp).write_text(_readme_fixed(text, url), encoding="utf-8")
        changed.append("README.md")
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdmri_lib.teaching.colab", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite the setup cells and badges (default: only check)")
    a = p.parse_args(argv)
    try:
        if a.write:
            print("\n".join(f"rewrote {f}" for f in write()) or "nothing to change")
            return 0
        bad = check()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(bad) or f"every setup cell and badge points at {repository_url()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
