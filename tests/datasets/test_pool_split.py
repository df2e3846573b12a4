"""A measurement-only pool from another split (fastMRI's test split: under-sampled k-space as
acquired, its mask, no ground truth) — the protocol at the paper's scale (``--protocol knee``),
on a tiny folder laid out like the prepared fastMRI knee (``data_scripts/prepare_fastmri.py``)."""

from __future__ import annotations

import json
import fastmri
import h5py
import numpy as np
import pytest
import torch

from kdmri_lib.core.errors import ConfigError, DataError
from kdmri_lib.datasets.data import MRISliceDataset, build_dataset
from kdmri_lib.datasets.data import pool_dataset
from kdmri_lib.datasets.protocol import KNEE, Interleave, MeasurementOnly
from kdmri_lib.engine.run_config import TrainConfig
from _knee import KW, REC, knee_file, make_knee


@pytest.fixture(scope="module")
def knee(tmp_path_factory):
    return make_knee(tmp_path_factory.mktemp("knee"))


def test_a_test_split_file_is_used_as_acquired(knee):
    """y is the stored (masked) k-space, the mask is the stored one (not a new one over it), the start
    image is fastMRI's zero-filled crop (its own ifft2c as the oracle), and there is no target."""
    pool = pool_dataset(knee, "test", "cs", 4)
    assert [f.name for f in pool.files] == ["file100200_v2.h5", "file100202_v2.h5"]   # the 8x file is left out
    s = pool.measurement(0)
    with h5py.File(knee / "singlecoil_test" / "file100200_v2.h5") as hf:
        k, mask = torch.from_numpy(hf["kspace"][0]), torch.from_numpy(np.asarray(hf["mask"])).float()
        assert "reconstruction_esc" not in hf
    assert torch.equal(s["mask"].reshape(-1), mask)
    torch.testing.assert_close(s["y"][0] * s["scale"], k, rtol=1e-6, atol=1e-6)
    zf = fastmri.ifft2c(torch.view_as_real(k))
    zf = torch.view_as_complex(fastmri.data.transforms.complex_center_crop(zf, (REC, REC)).contiguous())
    torch.testing.assert_close(s["initial"][0] * s["scale"], zf, rtol=1e-4, atol=1e-4)
    assert s["target"].shape == (1, REC, REC) and not s["target"].any()
    assert float(s["labelled"]) == 0 and float(s["max"]) == 0
    # data consistency with the collated batch's operator uses the stored mask
    from kdmri_lib.datasets.data import batch_operator

    batch = torch.utils.data.default_collate([pool.measurement(0), pool.measurement(1)])
    op = batch_operator(batch, "cs", 4)
    torch.testing.assert_close(op.initial(batch["y"]), batch["initial"], rtol=1e-5, atol=1e-6)
    # as a training or scored slice it is refused: it has no ground truth
    with pytest.raises(DataError, match="file100200_v2.h5: stores an under-sampled acquisition"):
        pool[0]


def test_pool_accelerations_and_tasks(knee):
    assert [f.name for f in pool_dataset(knee, "test", "cs", 8).files] == ["file100201_v2.h5"]
    with pytest.raises(DataError, match=r"no file acquired at acceleration 6 \(found: 4, 8\)"):
        pool_dataset(knee, "test", "cs", 6)
    with pytest.raises(DataError, match="an sr pool needs fully-sampled k-space"):
        pool_dataset(knee, "test", "sr", 4)
    ds = MRISliceDataset(knee / "singlecoil_test", "cs", 8)   # unfiltered: a 4x file under cs x8
    with pytest.raises(DataError, match="file100200_v2.h5: acquired at acceleration 4; the task is cs x8"):
        ds.measurement(0)
    with pytest.raises(DataError, match="task 'sr' needs fully-sampled k-space"):
        MRISliceDataset(knee / "singlecoil_test", "sr", 4).measurement(0)


def test_bad_stored_mask_is_a_clear_error(tmp_path):
    (tmp_path / "singlecoil_test").mkdir()
    f = tmp_path / "singlecoil_test" / "bad.h5"
    knee_file(f, seed=1, acceleration=4)
    with h5py.File(f, "a") as hf:
        del hf["mask"]
        hf.create_dataset("mask", data=np.ones(KW - 3))
    with pytest.raises(DataError, match=f"bad.h5: its mask has {KW - 3} entries; expected {KW}"):
        pool_dataset(tmp_path, "test", "cs", 4).measurement(0)


def test_protocol_with_a_pool_of_another_split(knee):
    """References from the training split (ground truth); the pool is every 4x slice of the test split and
    nothing else: no training volume without a reference, no validation slice."""
    ds = build_dataset(knee, "train", "cs", 4, references=2, unlabelled=True, pool_split="test")
    assert isinstance(ds, Interleave) and isinstance(ds.pool, MeasurementOnly)
    assert len(ds.refs) == 2 and len({ds.refs[i]["fname"] for i in range(2)}) == 1   # one whole volume
    pool = [ds.pool[i] for i in range(len(ds.pool))]
    assert sorted((p["fname"], p["slice_num"]) for p in pool) == [
        ("file100200_v2.h5", 0), ("file100200_v2.h5", 1), ("file100200_v2.h5", 2),
        ("file100202_v2.h5", 0), ("file100202_v2.h5", 1)]
    assert all(float(p["labelled"]) == 0 and not p["target"].any() for p in pool)
    assert all(float(ds.refs[i]["labelled"]) == 1 and ds.refs[i]["target"].any() for i in range(2))
    with pytest.raises(ConfigError, match="needs unlabelled=True"):
        build_dataset(knee, "train", "cs", 4, references=2, pool_split="test")


def test_run_config_checks_the_pool_split(knee, tmp_path):
    base = dict(mode="distill", data_dir=str(knee), task="cs", factor=4, teacher_checkpoint="pretrained:sr4_teacher_tiny",
                references=2, unlabelled=True, out_dir=str(tmp_path))
    TrainConfig(**base, pool_split="test").validate()
    for bad, msg in (("val", "the validation split is scored"), ("train", "must come from another split"),
                     ("", "must be a split name")):
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(**base, pool_split=bad).validate()
    with pytest.raises(ConfigError, match="pool_split needs unlabelled=True"):
        TrainConfig(**{**base, "unlabelled": False}, pool_split="test").validate()
    with pytest.raises(DataError, match="singlecoil_challenge"):
        TrainConfig(**base, pool_split="challenge").validate()


@pytest.mark.slow
def test_knee_protocol_ablation_end_to_end(knee, tmp_path, capsys):
    """``--protocol knee``: the teacher pre-trains on the training split, the distillation rows read the test
    split as their pool, every row is scored on the validation split; one step per row."""
    from kdmri_lib.experiments import ablation as A

    out = tmp_path / "bench"
    args = ["--protocol", "knee", "--out", str(out), "--data", str(knee), "--task", "cs", "--acceleration", "4",
            "--references", "2", "--epochs", "1", "--steps-per-epoch", "1", "--teacher-epochs", "1",
            "--batch-size", "1", "--val-slices", "1", "--device", "cpu", "--no-progress", "--seeds", "0",
            "--rows", "zero_filled,student,kd_output,full,teacher,teacher_corrected"]
    assert A.main(args) == 0, capsys.readouterr().err
    result = json.loads((out / "ablation.json").read_text())
    assert result["settings"]["protocol"] == {**KNEE.to_dict(), "references": 2}
    assert result["settings"]["teacher"] == "train" and (out / "teacher" / "last.pt").is_file()
    assert "measurement-only pool: 5 slices of 2 volume(s) of singlecoil_test" in result["meta"]["split"]
    assert {r["name"] for r in result["rows"]} >= {"zero_filled", "student", "kd_output", "full", "teacher",
                                                   "teacher_corrected"}
    teacher_cfg = json.loads((out / "teacher" / "config.json").read_text())
    assert teacher_cfg["mode"] == "teacher" and teacher_cfg["train_files"] == ["*"]
    for row in ("kd_output", "full"):
        cfg = json.loads((out / row / "seed0" / "config.json").read_text())
        assert (cfg["pool_split"], cfg["references"], cfg["unlabelled"]) == ("test", 2, True)
    cfg = json.loads((out / "student" / "seed0" / "config.json").read_text())
    assert cfg["pool_split"] is None and cfg["unlabelled"] is False
    with pytest.raises(SystemExit):
        A.main(["--protocol", "brain"])
    assert A.main(["--protocol", "knee", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "the knee protocol needs its data prepared first" in capsys.readouterr().err


def test_a_batch_of_different_matrices_is_a_clear_error():
    """fastMRI knee k-space widths differ between files (368, 372, ...): a batch that mixes them names them."""
    from kdmri_lib.datasets.data import collate

    def sample(w, name):
        return {"y": torch.zeros(1, 8, w, dtype=torch.complex64), "target": torch.zeros(1, 4, 4), "fname": name,
                "slice_num": 0}
    assert collate([sample(6, "a.h5"), sample(6, "b.h5")])["y"].shape == (2, 1, 8, 6)
    with pytest.raises(DataError, match=r"different sizes \(8x6: a.h5:0; 8x7: b.h5:0\)"):
        collate([sample(6, "a.h5"), sample(7, "b.h5")])
