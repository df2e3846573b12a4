"""torchrun --nproc_per_node=2 (gloo on CPU): one tiny epoch, one set of files, metrics equal to a
single-process evaluation of the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _train_utils import tiny_cfg

from kdmri_lib.engine.reconstruct import evaluate
from kdmri_lib.engine.train import fit
from kdmri_lib.models.checkpoint import load_checkpoint, load_model

REPO = Path(__file__).resolve().parents[2]


def _torchrun(args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "kdmri_lib.engine.train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _common(demo_dir, out):
    return ["--data", str(demo_dir), "--out", str(out), "--device", "cpu", "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--val-slices", "3", "--no-progress"]


@pytest.mark.slow
def test_torchrun_two_processes_gloo_one_epoch(demo_dir, tmp_path):
    out = tmp_path / "ddp"
    r = _torchrun(["student", *_common(demo_dir, out)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.csv", "history.json",
                                                      "last.pt", "steps.csv"]
    assert r.stdout.count("[student] epoch 1/1") == 1                     # rank 0 logs only
    ck = load_checkpoint(out / "last.pt")
    assert ck["world_size"] == 2 and ck["global_step"] == 2 and ck["epoch"] == 1
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 1
    model, _ = load_model(out / "last.pt")
    single = evaluate(model, demo_dir, val_slices=3, per_slice=False)
    for k in ("PSNR", "SSIM", "NMSE"):
        assert hist[0][f"val_{k}"] == pytest.approx(single["means"][k], rel=1e-5), k


@pytest.mark.slow
def test_torchrun_distillation_with_teacher_correction(demo_dir, tmp_path):
    """DDP wraps student, adapters and the corrected teacher (every parameter used: no DDP error)."""
    teacher = fit(tiny_cfg(demo_dir, tmp_path / "t", mode="teacher", steps_per_epoch=1)).last_checkpoint
    out = tmp_path / "kd"
    r = _torchrun(["distill", *_common(demo_dir, out), "--teacher-checkpoint", str(teacher)])
    assert r.returncode == 0, r.stdout + r.stderr
    ck = load_checkpoint(out / "last.pt")
    assert ck["world_size"] == 2 and "teacher" in ck["distill"] and (out / "teacher_last.pt").is_file()
    hist = json.loads((out / "history.json").read_text())
    t_model, _ = load_model(out / "teacher_last.pt")
    t_single = evaluate(t_model, demo_dir, val_slices=3, per_slice=False)
    assert hist[0]["teacher_val_PSNR"] == pytest.approx(t_single["means"]["PSNR"], rel=1e-5)
