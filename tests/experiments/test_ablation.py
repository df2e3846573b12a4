"""The ablation benchmark end to end, at a budget of one step per row and two seeds (the real
table: make bench-distill), and its statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdmri_lib.experiments import ablation as A
from kdmri_lib.experiments import ablation_workers


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
        if r["name"] in A.DISTILL_ROWS + ("student", "student_matched", "unet"):
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
    vols = result["meta"]["sets"]["scored"]["files"]
    for r in rows:   # per scored volume (one per contrast): the mean of that volume's slices
        assert list(r["volume_PSNR"]) == vols
        assert np.mean(list(r["volume_PSNR"].values())) == pytest.approx(np.mean(r["slice_PSNR"]))
    assert "### By scored volume" in md and "references: 12 slices" in result["meta"]["split"]
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


def test_notebook_05_shows_an_ablation_only_for_its_own_task_and_factor(tmp_path):
    from kdmri_lib.experiments import results as R

    rows = [{"name": "student", "label": "student alone", "params": 1, "GFLOPs": 0.1, "PSNR": 21.0, "PSNR_sd": 0.1,
             "SSIM": 0.8, "NMSE": 0.03, "seeds": 3, "slice_PSNR": [21.0, 21.5], "per_seed": []},
            {"name": "full", "label": "full", "params": 1, "GFLOPs": 0.1, "PSNR": 21.4, "PSNR_sd": 0.1, "SSIM": 0.81,
             "NMSE": 0.03, "seeds": 3, "slice_PSNR": [21.6, 21.8], "per_seed": []}]
    comps = A.comparisons(rows)
    data = {"settings": A.AblationSettings().to_dict(), "meta": {"comparisons": comps, "command": "x"}, "rows": rows}
    (tmp_path / "sr").mkdir()
    (tmp_path / "sr" / "ablation.json").write_text(json.dumps(data))
    got = R.load_or_run_ablation(tmp_path / "sr", tmp_path / "none", run=False, task="sr", factor=4, shipped=False)
    assert got is not None and [r["row"] for r in got["rows"]] == ["student alone", "full"]
    assert any("`full` - `student`" in c for c in got["comparisons"])
    assert R.load_or_run_ablation(tmp_path / "sr", tmp_path / "none", run=False, task="cs", factor=4, shipped=False) is None
    assert R.load_or_run_ablation(tmp_path / "sr", tmp_path / "none", run=False, task="sr", factor=2, shipped=False) is None
    (tmp_path / "old").mkdir()                                 # a list without settings: never shown
    (tmp_path / "old" / "ablation.json").write_text(json.dumps(rows))
    assert R.load_or_run_ablation(tmp_path / "old", tmp_path / "none", run=False, task="sr", factor=4, shipped=False) is None


def test_the_shipped_ablation_matches_the_default_settings():
    """The zoo's ablation.json (shown by notebook 05 on Binder / Colab) is the default run's."""
    from kdmri_lib.experiments import results as R

    found = R._read_ablation(R.shipped_ablation())
    if found is None:
        pytest.skip("no ablation.json shipped in the zoo")
    d = A.AblationSettings().to_dict()
    for k in ("task", "factor", "preset", "teacher", "epochs", "steps_per_epoch", "seeds", "protocol"):
        assert found["settings"][k] == d[k], k
    assert [r["name"] for r in found["rows"]] == list(A.ROW_NAMES)
    assert found["meta"]["command"].startswith("python -m kdmri_lib.ablation")


def test_worker_shares_cover_every_run_once_and_balance_the_cost():
    what_of = {n: w for n, _, w in A.ROWS}
    runs = [(n, s) for n in A.ROW_NAMES if what_of[n] in ("unet", "student", "distill") for s in (0, 1, 2)]
    parts = A.shares(runs, 2, what_of)
    assert sorted(r for p in parts for r in p) == sorted(runs) and parts == A.shares(runs, 2, what_of)
    cost = [sum(ablation_workers._COST.get(n, ablation_workers._COST.get(what_of[n], 1.0)) for n, _ in p) for p in parts]
    assert max(cost) - min(cost) <= max(ablation_workers._COST.values())


def test_volume_means_group_slices_by_file():
    from kdmri_lib.experiments.ablation_report import volume_means

    assert volume_means([1.0, 3.0, 10.0, 20.0, 5.0], ["a", "a", "b", "b", "a"]) == {"a": 3.0, "b": 15.0}
    with pytest.raises(ValueError, match="2 slice values for 3 slice files"):
        volume_means([1.0, 2.0], ["a", "b", "c"])


def test_ablation_settings_start_from_the_run_configuration():
    """The settings a training run also has take TrainConfig's defaults (one definition)."""
    from kdmri_lib.engine.run_config import TrainConfig

    s, t = A.AblationSettings(), TrainConfig()
    assert (s.data, s.task, s.factor, s.preset, s.teacher_preset, s.batch_size, s.lr, s.device) == \
        (t.data_dir, t.task, t.factor, t.preset, t.teacher_preset, t.batch_size, t.lr, t.device)
    cfg = A._train_config(s, "student", "student", 0)
    assert (cfg.task, cfg.factor, cfg.preset, cfg.data_dir) == (t.task, t.factor, t.preset, t.data_dir)


@pytest.mark.slow
def test_candidate_rows_train_with_the_same_settings_and_are_compared_with_their_base(demo_dir, tmp_path, capsys):
    out = tmp_path / "cand"
    args = ["--out", str(out), "--data", str(demo_dir), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "1",
            "--val-slices", "1", "--device", "cpu", "--no-progress", "--seeds", "0",
            "--teacher", "pretrained:sr4_teacher_tiny", "--rows", "student,kd_tta", "--candidates", "kd_prestage"]
    assert A.main(args) == 0, capsys.readouterr().err
    result = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["student", "kd_tta", "kd_prestage"]
    assert result["settings"]["candidates"] == ["kd_prestage"]
    cfg = json.loads((out / "kd_prestage" / "seed0" / "config.json").read_text())
    twin = json.loads((out / "kd_tta" / "seed0" / "config.json").read_text())
    assert cfg["distill"]["prestage_steps"] == 400 and cfg["distill"]["feature_kd"] is True
    assert {k: v for k, v in cfg.items() if k not in ("distill", "out_dir")} == \
        {k: v for k, v in twin.items() if k not in ("distill", "out_dir")}
    assert ("kd_prestage", "kd_tta", "scored") in {(c["a"], c["b"], c["set"]) for c in result["meta"]["comparisons"]}
    assert "kd_prestage" in (out / "ablation.md").read_text()
    assert A.main(args[:-1] + ["kd_magic"]) == 2
    assert "unknown candidate row(s) kd_magic" in capsys.readouterr().err
    assert "candidates" not in A.AblationSettings().to_dict()   # the default run's settings are unchanged


def test_the_candidate_figures_in_the_docs_are_the_stored_run():
    """docs/training.md's kd_prestage paragraph quotes docs/measured/ablation_candidates.json (the run its command made)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = json.loads((root / "docs" / "measured" / "ablation_candidates.json").read_text())
    by = {r["name"]: r for r in result["rows"]}
    comps = {(c["a"], c["b"], c["set"]): c for c in result["meta"]["comparisons"]}
    text = " ".join((root / "docs" / "training.md").read_text().split())
    pre, tta, alone = by["kd_prestage"], by["kd_tta"], by["student"]
    assert f"{pre['PSNR']:.2f} +- {pre['PSNR_sd']:.2f} dB on the target slices against {tta['PSNR']:.2f}" in text
    assert f"{alone['PSNR']:.2f} for the student alone" in text
    c = comps[("kd_prestage", "kd_tta", "scored")]
    assert f"paired {c['mean']:.2f} dB, interval {c['lo']:.2f} to {c['hi']:.2f}" in text
    h = comps[("kd_prestage", "kd_tta", "heldout")]
    assert f"{h['mean']:.2f} dB against `kd_tta` ({h['lo']:.2f} to {h['hi']:.2f})" in text
    assert result["settings"]["candidates"] == ["kd_prestage"] and "--candidates kd_prestage" in result["meta"]["command"]
