"""The bad-input corpus for the notebook parameters (``setup`` / ``_validate``): one clear error
naming the parameter (``tests/_corpus.py``).
"""

from __future__ import annotations

import pytest
from _corpus import (  # the corpus's shared helpers
    UNI,
    assert_unchanged,
    declare,
    record,
    snapshot,
    stat_snapshot,
)

from kdmri_lib.core.errors import ConfigError

# --------------------------------------------------------------------------------------------
# 6. notebook parameters: kdmri_lib.teaching.notebook._validate / setup
# --------------------------------------------------------------------------------------------

NB_PARAMS = {
    "epochs=0": ({"epochs": 0}, "'epochs' must be >= 1"),
    "epochs=-1": ({"epochs": -1}, "'epochs' must be >= 1"),
    "epochs='10'": ({"epochs": "10"}, "'epochs' must be an integer; got '10'"),
    "epochs=2.5": ({"epochs": 2.5}, "'epochs' must be an integer; got 2.5"),
    "epochs=None": ({"epochs": None}, "'epochs' must be an integer >= 1; got None"),
    "epochs=True": ({"epochs": True}, "'epochs' must be an integer; got True"),
    "teacher_epochs=-1": ({"teacher_epochs": -1}, "'teacher_epochs' must be >= 0"),
    "batch_size=0": ({"batch_size": 0}, "'batch_size' must be >= 1"),
    "batch_size=2.5": ({"batch_size": 2.5}, "'batch_size' must be an integer"),
    "batch_size=[8]": ({"batch_size": [8]}, "'batch_size' must be an integer"),
    "patch_size=64": ({"patch_size": 64}, "patch_size=64: training on patches is not supported"),
    "patch_size=8 scale=4": ({"task": "sr", "scale": 4, "patch_size": 8}, "patch_size=8: .*every sample is the measurement of a whole slice"),
    "steps_per_epoch=0": ({"steps_per_epoch": 0}, "'steps_per_epoch' must be >= 1"),
    "val_slices=0": ({"val_slices": 0}, "'val_slices' must be >= 1"),
    "scale=5": ({"scale": 5}, "'scale' must be one of 2, 3, 4, 8"),
    "scale=None": ({"scale": None}, "'scale' must be an integer"),
    "acceleration=0": ({"acceleration": 0}, "'acceleration' must be >= 1"),
    "task='mri'": ({"task": "mri"}, "'task' must be one of 'sr', 'cs'"),
    "task=None": ({"task": None}, "'task' must be one of"),
    "preset='huge'": ({"preset": "huge"}, "'preset' must be one of"),
    "teacher_preset='large'": ({"teacher_preset": "large"}, "'teacher_preset' must be one of"),
    "ablation_preset=None": ({"ablation_preset": None}, "'ablation_preset' must be one of"),
    "device='tpu'": ({"device": "tpu"}, "'device' must be one of"),
    "device=0": ({"device": 0}, "'device' must be one of"),
    "lr=0": ({"lr": 0}, "'lr' must be > 0"),
    "lr='1e-3'": ({"lr": "1e-3"}, "'lr' must be a number"),
    "lr=nan": ({"lr": float("nan")}, "'lr' must be finite"),
    "lr=-1": ({"lr": -1}, "'lr' must be > 0"),
    "teacher_lr=-1": ({"teacher_lr": -1.0}, "'teacher_lr' must be > 0"),
    "center_fraction=1.5": ({"center_fraction": 1.5}, "'center_fraction' must be <= 1"),
    "seed=-1": ({"seed": -1}, "'seed' must be >= 0"),
    "seed='0'": ({"seed": "0"}, "'seed' must be an integer"),
    "seed=None": ({"seed": None}, "'seed' must be an integer"),
    "mask_type='radial'": ({"mask_type": "radial"}, "'mask_type' must be one of"),
    "confidence='maybe'": ({"confidence": "maybe"}, "'confidence' must be one of 'none', 'hard', 'soft'"),
    "correction='yes'": ({"correction": "yes"}, "'correction' must be True or False"),
    "profile_latency=1": ({"profile_latency": 1}, "'profile_latency' must be True or False"),
    "run_ablation=None": ({"run_ablation": None}, "'run_ablation' must be True or False"),
    "volume='../x.h5'": ({"volume": "../x.h5"}, "'volume' must be None or the name of a file"),
    "volume=3": ({"volume": 3}, "'volume' must be None or the name"),
    "slice_num=-1": ({"slice_num": -1}, "'slice_num' must be >= 0"),
    "ablation_epochs=0": ({"ablation_epochs": 0}, "'ablation_epochs' must be >= 1"),
    "data_dir=None": ({"data_dir": None}, "'data_dir' must be a path"),
    "data_dir=''": ({"data_dir": ""}, "'data_dir' must be a path"),
    "run_dir=5": ({"run_dir": 5}, "'run_dir' must be a path"),
}
NB_SETUP = {
    # id: (namespace maker(tmp, demo) -> dict, message)
    "data_dir is a file": (lambda t, d: {"data_dir": str(t / "a file.txt")}, "'data_dir': .* is a file"),
    "data_dir is an unrelated folder": (lambda t, d: {"data_dir": str(t / "my thesis")}, "holds no fastMRI data .* not empty"),
    "run_dir is a file": (lambda t, d: {"data_dir": str(d), "run_dir": str(t / "a file.txt")}, "'run_dir': .* is a file"),
    "run_dir under a file": (lambda t, d: {"data_dir": str(d), "run_dir": str(t / "a file.txt" / "runs")}, "is a file"),
    "device cuda:7": (lambda t, d: {"data_dir": str(d), "device": "cuda:7"}, "notebook parameter 'device': device 'cuda:7'"),
    "no data and build_data=False": (lambda t, d: {"data_dir": str(t / "new folder"), "_build": False},
                                     "holds no singlecoil_train/"),
}
declare("notebook parameters", list(NB_PARAMS) + list(NB_SETUP))


@pytest.mark.parametrize("case", list(NB_PARAMS), ids=list(NB_PARAMS))
def test_notebook_parameter_bad_value(case):
    from kdmri_lib.teaching.notebook import _validate

    params, match = NB_PARAMS[case]
    with pytest.raises(ConfigError, match=f"notebook parameter {match}"):
        _validate(params)
    record("notebook parameters", case)


@pytest.mark.parametrize("case", list(NB_SETUP), ids=list(NB_SETUP))
def test_notebook_setup_bad_folder(case, tmp_path, demo_dir):
    from kdmri_lib.teaching.notebook import setup

    t = tmp_path / UNI
    t.mkdir()
    (t / "a file.txt").write_text("x")
    (t / "my thesis").mkdir()
    (t / "my thesis" / "chapter 1.tex").write_text("important")
    ns = NB_SETUP[case][0](t, demo_dir)
    build = ns.pop("_build", True)
    ns.setdefault("run_dir", str(t / "runs"))
    before, demo_before = snapshot(t), stat_snapshot(demo_dir)
    with pytest.raises(ConfigError, match=NB_SETUP[case][1]):
        setup(ns, "test", build_data=build, quiet=True)
    assert_unchanged(before, snapshot(t))
    assert not (t / "my thesis" / "singlecoil_train").exists()
    assert_unchanged(demo_before, stat_snapshot(demo_dir))
    record("notebook parameters", case)


def test_notebook_parameters_that_are_fine(tmp_path, demo_dir):
    """Not errors: whole floats for integers (YAML), None where it means 'all' / 'one pass', a split folder."""
    from kdmri_lib.teaching.notebook import _validate, setup

    p = _validate({"epochs": 4.0, "steps_per_epoch": None, "val_slices": None, "patch_size": None, "teacher_lr": None,
                   "volume": None, "lr": 1, "device": "CPU", "center_fraction": None, "unknown_knob": object})
    assert p["epochs"] == 4 and isinstance(p["epochs"], int) and p["lr"] == 1.0
    ctx = setup({"data_dir": str(demo_dir / "singlecoil_val"), "run_dir": str(tmp_path / f"runs {UNI}")}, "t", quiet=True)
    assert ctx.data_dir == demo_dir / "singlecoil_val" and (tmp_path / f"runs {UNI}").is_dir()
