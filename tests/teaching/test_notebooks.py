"""Every notebook runs headless (papermill, small parameters) and leaves its files in run_dir;
nbval re-runs the executed notebooks and compares the cells marked ``# NBVAL_CHECK_OUTPUT``.

The notebooks run in order in one temporary ``run_dir``, as ``make demo`` chains them, so 03-05
find the checkpoints of 02-04; 04 is also run alone in an empty ``run_dir`` (it must train its own
teacher first).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdmri_lib.teaching.notebook_runner import NOTEBOOKS, execute, notebooks_dir

pytestmark = pytest.mark.slow

#: small parameters: every notebook in well under a minute on 2 cores
SMALL = {
    "01_kspace_basics": {},
    "02_vit_teacher": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "val_slices": 2},
    "03_cnn_student": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "val_slices": 2,
                       "profile_latency": False},
    "04_distill": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "val_slices": 2,
                   "teacher_epochs": 1},
    "05_evaluation": {"val_slices": 2, "profile_latency": False},
}

#: files each notebook must leave in run_dir
EXPECTED = {
    "01_kspace_basics": ["01_kspace_basics/aliasing.png", "01_kspace_basics/baselines.csv"],
    "02_vit_teacher": ["teacher/best.pt", "teacher/last.pt", "teacher/history.csv", "teacher/reconstructions.png",
                       "teacher/attention.png"],
    "03_cnn_student": ["student/best.pt", "student/history.csv", "student/upsampling.png", "student/iterates.png",
                       "student/reconstructions.png"],
    "04_distill": ["distill/best.pt", "distill/history.csv", "distill/steps.csv", "distill/confidence.png"],
    "05_evaluation": ["results.md", "results.json", "evaluation/boxplot.png", "evaluation/tradeoff.png",
                      "evaluation/comparison.png"],
}


def _run(name: str, run_dir: Path, demo_dir: Path, out_dir: Path, **extra) -> Path:
    src = notebooks_dir() / f"{name}.ipynb"
    if not src.exists():
        pytest.skip(f"{src.name} does not exist yet")
    out = out_dir / f"{name}{'-' + run_dir.name if extra else ''}.ipynb"
    params = {"data_dir": str(demo_dir), "run_dir": str(run_dir), **SMALL[name], **extra}
    execute(src, out, params, cwd=notebooks_dir())
    nb = json.loads(out.read_text())
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", f"{name}: {o.get('ename')}: {o.get('evalue')}"
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o.get("text", ""))
                assert "Warning" not in text and "Traceback" not in text, f"{name}: stderr output: {text[:500]}"
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return {"run": tmp_path_factory.mktemp("run"), "out": tmp_path_factory.mktemp("executed")}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_writes_its_files(name, chain, demo_dir):
    out = _run(name, chain["run"], demo_dir, chain["out"])
    for rel in EXPECTED[name]:
        assert (chain["run"] / rel).exists(), f"{name} did not write {rel}"
    # nbval: re-run the executed notebook and compare the deterministic cells
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--nbval-current-env", str(out)], capture_output=True, text=True, cwd=out.parent)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def _stdout(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])
                     if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_stated_winners_are_the_measured_ones(chain):
    """The claim check: in the chained run's executed notebooks, every "X is best" names the row with
    the highest measured PSNR (05's results.json), and 01's equal-budget sentence matches its numbers."""
    import re

    out05, out01 = chain["out"] / "05_evaluation.ipynb", chain["out"] / "01_kspace_basics.ipynb"
    if not (out05.exists() and out01.exists() and (chain["run"] / "results.json").exists()):
        pytest.skip("needs the chained notebook run of this module")
    rows = json.loads((chain["run"] / "results.json").read_text())["rows"]
    best = max(rows, key=lambda r: r["PSNR"])
    text = _stdout(out05)
    claims = re.findall(r"On the demo validation slices, (.+?) is best \((\d+\.\d+) dB PSNR\)", text)
    assert claims, "05 states no winner"
    from kdmri_lib.experiments.results import BASELINE_NAMES

    assert claims[0] == (BASELINE_NAMES.get(best["method"], best["method"]), f"{best['PSNR']:.2f}")
    m = re.search(r"the (\w+) mask's zero-filled image is ([+-]\d+\.\d+) dB against the (\w+) one "
                  r"\((\d+\.\d+) vs (\d+\.\d+) dB", _stdout(out01))
    assert m, "01 states no equal-budget comparison"
    winner_psnr, other_psnr = float(m.group(4)), float(m.group(5))
    assert winner_psnr >= other_psnr and float(m.group(2)) == pytest.approx(winner_psnr - other_psnr, abs=0.011)


def test_distill_notebook_runs_alone(tmp_path, demo_dir):
    """papermill 04_distill.ipynb with no other notebook run first: it distils from the shipped zoo's
    teacher (nothing is trained as a teacher), and with teacher="train" it trains its own first."""
    out = _run("04_distill", tmp_path / "run", demo_dir, tmp_path)
    assert not (tmp_path / "run" / "teacher").exists()
    assert (tmp_path / "run" / "distill" / "best.pt").exists()
    assert "teacher: pretrained:sr4_teacher_" in out.read_text()
    text = out.read_text()
    assert "teacher: pretrained:sr4_teacher_source_" in text        # the protocol's teacher never saw the target
    assert (tmp_path / "run" / "student_refs" / "last.pt").exists()    # the control
    out = _run("04_distill", tmp_path / "run2", demo_dir, tmp_path, teacher="train", teacher_epochs=1)
    ck = torch.load(tmp_path / "run2" / "teacher_source" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["train_config"]["train_files"] == ["*_axial_*", "*_coronal_*"]
    assert (tmp_path / "run2" / "distill" / "best.pt").exists()


def test_distill_notebook_runs_the_knee_protocol_on_a_fastmri_layout(tmp_path):
    """papermill 04_distill.ipynb -p protocol knee -p task cs (the paper's scale, here on a tiny folder laid out
    like the prepared fastMRI knee): it pre-trains its teacher on the training split, the pool is the test
    split's 4x measurements as acquired, the rows are scored on the validation split."""
    from _knee import make_knee

    (tmp_path / "knee").mkdir()
    knee = make_knee(tmp_path / "knee")
    out = _run("04_distill", tmp_path / "kneerun", knee, tmp_path, protocol="knee", task="cs", acceleration=4,
               teacher="train", teacher_epochs=1, references=2, batch_size=1)
    text = out.read_text()
    assert "measurement-only pool: 5 slices of 2 volume(s) of singlecoil_test" in text
    assert "On the knee validation slices" in text
    ck = torch.load(tmp_path / "kneerun" / "distill" / "last.pt", map_location="cpu", weights_only=True)
    assert (ck["train_config"]["pool_split"], ck["train_config"]["references"]) == ("test", 2)
    ck = torch.load(tmp_path / "kneerun" / "teacher_source" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["train_config"]["train_files"] == ["*"] and ck["train_config"]["task"] == "cs"
    with pytest.raises(Exception, match="notebook parameter 'protocol' must be one of"):
        _run("04_distill", tmp_path / "bad", knee, tmp_path, protocol="brain")


def test_parameter_validation_is_clear(tmp_path, demo_dir):
    import papermill as pm

    src = notebooks_dir() / "01_kspace_basics.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="notebook parameter 'task' must be one of"):
        execute(src, tmp_path / "bad.ipynb", {"data_dir": str(demo_dir), "run_dir": str(tmp_path), "task": "mri"},
                cwd=notebooks_dir())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_carries_clean_outputs_of_a_default_run(name):
    """The notebooks in the repository read well on GitHub: every code cell was executed (a default
    run, stored by ``python -m kdmri_lib.notebook_runner --store-outputs``), no papermill parameter cell was
    left in, and no output holds an error, a warning or an absolute path."""
    import nbformat

    from kdmri_lib.teaching.notebook_runner import notebooks_dir, output_problems

    nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{name}: not every code cell was executed"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert output_problems(nb) == []
    assert any(o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})
               for c in code for o in c.get("outputs", [])), f"{name}: no figure in the stored outputs"


def test_run_config_is_the_notebook_parameters_as_a_train_config(tmp_path, demo_dir):
    """ctx.run_config(mode, **overrides): the parameters a notebook shares with TrainConfig, its data
    folder / task / factor, out_dir = run_dir/mode; TrainConfig's own checks apply to the result."""
    from kdmri_lib.core.errors import ConfigError
    from kdmri_lib.engine.train import TrainConfig
    from kdmri_lib.teaching.notebook import setup

    ns = dict(data_dir=str(demo_dir), run_dir=str(tmp_path), task="sr", scale=4, preset="tiny", epochs=3,
              steps_per_epoch=7, batch_size=None, lr=None, val_slices=2, device="cpu", seed=5)
    ctx = setup(ns, "test", build_data=False, quiet=True)
    cfg = ctx.run_config("student")
    assert cfg.to_dict() == TrainConfig(mode="student", data_dir=str(demo_dir), out_dir=str(tmp_path / "student"),
                                        task="sr", factor=4, preset="tiny", epochs=3, steps_per_epoch=7, val_slices=2,
                                        device="cpu", seed=5).validate(check_paths=False).to_dict()
    assert ctx.run_config("teacher", seed=1).seed == 1 and ctx.run_config("teacher").out_dir == str(tmp_path / "teacher")
    with pytest.raises(ConfigError, match="references"):
        ctx.run_config("student", references=0)
