"""The bad-input corpus for the command-line programs (in-process ``main(argv)`` and real
processes): exit code 2, one ``error:`` line naming the input, no traceback, no file changed; and
unicode and spaces in every path (``tests/_corpus.py``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch
from _corpus import (  # the corpus's shared helpers
    REPO,
    SCRIPTS,
    UNI,
    _good_ckpt,
    assert_unchanged,
    declare,
    noise,
    record,
    snapshot,
    stat_snapshot,
)

from kdmri_lib.core.errors import DataError
from kdmri_lib.datasets import data as D
from kdmri_lib.models.checkpoint import load_checkpoint, load_model, save_checkpoint

# --------------------------------------------------------------------------------------------
# 5. command-line programs (in-process main(argv); a subprocess smoke test below)
# --------------------------------------------------------------------------------------------

def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_kdmri_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _main(cli: str):
    if cli in ("make_demo_data", "prepare_brain_tumor", "prepare_fastmri", "prepare_natural"):
        return _script(cli).main
    return importlib.import_module(f"kdmri_lib.{cli}").main


@pytest.fixture
def world(tmp_path, demo_dir):
    """Folders and files the CLI cases point at (all names with unicode and spaces)."""
    w = tmp_path / UNI
    w.mkdir()
    (w / "a file.txt").write_text("not a folder")
    (w / "empty dir").mkdir()
    (w / "random.zip").write_bytes(noise(3000))
    (w / "random.tar.gz").write_bytes(noise(3000))
    (w / "random.pt").write_bytes(noise(3000))
    _good_ckpt(w / "student sr4.pt")
    _good_ckpt(w / "teacher cs4.pt", kind="teacher", task="cs")
    run = w / "old run"
    run.mkdir()
    c = dict(load_checkpoint(_good_ckpt(run / "last.pt")))
    c.update(epoch=1, step=0, global_step=2, train_config={"mode": "student", "task": "sr", "factor": 4, "preset": "small",
                                                          "batch_size": 2, "seed": 0})
    save_checkpoint(c, run / "last.pt")
    return {"w": w, "demo": demo_dir}


CPU = ("--device", "cpu")
TRAIN = ("--no-progress", "--quiet", "--device", "cpu", "--batch-size", "2", "--val-slices", "1",
         "--steps-per-epoch", "1", "--epochs", "1")

# id: (cli, argv(w, demo) -> list, message regex; exit code 2 unless noted)
CLI_CASES = {
    # data scripts
    "demo: --out is a file": ("make_demo_data", lambda w, d: ["--out", w / "a file.txt", "--quiet"], "is a file"),
    "demo: --out under a file": ("make_demo_data", lambda w, d: ["--out", w / "a file.txt" / "demo", "--quiet"], "is a file"),
    "demo: --matrix 100": ("make_demo_data", lambda w, d: ["--out", w / "o", "--matrix", "100"], "matrix must be divisible by 16"),
    "demo: --matrix 32": ("make_demo_data", lambda w, d: ["--out", w / "o", "--matrix", "32"], "matrix must be >= 64"),
    "demo: --matrix abc": ("make_demo_data", lambda w, d: ["--out", w / "o", "--matrix", "abc"], "invalid int value: 'abc'"),
    "demo: --stride 0": ("make_demo_data", lambda w, d: ["--out", w / "o", "--stride", "0"], "stride must be >= 1"),
    "demo: --stride 100000": ("make_demo_data", lambda w, d: ["--out", w / "o", "--stride", "100000", "--quiet"],
                              "no train volume.*smaller stride"),
    "demo: --seed -1": ("make_demo_data", lambda w, d: ["--out", w / "o", "--seed", "-1"], "seed must be >= 0"),
    "demo: --snr-db nan": ("make_demo_data", lambda w, d: ["--out", w / "o", "--snr-db", "nan"], "snr_db must be finite"),
    "demo: --snr-db -5": ("make_demo_data", lambda w, d: ["--out", w / "o", "--snr-db", "-5"], "snr_db must be >= 0"),
    "brain: --src missing": ("prepare_brain_tumor", lambda w, d: ["--src", w / "nope.zip", "--out", w / "b"], "nope.zip: not found"),
    "brain: --src random zip": ("prepare_brain_tumor", lambda w, d: ["--src", w / "random.zip", "--out", w / "b"],
                                "random.zip: cannot read the archive"),
    "brain: --src a text file": ("prepare_brain_tumor", lambda w, d: ["--src", w / "a file.txt", "--out", w / "b"],
                                 "not a folder or a supported archive"),
    "brain: --src empty folder": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "b"],
                                  "not the Kaggle Brain Tumor MRI layout"),
    "brain: --out is a file": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "a file.txt"],
                               "--out must be a folder"),
    "brain: --out holds the demo data": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", d],
                                         "already holds the embedded demo data"),
    "brain: --n-train 0": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "b", "--n-train", "0"],
                           "n_train must be >= 4"),
    "brain: --matrix 100": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "b", "--matrix", "100"],
                            "matrix must be divisible by 16"),
    "brain: --url ftp": ("prepare_brain_tumor", lambda w, d: ["--url", "ftp://h/x.zip", "--sha256", "0" * 64, "--out", w / "b"],
                         "url must start with http"),
    "brain: --url without --sha256": ("prepare_brain_tumor", lambda w, d: ["--url", "http://127.0.0.1:9/x.zip", "--out", w / "b"],
                                      "--url needs --sha256"),
    "brain: --sha256 not hex": ("prepare_brain_tumor", lambda w, d: ["--url", "http://127.0.0.1:9/x.zip", "--sha256", "xyz",
                                                                     "--out", w / "b"], "sha256 must be 64 hexadecimal"),
    "knee: --src missing": ("prepare_fastmri", lambda w, d: ["--src", w / "nope", "--out", w / "k"], "nope"),
    "knee: --src empty folder": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k"],
                                 "no fastMRI single-coil knee data"),
    "knee: --src a text file": ("prepare_fastmri", lambda w, d: ["--src", w / "a file.txt", "--out", w / "k"], "not a tar archive"),
    "knee: --out is a file": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "a file.txt"],
                              "--out must be a folder"),
    "knee: --sample-rate 0": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k", "--sample-rate", "0"],
                              "sample_rate must be > 0"),
    "knee: --sample-rate 2": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k", "--sample-rate", "2"],
                              "sample_rate must be <= 1"),
    "knee: --link bogus": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k", "--link", "bogus"],
                           "invalid choice: 'bogus'"),
    "natural: --set5-src random zip": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src",
                                                                        w / "random.zip"], "cannot read the archive"),
    "natural: --set5-src empty folder": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src",
                                                                          w / "empty dir"], "no high-resolution Set5 images"),
    "natural: --set5-src missing": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src",
                                                                     w / "nope"], "nope: not found"),
    "natural: --out is a file": ("prepare_natural", lambda w, d: ["--out", w / "a file.txt", "--skip-flickr2k", "--set5-src",
                                                                  w / "empty dir"], "--out must be a folder"),
    "natural: no checksum": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k"], "no SHA-256 checksum is known"),
    "natural: --max-size 20": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src", w / "empty dir",
                                                                "--max-size", "20"], "max_size must be divisible by 16"),
    "natural: --n-train 0": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-set5", "--flickr2k-src", w / "empty dir",
                                                              "--n-train", "0"], "n_train must be >= 1"),
    "natural: no --out": ("prepare_natural", lambda w, d: ["--skip-flickr2k"], "--out is required"),
    # training
    "train: --data missing": ("train", lambda w, d: ["student", "--data", w / "nowhere", "--out", w / "r", *TRAIN],
                              "data folder not found"),
    "train: --data is a file": ("train", lambda w, d: ["student", "--data", w / "a file.txt", "--out", w / "r", *TRAIN],
                                "a file.txt"),
    "train: --data empty": ("train", lambda w, d: ["student", "--data", w / "empty dir", "--out", w / "r", *TRAIN],
                            "no singlecoil_train/"),
    "train: --epochs 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--epochs", "0"],
                          "epochs must be >= 1"),
    "train: --epochs -1": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--epochs", "-1"],
                           "epochs must be >= 1"),
    "train: --epochs abc": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--epochs", "abc"],
                            "invalid int value: 'abc'"),
    "train: --epochs 2.5": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--epochs", "2.5"],
                            "invalid int value: '2.5'"),
    "train: --batch-size 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--batch-size", "0"],
                              "batch_size must be >= 1"),
    "train: unknown mode": ("train", lambda w, d: ["finetune", "--data", d, "--out", w / "r"], "invalid choice: 'finetune'"),
    "train: --preset huge": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--preset", "huge"],
                             "invalid choice: 'huge'"),
    "train: --task mri": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--task", "mri"], "invalid choice: 'mri'"),
    "train: --device tpu": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--device", "tpu"],
                            "device must be one of"),
    "train: --scale 5": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--scale", "5"],
                         "sr scale must be one of"),
    "train: --scale 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--scale", "0"],
                         "scale .* must be >= 2"),
    "train: --acceleration 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--task", "cs",
                                                       "--acceleration", "0"], "acceleration .* must be >= 1"),
    "train: --patch-size 64 (whole slices only)": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN,
                                                                          "--patch-size", "64"], "unrecognized arguments: --patch-size"),
    "train: --warmup-steps -1": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--warmup-steps", "-1"],
                                 "warmup_steps must be >= 0"),
    "train: --lr -1": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--lr", "-1"], "lr must be > 0"),
    "train: --lr nan": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--lr", "nan"], "lr must be finite"),
    "train: --val-slices 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--val-slices", "0"],
                              "val_slices must be >= 1"),
    "train: teacher checkpoint is random bytes": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                         "--teacher-checkpoint", w / "random.pt"], "random.pt"),
    "train: teacher checkpoint missing": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                 "--teacher-checkpoint", w / "none.pt"], "file not found"),
    "train: teacher checkpoint is a student": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                      "--teacher-checkpoint", w / "student sr4.pt"],
                                               "differs in kind"),
    "train: teacher checkpoint of another task": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                         "--teacher-checkpoint", w / "teacher cs4.pt"],
                                                  "differs in task"),
    "train: --resume a run of another preset": ("train", lambda w, d: ["student", "--data", d, "--out", w / "old run", *TRAIN,
                                                                       "--epochs", "2", "--resume"],
                                                "cannot resume.*preset: checkpoint 'small', now 'tiny'"),
    # reconstruction
    "recon: checkpoint random bytes": ("reconstruct", lambda w, d: ["--checkpoint", w / "random.pt", "--data", d, "--out",
                                                                    w / "rec", *CPU], "random.pt"),
    "recon: checkpoint missing": ("reconstruct", lambda w, d: ["--checkpoint", w / "none.pt", "--data", d, "--out", w / "rec",
                                                               *CPU], "checkpoint not found"),
    "recon: checkpoint is a folder": ("reconstruct", lambda w, d: ["--checkpoint", w / "empty dir", "--data", d, "--out",
                                                                   w / "rec", *CPU], "is a folder"),
    "recon: --task cs for an sr checkpoint": ("reconstruct", lambda w, d: ["--checkpoint", w / "student sr4.pt", "--task", "cs",
                                                                           "--data", d, "--out", w / "rec", *CPU],
                                              "holds a sr model"),
    "recon: --scale 2 for an x4 checkpoint": ("reconstruct", lambda w, d: ["--checkpoint", w / "student sr4.pt", "--scale", "2",
                                                                           "--data", d, "--out", w / "rec", *CPU], "sr x4 model"),
    "recon: --out is a file": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--data", d, "--out", w / "a file.txt",
                                                            *CPU], "is a file"),
    "recon: --scale 0": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--scale", "0", "--data", d, "--out",
                                                      w / "rec", *CPU], "scale .* must be >= 2"),
    "recon: --scale 5": ("reconstruct", lambda w, d: ["--baseline", "bicubic", "--scale", "5", "--data", d, "--out", w / "rec",
                                                      *CPU], "sr scale must be one of"),
    "recon: --acceleration 0": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--task", "cs", "--acceleration", "0",
                                                             "--data", d, "--out", w / "rec", *CPU], "acceleration .* must be >= 1"),
    "recon: --batch-size 0": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--batch-size", "0", "--data", d,
                                                           "--out", w / "rec", *CPU], "batch-size must be >= 1"),
    "recon: --device tpu": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--data", d, "--out", w / "rec",
                                                         "--device", "tpu"], "device must be one of"),
    "recon: bicubic for cs": ("reconstruct", lambda w, d: ["--baseline", "bicubic", "--task", "cs", "--data", d, "--out",
                                                           w / "rec", *CPU], "defined for task 'sr' only"),
    "recon: --split test missing": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--split", "test", "--data", d,
                                                                 "--out", w / "rec", *CPU], "no singlecoil_test/"),
    "recon: --data empty": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--data", w / "empty dir", "--out",
                                                         w / "rec", *CPU], "no singlecoil_val/"),
    "recon: --baseline unknown": ("reconstruct", lambda w, d: ["--baseline", "sinc", "--data", d, "--out", w / "rec"],
                                  "invalid choice: 'sinc'"),
    # profiling
    "benchmark: --out is a file": ("benchmark", lambda w, d: ["--out", w / "a file.txt", "--tasks", "sr4", "--presets", "tiny",
                                                          "--size", "32", "--repeats", "1", "--no-reference", *CPU], "is a file"),
    "benchmark: --tasks sr5": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "sr5", "--presets", "tiny", "--size", "32",
                                                      *CPU], "sr scale must be one of"),
    "benchmark: --tasks xx": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "xx", *CPU], "tasks must look like"),
    "benchmark: --size 30 for x4": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "sr4", "--presets", "tiny", "--size",
                                                           "30", "--no-reference", *CPU], "does not divide the image size 30x30"),
    "benchmark: --size 0": ("benchmark", lambda w, d: ["--out", w / "p", "--size", "0", *CPU], "--size must be >= 8"),
    "benchmark: --repeats 0": ("benchmark", lambda w, d: ["--out", w / "p", "--repeats", "0", *CPU], "--repeats must be >= 1"),
    "benchmark: --threads 0": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "sr4", "--presets", "tiny", "--size", "32",
                                                      "--threads", "0", "--no-reference", *CPU], "threads must be >= 1"),
    "benchmark: --budget nan": ("benchmark", lambda w, d: ["--out", w / "p", "--budget", "nan", *CPU], "--budget must be finite"),
    "benchmark: --presets huge": ("benchmark", lambda w, d: ["--out", w / "p", "--presets", "huge", *CPU], "--presets"),
    "benchmark: --device tpu": ("benchmark", lambda w, d: ["--out", w / "p", "--device", "tpu"], "device must be one of"),
    # ablation
    "ablation: --data is a file": ("ablation", lambda w, d: ["--out", w / "a", "--data", w / "a file.txt", *CPU],
                                   "no singlecoil_val/"),
    "ablation: --epochs 0": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--epochs", "0", *CPU], "epochs must be >= 1"),
    "ablation: --rows bogus": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--rows", "bogus", *CPU],
                               "unknown ablation row"),
    "ablation: --device tpu": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--device", "tpu"], "device must be one of"),
    "ablation: --scale 5": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--scale", "5", *CPU],
                            "224x224 is not divisible by the sr scale 5"),
    # notebooks (papermill runner): refused before a kernel starts
    "notebook: --only unknown": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--only", "99_bogus"], "unknown notebook"),
    "notebook: --out is a file": ("notebook_runner", lambda w, d: ["--out", w / "a file.txt", "--only", "01_kspace_basics"], "is a file"),
    "notebook: -p task mri": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", d, "-p", "task", "mri"],
                              "notebook parameter 'task' must be one of"),
    "notebook: -p epochs 0": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", d, "-p", "epochs", "0"],
                              "notebook parameter 'epochs' must be >= 1"),
    "notebook: -p batch_size '\"8\"'": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", d, "-p", "batch_size", '"8"'],
                                        "notebook parameter 'batch_size' must be an integer"),
    "notebook: --data missing": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", w / "nowhere"], "folder not found"),
}
CLI_CASES.update({
    "train: --pool-split val (the scored split)": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                          "--teacher-checkpoint", "pretrained:sr4_teacher_tiny",
                                                                          "--references", "12", "--unlabelled",
                                                                          "--pool-split", "val"],
                                                   "pool_split='val'.*scored"),
    "train: --pool-split without --unlabelled": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                        "--teacher-checkpoint", "pretrained:sr4_teacher_tiny",
                                                                        "--references", "12", "--pool-split", "test"],
                                                 "pool_split needs unlabelled=True"),
    "train: --pool-split of a missing split": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                      "--teacher-checkpoint", "pretrained:sr4_teacher_tiny",
                                                                      "--references", "12", "--unlabelled",
                                                                      "--pool-split", "test"], "singlecoil_test"),
    "ablation: --protocol knee without its data": ("ablation", lambda w, d: ["--protocol", "knee", "--out", w / "a", "--data",
                                                                             w / "nowhere", *CPU],
                                                   "the knee protocol needs its data prepared first"),
    "ablation: --candidates bogus": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--rows", "student",
                                                               "--candidates", "kd_magic", *CPU], "unknown candidate row"),
    "train: --out is a file": ("train", lambda w, d: ["student", "--data", d, "--out", w / "a file.txt", *TRAIN], "is a file"),
    "ablation: --out is a file": ("ablation", lambda w, d: ["--out", w / "a file.txt", "--data", d, "--rows", "zero_filled",
                                                            *CPU], "is a file"),
})
declare("command-line programs", list(CLI_CASES))


def _run_cli_case(case, cli, argv_of, match, world, capsys):
    w, demo = world["w"], world["demo"]
    argv = [str(a) for a in argv_of(w, demo)]
    before, demo_before = snapshot(w), stat_snapshot(demo)
    capsys.readouterr()
    try:
        code = _main(cli)(argv)
    except SystemExit as e:          # argparse: usage + "prog: error: ..." and exit code 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    assert_unchanged(before, snapshot(w))
    assert_unchanged(demo_before, stat_snapshot(demo))
    record("command-line programs", case)


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_bad_input(case, world, capsys):
    _run_cli_case(case, *CLI_CASES[case], world, capsys)



def test_cli_bad_inputs_as_real_processes(tmp_path, demo_dir):
    """The same promise through real processes (one bad input per program, run side by side):
    exit code 2, one ``error:`` line naming the input, no traceback."""
    w = tmp_path / UNI
    (w / "empty dir").mkdir(parents=True)
    (w / "random.pt").write_bytes(noise(2000))
    py = sys.executable
    cases = {
        "make_demo_data": ([py, SCRIPTS / "make_demo_data.py", "--out", w / "o", "--snr-db", "nan"], "snr_db"),
        "prepare_brain_tumor": ([py, SCRIPTS / "prepare_brain_tumor.py", "--src", w / "empty dir", "--out", w / "b"],
                                "empty dir"),
        "prepare_fastmri": ([py, SCRIPTS / "prepare_fastmri.py", "--src", w / "nope", "--out", w / "k"], "nope"),
        "prepare_natural": ([py, SCRIPTS / "prepare_natural.py", "--out", w / "n", "--skip-flickr2k", "--set5-src",
                             w / "nope"], "nope"),
        "train": ([py, "-m", "kdmri_lib.engine.train", "student", "--data", w / "empty dir", "--out", w / "r"], "empty dir"),
        "reconstruct": ([py, "-m", "kdmri_lib.engine.reconstruct", "--checkpoint", w / "random.pt", "--data", demo_dir, "--out",
                         w / "rec"], "random.pt"),
        "benchmark": ([py, "-m", "kdmri_lib.experiments.benchmark", "--out", w / "p", "--tasks", "sr5"], "sr scale"),
        "ablation": ([py, "-m", "kdmri_lib.experiments.ablation", "--out", w / "ablation out", "--data", demo_dir, "--rows",
                      "bogus"], "bogus"),
        "notebook": ([py, "-m", "kdmri_lib.teaching.notebook_runner", "--out", w / "nb", "--only", "99_bogus"], "99_bogus"),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    procs = {k: subprocess.Popen([str(a) for a in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (cmd, _) in cases.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=180)
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert p.returncode == 2 and "Traceback" not in err and len(lines) == 1, f"{k}: {p.returncode}\n{err}"
        assert cases[k][1] in lines[0], f"{k}: {lines[0]}"
    assert sorted(p.name for p in w.iterdir()) == ["empty dir", "random.pt"]   # nothing created on the way


def test_ablation_bad_input_creates_no_folder(tmp_path, demo_dir, capsys):
    from kdmri_lib.experiments import ablation

    assert ablation.main(["--out", str(tmp_path / "out"), "--data", str(demo_dir), "--rows", "bogus"]) == 2
    assert not (tmp_path / "out").exists()




# --------------------------------------------------------------------------------------------
# 7. unicode and spaces in paths: everything works, and messages name such paths intact
# --------------------------------------------------------------------------------------------

def test_unicode_and_spaces_in_every_path(tmp_path, capsys):
    """Demo builder (CLI), datasets, training CLI, checkpoints, reconstruction CLI with fastMRI's
    evaluate, all under ``data dir ü ñ/`` and friends."""
    from kdmri_lib.engine import reconstruct as R
    from kdmri_lib.engine import train as T

    root = tmp_path / "data dir ü ñ"
    data = root / "démo 1"
    assert _script("make_demo_data").main(["--out", str(data), "--stride", "15", "--no-natural", "--quiet"]) == 0
    ds = D.build_dataset(data, "val", "cs", 4)
    assert len(ds) > 0 and ds[0]["y"].dtype == torch.complex64
    out = root / "rüns 1" / "stüdent"
    code = T.main(["student", "--data", str(data), "--out", str(out), *TRAIN])
    assert code == 0, capsys.readouterr().err
    model, ck = load_model(out / "last.pt", expect={"kind": "student", "task": "sr", "factor": 4})
    rec = root / "recons ü"
    assert R.main(["--checkpoint", str(out / "best.pt"), "--data", str(data), "--out", str(rec), "--evaluate",
                   "--no-progress", *CPU]) == 0
    assert "fastMRI evaluate" in capsys.readouterr().out
    assert sorted(p.name for p in rec.iterdir()) == sorted(p.name for p in (data / "singlecoil_val").iterdir())
    with pytest.raises(DataError, match="nöwhere ü/x"):
        D.MRISliceDataset(root / "nöwhere ü" / "x", "sr", 4)
