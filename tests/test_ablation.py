"""The ablation benchmark end to end, at a budget of one step per row (the real table: make bench-distill)."""

from __future__ import annotations

import json

import pytest

from kdmri_lib import ablation as A


@pytest.mark.slow
def test_mini_ablation_writes_table_json_figure_and_is_resumable(demo_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--out", str(out), "--data", str(demo_dir), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--val-slices", "1", "--device", "cpu", "--no-progress"]
    assert A.main(args) == 0
    log = capsys.readouterr().out
    assert log.count("[ablation]") >= len(A.ROWS) + 1
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in rows] == list(A.ROW_NAMES)
    for r in rows:
        assert {"name", "params", "GFLOPs", "PSNR", "SSIM", "NMSE", "train_time_s", "checkpoint"} <= set(r)
        if r["params"]:
            assert (out / r["name"] / "last.pt").is_file() and r["checkpoint"].endswith("last.pt")
        assert len(list((out / r["name"] / "reconstructions").glob("*.h5"))) == 6
    by = {r["name"]: r for r in rows}
    assert by["zero_filled"]["params"] == 0 and by["student"]["GFLOPs"] < by["teacher"]["GFLOPs"]
    assert by["kd_dynamic"]["params"] == by["student"]["params"]
    assert "corrected_teacher_val_PSNR" in by["kd_correction"]
    md = (out / "ablation.md").read_text()
    assert "| row | params | GFLOPs | PSNR (dB) | SSIM | NMSE | train time (s) |" in md
    assert "python -m kdmri_lib.ablation" in md and "vs student alone" in md
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # a second run reuses every finished row
    stamp = (out / "student" / "last.pt").stat().st_mtime_ns
    assert A.main(args) == 0
    assert "not retrained" in capsys.readouterr().out
    assert (out / "student" / "last.pt").stat().st_mtime_ns == stamp


def test_unknown_row_is_a_clear_error(tmp_path, demo_dir, capsys):
    assert A.main(["--out", str(tmp_path), "--data", str(demo_dir), "--rows", "student,kd_magic"]) == 2
    assert "kd_magic" in capsys.readouterr().err
