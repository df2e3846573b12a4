"""The ablation benchmark end to end, at a budget of one step per row and two seeds (the real
table: make bench-distill), and its statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdmri_lib import ablation as A


@pytest.mark.slow
def test_mini_ablation_writes_table_json_figure_and_is_resumable(demo_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--out", str(out), "--data", str(demo_dir), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--val-slices", "1", "--device", "cpu", "--no-progress", "--seeds", "0,1",
            "--teacher", "pretrained:sr4_teacher_tiny"]
    assert A.main(args) == 0
    log = capsys.readouterr().out
    result = json.loads((out / "ablation.json").read_text())
    assert set(result) == {"settings", "meta", "rows"}
    s = result["settings"]
    assert (s["task"], s["factor"], s["seeds"]) == ("sr", 4, [0, 1])
    assert s["protocol"]["target"] == ["*_sagittal_*"] and s["protocol"]["references"] == 12
    rows = result["rows"]
    assert [r["name"] for r in rows] == list(A.ROW_NAMES)
    by = {r["name"]: r for r in rows}
    for r in rows:
        assert {"name", "label", "params", "GFLOPs", "PSNR", "PSNR_sd", "SSIM", "NMSE", "per_seed",
                "heldout_PSNR"} <= set(r)
        assert len(r["slice_PSNR"]) == result["meta"]["sets"]["scored"]["slices"] == 12
        if r["name"] in A.DISTILL_ROWS + ("student", "unet"):
            assert [p["seed"] for p in r["per_seed"]] == [0, 1]
            for p in r["per_seed"]:
                assert (out / r["name"] / f"seed{p['seed']}" / "last.pt").is_file()
            assert r["PSNR"] == pytest.approx(np.mean([p["PSNR"] for p in r["per_seed"]]))
            assert r["PSNR_sd"] == pytest.approx(np.std([p["PSNR"] for p in r["per_seed"]], ddof=1))
    assert by["zero_filled"]["params"] == 0 and by["student"]["GFLOPs"] < by["teacher"]["GFLOPs"]
    assert by["full"]["params"] == by["student"]["params"]
    assert len(by["teacher_corrected"]["per_seed"]) == 2
    comps = {(c["a"], c["b"], c["set"]) for c in result["meta"]["comparisons"]}
    assert {("full", "student", "scored"), ("full", "kd_vanilla", "scored"), ("teacher_corrected", "teacher", "heldout")} <= comps
    md = (out / "ablation.md").read_text()
    assert "| row | params | GFLOPs | PSNR (dB) | SSIM | NMSE | held-out PSNR (dB) | train time (s) |" in md
    assert "python -m kdmri_lib.ablation" in md and "bootstrap interval" in md and "measurement-only pool" in md
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # the student alone really saw only the references: 12 slices of 2 volumes
    cfg = json.loads((out / "student" / "seed0" / "config.json").read_text())
    assert cfg["references"] == 12 and cfg["unlabelled"] is False and cfg["train_files"] == ["*_sagittal_*"]
    # a second run reuses every finished run
    stamp = (out / "student" / "seed0" / "last.pt").stat().st_mtime_ns
    assert A.main(args) == 0
    assert (out / "student" / "seed0" / "last.pt").stat().st_mtime_ns == stamp
    assert "training" not in capsys.readouterr().out


def test_paired_difference_bootstrap_interval():
    a = {"slice_PSNR": [30.0 + 0.5 + 0.01 * i for i in range(20)]}
    b = {"slice_PSNR": [30.0 + 0.01 * ((7 * i) % 5) for i in range(20)]}
    d = A.paired_difference(a, b)
    assert d["lo"] <= d["mean"] <= d["hi"] and d["excludes_zero"] and d["slices"] == 20
    same = A.paired_difference(b, b)
    assert same["mean"] == 0 and not same["excludes_zero"]
    noisy = A.paired_difference({"slice_PSNR": [1.0, -1.0, 1.0, -1.0]}, {"slice_PSNR": [0.0] * 4})
    assert noisy["lo"] < 0 < noisy["hi"] and not noisy["excludes_zero"]


def test_unknown_row_is_a_clear_error(tmp_path, demo_dir, capsys):
    assert A.main(["--out", str(tmp_path), "--data", str(demo_dir), "--rows", "student,kd_magic"]) == 2
    assert "kd_magic" in capsys.readouterr().err
