"""Training engine: configuration, outputs, exact resume (epoch boundary, interrupt, kill -9),
atomic checkpoints, divergence stop, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _train_utils import TRAIN_DRIVER, assert_same_weights, state_of, tiny_cfg

from kdmri_lib.core.errors import CheckpointError, ConfigError, DataError
from kdmri_lib.distill import DistillConfig
from kdmri_lib.engine import train as T
from kdmri_lib.models.checkpoint import load_checkpoint, load_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, exc, match", [
    (dict(epochs=0), ConfigError, "epochs"),
    (dict(batch_size=0), ConfigError, "batch_size"),
    (dict(task="mri"), ConfigError, "task"),
    (dict(preset="huge"), ConfigError, "preset"),
    (dict(mode="finetune"), ConfigError, "mode"),
    (dict(warmup_steps=-1), ConfigError, "warmup_steps"),
    (dict(lr=0), ConfigError, "lr"),
    (dict(schedule="linear"), ConfigError, "schedule"),
    (dict(steps_per_epoch=0), ConfigError, "steps_per_epoch"),
    (dict(device="tpu"), ConfigError, "device"),
    (dict(mode="distill"), ConfigError, "teacher_checkpoint"),
    (dict(mode="distill", teacher_checkpoint="/nonexistent/t.pt"), ConfigError, "not found"),
    (dict(data_dir="/nonexistent/data"), DataError, "not found"),
    (dict(distill={"confidence": "maybe"}), ConfigError, "confidence"),
])
def test_config_errors(demo_dir, tmp_path, change, exc, match):
    with pytest.raises(exc, match=match):
        tiny_cfg(demo_dir, tmp_path, **change).validate()


def test_config_json_round_trip(demo_dir, tmp_path):
    cfg = tiny_cfg(demo_dir, tmp_path, mode="distill", teacher_checkpoint="t.pt",
                   distill=DistillConfig(confidence="hard", w_kd=0.5))
    d = json.loads(json.dumps(cfg.to_dict()))
    back = T.TrainConfig.from_dict(d)
    assert back == cfg and isinstance(back.distill, DistillConfig)
    with pytest.raises(ConfigError, match="unknown"):
        T.TrainConfig.from_dict({**d, "epochz": 3})


def test_epoch_seed_and_sampler_are_pure_functions():
    assert T.epoch_seed(0, 1) == T.epoch_seed(0, 1) != T.epoch_seed(0, 2) != T.epoch_seed(1, 1)
    ds = list(range(10))
    s = T.EpochSampler(ds, num_replicas=1, rank=0, seed=3, samples_per_replica=25)
    s.set_epoch(4)
    a = list(s)
    s.set_epoch(4)
    assert a == list(s) and len(a) == 25 and sorted(a[:10]) == ds      # longer than one pass: fresh permutations
    r0 = T.EpochSampler(ds, 2, 0, 3, 5)
    r1 = T.EpochSampler(ds, 2, 1, 3, 5)
    r0.set_epoch(0)
    r1.set_epoch(0)
    assert sorted(list(r0) + list(r1)) == ds                          # ranks split one permutation


# --------------------------------------------------------------------------------------------
# a run's outputs
# --------------------------------------------------------------------------------------------

def test_fit_writes_checkpoints_and_logs(demo_dir, tmp_path):
    res = T.fit(tiny_cfg(demo_dir, tmp_path, epochs=2, log_every=2))
    for name in ("last.pt", "best.pt", "history.csv", "history.json", "steps.csv", "config.json"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob(".*.tmp"))
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2]
    for k in ("train_loss", "rec", "val_PSNR", "val_SSIM", "val_NMSE", "lr", "seconds"):
        assert k in h[0]
    assert json.loads((tmp_path / "history.json").read_text()) == h
    assert len((tmp_path / "steps.csv").read_text().splitlines()) == 1 + 3     # 6 steps, every 2nd logged
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 2 and ck["step"] == 0 and ck["global_step"] == 6 and not ck["interrupted"]
    assert ck["train_config"]["mode"] == "student" and ck["model_config"]["kind"] == "student"
    model, _ = load_model(tmp_path / "best.pt", expect={"kind": "student", "task": "sr", "factor": 4})
    assert not model.training
    assert_same_weights(state_of(tmp_path / "last.pt"), {k: v for k, v in res.model.state_dict().items()})
    with pytest.raises(CheckpointError, match=r"student tiny sr x4.*teacher"):
        load_model(tmp_path / "last.pt", expect={"kind": "teacher"})
    with pytest.raises(CheckpointError, match="x2"):
        load_model(tmp_path / "last.pt", expect={"task": "sr", "factor": 2})


def test_unet_mode_trains(demo_dir, tmp_path):
    res = T.fit(tiny_cfg(demo_dir, tmp_path, mode="unet", steps_per_epoch=1))
    assert res.model.kind == "unet" and res.history[0]["val_PSNR"] == res.history[0]["val_PSNR"]  # finite, not NaN


# --------------------------------------------------------------------------------------------
# exact resume
# --------------------------------------------------------------------------------------------

def test_resume_after_epoch_one_equals_uninterrupted(demo_dir, tmp_path):
    """The acceptance test: 1 epoch, then fit(epochs=2, resume=True) == a 2-epoch run (constant LR)."""
    full = T.fit(tiny_cfg(demo_dir, tmp_path / "full", epochs=2, schedule="constant"))
    T.fit(tiny_cfg(demo_dir, tmp_path / "split", epochs=1, schedule="constant"))
    res = T.fit(tiny_cfg(demo_dir, tmp_path / "split", epochs=2, schedule="constant", resume=True))
    assert_same_weights(state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "split" / "last.pt"))
    assert [h["val_PSNR"] for h in res.history] == [h["val_PSNR"] for h in full.history]
    full_ck, split_ck = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for k, v in full_ck["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], split_ck["optimizer"]["state"][k]["exp_avg"])


def test_distill_resume_in_chunks_equals_uninterrupted(demo_dir, tmp_path):
    """Cosine schedule, teacher correction, adapters and the dynamic-weight EMA all resume exactly."""
    teacher = T.fit(tiny_cfg(demo_dir, tmp_path / "t", mode="teacher", steps_per_epoch=2)).last_checkpoint
    kw = dict(mode="distill", teacher_checkpoint=str(teacher), epochs=2, steps_per_epoch=2,
              distill=DistillConfig(feature_kd=True, attention_kd=True))
    T.fit(tiny_cfg(demo_dir, tmp_path / "full", **kw))
    T.fit(tiny_cfg(demo_dir, tmp_path / "split", epoch_limit=1, **kw))
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 1
    T.fit(tiny_cfg(demo_dir, tmp_path / "split", resume=True, **kw))
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert_same_weights(a["model"], b["model"])
    assert_same_weights(a["distill"]["teacher"]["model"], b["distill"]["teacher"]["model"])
    assert_same_weights(a["distill"]["adapters"], b["distill"]["adapters"])
    assert a["distill"]["state"] == b["distill"]["state"]


def test_resume_refuses_other_settings(demo_dir, tmp_path):
    T.fit(tiny_cfg(demo_dir, tmp_path, steps_per_epoch=1))
    with pytest.raises(CheckpointError, match="batch_size"):
        T.fit(tiny_cfg(demo_dir, tmp_path, steps_per_epoch=1, epochs=2, batch_size=3, resume=True))


def test_sigint_in_process_writes_interrupt_checkpoint_and_resumes_exactly(demo_dir, tmp_path):
    kw = dict(epochs=2, steps_per_epoch=3)
    T.fit(tiny_cfg(demo_dir, tmp_path / "full", **kw))
    calls = []

    def signal_after_step_4(trainer, row):
        calls.append(row["global_step"])
        if len(calls) == 4:                       # epoch 2, after its first step
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(T.TrainingInterrupted, match=r"interrupted at epoch 2 step 1; resume with --resume") as ei:
        T.fit(tiny_cfg(demo_dir, tmp_path / "int", **kw), on_step=signal_after_step_4)
    assert signal.getsignal(signal.SIGINT) is before            # handlers restored
    assert (ei.value.epoch, ei.value.step) == (2, 1)
    ck = load_checkpoint(tmp_path / "int" / "last.pt")
    assert ck["interrupted"] and (ck["epoch"], ck["step"], ck["global_step"]) == (1, 1, 4)
    res = T.fit(tiny_cfg(demo_dir, tmp_path / "int", resume=True, **kw))
    assert_same_weights(state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "int" / "last.pt"))
    full_hist = json.loads((tmp_path / "full" / "history.json").read_text())
    assert res.history[-1]["train_loss"] == pytest.approx(full_hist[-1]["train_loss"], rel=1e-12)
    a, b = _steps(tmp_path / "int" / "steps.csv"), _steps(tmp_path / "full" / "steps.csv")
    assert len(a) == 6 and a == b                                    # the step log is continued, not duplicated


def _steps(path):
    import csv

    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _cli(demo_dir, out, *extra):
    return [sys.executable, "-m", "kdmri_lib.engine.train", "student", "--data", str(demo_dir), "--out", str(out),
            "--device", "cpu", "--batch-size", "2", "--val-slices", "2", "--no-progress",
            "--quiet", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _paused_cli(demo_dir, out, at, *extra):
    """Start the training CLI paused after global step ``at`` (``TRAIN_DRIVER``'s ``pause``): the
    run is in the middle of an epoch, with steps left, when the test signals it. Returns (process, ready, go)."""
    ready, go = out.parent / f"{out.name}.ready", out.parent / f"{out.name}.go"
    argv = _cli(demo_dir, out, *extra)[3:]
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_DRIVER, "pause", str(at), str(ready), str(go), *argv], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {at}: {proc.communicate()}")
        if time.time() - t0 > 300:
            proc.kill()
            raise AssertionError(f"timed out waiting for step {at}")
        time.sleep(0.02)
    return proc, ready, go


@pytest.mark.slow
def test_cli_sigint_mid_epoch_then_resume_equals_uninterrupted(demo_dir, tmp_path):
    """A real SIGINT from outside the process, in the middle of epoch 2 (after its first step):
    exit code 130, an interrupt checkpoint at epoch 2 step 1, and ``--resume`` ends with the
    uninterrupted run's weights."""
    args = ("--epochs", "2", "--steps-per-epoch", "6")
    ref = subprocess.run(_cli(demo_dir, tmp_path / "full", *args), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    proc, _, go = _paused_cli(demo_dir, tmp_path / "int", 7, *args)          # epoch 2, step 1 done
    proc.send_signal(signal.SIGINT)
    go.touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at epoch 2 step 1; resume with --resume" in err and "Traceback" not in err, err
    ck = load_checkpoint(tmp_path / "int" / "last.pt")
    assert ck["interrupted"] and (ck["epoch"], ck["step"], ck["global_step"]) == (1, 1, 7)
    res = subprocess.run(_cli(demo_dir, tmp_path / "int", *args, "--resume"), env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert_same_weights(state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "int" / "last.pt"))


@pytest.mark.slow
def test_cli_kill_9_then_resume_from_last_good_checkpoint(demo_dir, tmp_path):
    """``kill -9`` from outside in the middle of epoch 2: the epoch-1 checkpoint is intact and
    ``--resume`` ends with the uninterrupted run's weights."""
    args = ("--epochs", "3", "--steps-per-epoch", "6")
    proc, _, _ = _paused_cli(demo_dir, tmp_path / "k", 8, *args)            # epoch 2, step 2 done
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(tmp_path / "k" / "last.pt")                 # intact: atomic writes
    assert (ck["epoch"], ck["step"], ck["interrupted"]) == (1, 0, False)
    res = subprocess.run(_cli(demo_dir, tmp_path / "k", *args, "--resume"), env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ref = subprocess.run(_cli(demo_dir, tmp_path / "full", *args), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    assert_same_weights(state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "k" / "last.pt"))


# --------------------------------------------------------------------------------------------
# broken checkpoints, divergence
# --------------------------------------------------------------------------------------------

def test_truncated_checkpoint_is_reported_and_previous_stays_intact(demo_dir, tmp_path, monkeypatch):
    T.fit(tiny_cfg(demo_dir, tmp_path, steps_per_epoch=1, epochs=2, epoch_limit=1))
    good = (tmp_path / "last.pt").read_bytes()
    # a crash in the middle of the next checkpoint write: half a file, then the process dies
    real_save = torch.save

    def half_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError, match="simulated"):
        T.fit(tiny_cfg(demo_dir, tmp_path, steps_per_epoch=1, epochs=2, resume=True))
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "last.pt").read_bytes() == good                 # previous checkpoint intact
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))
    # a truncated file (e.g. a cut-off copy) is reported clearly
    bad = tmp_path / "copy.pt"
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match=r"copy\.pt: cannot read this checkpoint.*truncated"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a kdmri checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    # resuming from the truncated file names it
    (tmp_path / "last.pt").write_bytes(good[:100])
    with pytest.raises(CheckpointError, match="last.pt"):
        T.fit(tiny_cfg(demo_dir, tmp_path, steps_per_epoch=1, epochs=2, resume=True))


def test_checkpoints_hold_plain_data_only(tmp_path):
    import numpy as np

    save_checkpoint({"kind": "student", "model_config": {}, "model": {}, "x": np.float32(1.5), "v": torch.__version__,
                     "a": np.arange(3)}, tmp_path / "c.pt")
    c = load_checkpoint(tmp_path / "c.pt")
    assert c["x"] == 1.5 and isinstance(c["v"], str) and c["a"] == [0, 1, 2]
    with pytest.raises(TypeError, match="not plain data"):
        save_checkpoint({"kind": "student", "model_config": {}, "model": {}, "bad": object()}, tmp_path / "d.pt")
    assert not (tmp_path / "d.pt").exists()


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(demo_dir, tmp_path, monkeypatch, capsys):
    from kdmri_lib.engine import trainer

    real, calls = trainer.reconstruction_loss, []

    def nan_in_epoch_two(pred, target):
        calls.append(1)
        loss = real(pred, target)
        return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(trainer, "reconstruction_loss", nan_in_epoch_two)
    with pytest.raises(T.TrainingDiverged, match=r"epoch 2 step 1.*not finite.*last good checkpoint.*lower learning rate"):
        T.fit(tiny_cfg(demo_dir, tmp_path, steps_per_epoch=2, epochs=3))
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())
    # the CLI: exit code 2 and a one-line error, no traceback
    calls.clear()
    code = T.main(["student", "--data", str(demo_dir), "--out", str(tmp_path / "cli"), "--device", "cpu", "--epochs", "2",
                   "--steps-per-epoch", "2", "--batch-size", "2", "--val-slices", "2",
                   "--no-progress", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: training diverged") and "Traceback" not in err


def test_real_divergence_with_a_huge_learning_rate(demo_dir, tmp_path):
    with pytest.raises(T.TrainingDiverged, match="lower learning rate"):
        T.fit(tiny_cfg(demo_dir, tmp_path, mode="unet", lr=1e12, grad_clip=None, steps_per_epoch=8, epochs=1))


def test_cli_config_errors_exit_2_without_traceback(demo_dir, tmp_path, capsys):
    code = T.main(["student", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "not found" in err and "Traceback" not in err
    code = T.main(["student", "--data", str(demo_dir), "--out", str(tmp_path / "o"), "--lr", "-1"])
    assert code == 2 and "lr must be > 0" in capsys.readouterr().err


def test_cli_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        T.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--resume", "--teacher-checkpoint", "--teacher-epochs", "--no-output-kd", "--no-feature-kd",
                 "--no-attention-kd", "--no-edge", "--confidence", "--no-correction", "--no-dynamic", "--teacher-lr",
                 "--steps-per-epoch", "--val-slices", "--acceleration"):
        assert flag in out
    parser = T.build_parser()
    assert all(a.help for a in parser._actions)


def test_cli_defaults_are_the_run_configuration_defaults():
    """A run from the command line with no optional flag is TrainConfig's default run."""
    cfg = T.config_from_args(T.build_parser().parse_args(["student", "--data", "d", "--out", "o"]))
    assert cfg.to_dict() == T.TrainConfig(data_dir="d", out_dir="o").to_dict()


def test_distillation_flags_are_generated_from_the_config():
    """Every DistillConfig field is a flag with the config's default in its help; a flag overrides the
    row it starts from, an absent flag leaves it."""
    import dataclasses

    from kdmri_lib.distill import DistillConfig

    parser = T.build_parser()
    helps = {o: a.help for a in parser._actions for o in a.option_strings}
    for f in dataclasses.fields(DistillConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in helps and f"(default: {getattr(DistillConfig(), f.name)})" in helps[flag], flag
    base = ["distill", "--data", "d", "--out", "o"]
    cfg = T.config_from_args(parser.parse_args(base + ["--ablation-row", "kd_vanilla", "--no-feature-kd", "--w-kd", "0.5",
                                                       "--confidence", "hard"]))
    assert cfg.distill == DistillConfig.preset("kd_vanilla", feature_kd=False, w_kd=0.5, confidence="hard")
    assert T.config_from_args(parser.parse_args(base)).distill == DistillConfig()
    assert T.config_from_args(parser.parse_args(base + ["--feature-kd"])).distill.feature_kd is True


def test_field_roles_define_resume_and_the_ablations_reuse():
    """Every TrainConfig field has one role; resume compares the identity fields, the ablation's reuse of
    a finished run every field but the operational ones (one definition of "the same run")."""
    import dataclasses

    from kdmri_lib.engine import run_config as RC

    names = [f.name for f in dataclasses.fields(RC.TrainConfig)]
    assert sorted(RC.FIELD_ROLES) == sorted(names)
    assert set(RC.FIELD_ROLES.values()) == {"identity", "result", "operational"}
    assert set(RC.RESUME_IDENTITY) == {k for k, r in RC.FIELD_ROLES.items() if r == "identity"}
    base = RC.TrainConfig(data_dir="d", out_dir="o").to_dict()
    for k in RC.OPERATIONAL:
        other = dict(base, **{k: "changed"})
        assert RC.same_computation(base, other), k
    for k in names:
        if k not in RC.OPERATIONAL and k != "distill":
            assert not RC.same_computation(base, dict(base, **{k: "changed"})), k
    # the distillation settings count in distill mode only (a model trained alone ignores them), and a
    # stored configuration that predates a distillation field counts it at its old value
    other = dict(base, distill=dict(base["distill"], w_kd=2.0))
    assert RC.same_computation(base, other)
    dist = dict(base, mode="distill")
    assert not RC.same_computation(dist, dict(other, mode="distill"))
    old = dict(dist, distill={k: v for k, v in dist["distill"].items() if k != "t_rehearsal"})
    assert RC.same_computation(old, dict(dist, distill=dict(dist["distill"], t_rehearsal=0.0)))
    assert not RC.same_computation(old, dist)                    # today's default (1.0) is not what it ran
