"""The environment that `make install` builds: importable, no torchvision/lightning, CI wiring."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys


def test_core_imports_in_a_fresh_interpreter():
    code = ("import kdmri_lib, fastmri.data, fastmri.evaluate, fastmri.models, sys; "
            "import kdmri_lib.mri.physics, kdmri_lib.datasets.data, kdmri_lib.mri.metrics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torchvision', 'pytorch_lightning', 'lightning', 'torchmetrics')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_broken_training_only_packages_installed():
    # fastmri is installed without its training-only dependencies; none of them may linger
    for name in ("torchvision", "pytorch_lightning", "lightning", "torchmetrics"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed; it cannot import next to a CPU torch"


def test_library_never_imports_torchvision_or_lightning(repo_root):
    pat = re.compile(r"^\s*(import|from)\s+(torchvision|pytorch_lightning|lightning)\b", re.M)
    for path in (repo_root / "kdmri_lib").rglob("*.py"):
        assert not pat.search(path.read_text()), path


def test_ci_runs_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)\s*$", quick, re.M)
    assert commands == ["make demo", "make test"], commands
    ci = (repo_root / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)


def _names(specs):
    import re as _re
    return {_re.split(r"[<>=!~ \[]", s.strip(), 1)[0].lower().replace("_", "-") for s in specs}


def test_conda_environments_list_the_same_dependencies(repo_root):
    import tomllib

    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["test"])
    wanted = {"pytorch" if n == "torch" else n for n in wanted}
    for env in ("environment.yml", "binder/environment.yml"):
        text = (repo_root / env).read_text().split("dependencies:", 1)[1]
        deps = [ln.strip()[2:] for ln in text.splitlines() if ln.startswith("  - ")]
        listed = _names(deps) - {"python", "pip"}
        assert listed == wanted, (env, sorted(listed ^ wanted))
