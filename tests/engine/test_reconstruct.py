"""Reconstruction CLI: fastMRI submission files, scored by fastMRI's own evaluate == toolkit metrics."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from _train_utils import tiny_cfg

from kdmri_lib.core.errors import DataError
from kdmri_lib.engine import reconstruct as R
from kdmri_lib.engine.train import fit
from kdmri_lib.models import build_model
from kdmri_lib.models.checkpoint import load_model


@pytest.fixture(scope="module")
def student_ckpt(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    return fit(tiny_cfg(demo_dir, out, steps_per_epoch=2)).last_checkpoint


def _close(a: dict, b: dict, keys=("PSNR", "SSIM", "NMSE", "MSE")):
    # per-volume values are fastMRI's own functions on the same arrays; the means can differ in the
    # 8th digit: fastMRI's running statistics accumulate its float32 NMSE / MSE in float32 under NumPy 2
    for k in keys:
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-12), k


def test_cli_output_scored_by_fastmri_evaluate_equals_toolkit_metrics(demo_dir, tmp_path, student_ckpt, capsys):
    out = tmp_path / "recon"
    code = R.main(["--checkpoint", str(student_ckpt), "--data", str(demo_dir), "--out", str(out), "--evaluate",
                   "--device", "cpu", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fastMRI evaluate (6 volumes): PSNR" in printed
    val = demo_dir / "singlecoil_val"
    for f in sorted(val.glob("*.h5")):
        with h5py.File(out / f.name, "r") as hp, h5py.File(f, "r") as ht:
            assert list(hp.keys()) == ["reconstruction"]
            assert hp["reconstruction"].shape == ht["reconstruction_esc"].shape
            assert hp["reconstruction"].dtype == np.float32
    fm = R.fastmri_evaluate(val, out)
    model, _ = load_model(student_ckpt)
    ours = R.evaluate(model, demo_dir, "val")
    assert fm["volumes"] == ours["volumes"] == 6
    _close(fm["means"], ours["means"])
    assert len(ours["per_slice"]) == ours["slices"] == sum(v["slices"] for v in ours["per_volume"])
    assert {"fname", "slice", "PSNR", "SSIM", "NMSE"} <= set(ours["per_slice"][0])


@pytest.mark.parametrize("baseline", ["zero_filled", "bicubic"])
def test_cli_accepts_a_baseline_by_name(demo_dir, tmp_path, baseline, capsys):
    out = tmp_path / baseline
    assert R.main(["--baseline", baseline, "--task", "sr", "--scale", "4", "--data", str(demo_dir / "singlecoil_val"),
                   "--out", str(out), "--evaluate", "--no-progress"]) == 0
    assert "fastMRI evaluate" in capsys.readouterr().out
    fm = R.fastmri_evaluate(demo_dir / "singlecoil_val", out)
    ours = R.evaluate(build_model(baseline, task="sr", factor=4), demo_dir, per_slice=False)
    _close(fm["means"], ours["means"])


def test_fastmri_evaluate_ignores_stray_files_and_names_missing_predictions(demo_dir, tmp_path):
    tgt = tmp_path / "targets"
    tgt.mkdir()
    src = sorted((demo_dir / "singlecoil_val").glob("*.h5"))
    for f in src:
        (tgt / f.name).symlink_to(f)
    (tgt / "README.txt").write_text("not a volume")
    (tgt / ".partial.h5").write_bytes(b"")
    pred = tmp_path / "pred"
    model = build_model("zero_filled", task="sr", factor=4)
    R.write_reconstructions(model, tgt, pred)
    assert sorted(p.name for p in pred.iterdir()) == [f.name for f in src]
    assert R.fastmri_evaluate(tgt, pred)["volumes"] == 6
    (pred / src[0].name).unlink()
    with pytest.raises(DataError, match=src[0].name):
        R.fastmri_evaluate(tgt, pred)


def test_cli_errors(demo_dir, tmp_path, capsys):
    assert R.main(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(demo_dir), "--out", str(tmp_path)]) == 2
    assert "error: " in capsys.readouterr().err
    assert R.main(["--baseline", "zero_filled", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")]) == 2
    assert "error: " in capsys.readouterr().err


def test_slice_cap_is_deterministic_and_spread_over_volumes():
    vols = {"b.h5": [6, 7, 8], "a.h5": [0, 1, 2, 3], "c.h5": [9, 10]}
    assert R.select_slices(vols, None) == {"a.h5": [0, 1, 2, 3], "b.h5": [6, 7, 8], "c.h5": [9, 10]}
    assert R.select_slices(vols, 2) == {"a.h5": [0], "b.h5": [6]}
    assert R.select_slices(vols, 5) == {"a.h5": [0, 1], "b.h5": [6, 7], "c.h5": [9]}


def test_reconstruct_volumes_streams_file_units(demo_dir):
    model = build_model("zero_filled", task="sr", factor=4)
    items = list(R.reconstruct_volumes(model, demo_dir, val_slices=6))
    assert [i[0] for i in items] == sorted(p.name for p in (demo_dir / "singlecoil_val").glob("*.h5"))
    for fname, recon, target in items:
        assert recon.shape == target.shape == (1, 224, 224) and recon.dtype == np.float32
        with h5py.File(demo_dir / "singlecoil_val" / fname, "r") as hf:
            assert np.array_equal(target[0], hf["reconstruction_esc"][0])
        assert 0.5 < recon.max() / target.max() < 2       # file units, not normalised
