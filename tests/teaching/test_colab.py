"""The Colab path (kdmri_lib.teaching.colab): the repository's address in one place, the notebooks'
setup cells and badges made from it, and the setup cell run on a fake Colab against a local wheel
(no network)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kdmri_lib.core.errors import ConfigError
from kdmri_lib.teaching import colab as C

ROOT = Path(__file__).resolve().parents[2]


def test_setup_cells_and_badges_follow_the_repository_address():
    assert C.check() == []
    url = C.repository_url()
    for name in C.NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
        assert cell.source == C.setup_cell(name, url) and f"git+{url}" in cell.source
        assert C.badges(url, name)["colab"] in (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"FASTMRI_VERSION \?= (\S+)", (ROOT / "Makefile").read_text()).group(1) == C.FASTMRI_VERSION


def test_a_fork_changes_one_line_and_everything_follows(tmp_path):
    for f in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / f, tmp_path / f)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    py = tmp_path / "pyproject.toml"
    py.write_text(py.read_text().replace('Homepage = "https://github.com/kdmri/kdmri"',
                                         'Homepage = "https://github.com/someone/kdmri-fork"'))
    bad = C.check(tmp_path)
    assert len([b for b in bad if "setup cell" in b]) == 5 and any(b.startswith("README.md") for b in bad)
    changed = C.write(tmp_path)
    assert "README.md" in changed and len(changed) == 6
    guide = [b for b in C.check(tmp_path)]
    assert guide == ["notebooks/INSTRUCTOR.md: does not name the install source git+https://github.com/someone/kdmri-fork"]
    readme = (tmp_path / "README.md").read_text()
    assert "github/someone/kdmri-fork/blob/main/notebooks/04_distill.ipynb" in readme and "gh/kdmri/kdmri" not in readme
    nb = nbformat.read(tmp_path / "notebooks" / "02_vit_teacher.ipynb", as_version=4)
    assert any("git+https://github.com/someone/kdmri-fork" in c.source for c in nb.cells)


def test_only_github_addresses_make_badges():
    assert C.github_slug("https://github.com/a-b/c.d") == "a-b/c.d"
    with pytest.raises(ConfigError, match="expected https://github.com/OWNER/NAME"):
        C.github_slug("https://gitlab.com/a/b")


def _wheel(tmp: Path) -> Path:
    """A wheel of this checkout, built offline from a copy (the source tree stays clean)."""
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(ROOT / f, src / f)
    shutil.copytree(ROOT / "kdmri_lib", src / "kdmri_lib", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "wheels"), str(src)], check=True, capture_output=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    return next((tmp / "wheels").glob("kdmri-*.whl"))


def _fake_colab_python(tmp: Path) -> tuple[Path, Path]:
    """A fresh virtual environment that sees this environment's packages (torch, fastmri, ...) as
    already installed, as Colab has its own, but not kdmri; returns (python, its site-packages)."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()))
    deps = tmp / "preinstalled"
    deps.mkdir()
    for entry in site.iterdir():
        if not re.match(r"(kdmri|__editable__|_kdmri)", entry.name) and not entry.name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    py = tmp / "venv" / "bin" / "python"
    own = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip())
    (own / "preinstalled.pth").write_text(str(deps) + "\n")
    return py, own


@pytest.mark.slow
def test_the_setup_cell_installs_on_a_fake_colab_and_keeps_its_torch(tmp_path):
    wheel = _wheel(tmp_path)
    py, own = _fake_colab_python(tmp_path)
    cell = C.setup_cell("04_distill", C.repository_url())
    install = cell[: cell.index("import kdmri_lib as kd")] + "import kdmri_lib as kd\n"
    script = tmp_path / "colab_cell.py"
    script.write_text("import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')   # a fake Colab\n"
                      + install + "import torch\nprint('KDMRI', kd.__file__)\nprint('TORCH', torch.__version__, torch.__file__)\n"
                      "from kdmri_lib.pretrained import index\nprint('ZOO', sum(1 for n in index.names() if index.verify(n)))\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
           "KDMRI_SOURCE": str(wheel), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    r = subprocess.run([str(py), str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.split(" ", 1)[0] in ("KDMRI", "TORCH", "ZOO"))
    assert out["KDMRI"].startswith(str(own))                            # the wheel was installed, into the venv
    import torch

    assert out["TORCH"].split()[0] == torch.__version__                 # Colab's torch: the same version ...
    assert str(tmp_path / "preinstalled") in out["TORCH"]                # ... and the same files (not reinstalled)
    assert not list(own.glob("torch*"))
    assert int(out["ZOO"]) >= 5                                          # the zoo ships inside the package, verified
    with pytest.raises(subprocess.CalledProcessError):                   # and it really needs no network: a
        subprocess.run([str(py), "-m", "pip", "install", "-q", "kdmri-not-a-package"], env=env, check=True,
                       capture_output=True, timeout=120)                # package it lacks cannot be fetched
