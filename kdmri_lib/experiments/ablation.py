r"""The distillation ablation benchmark (``make bench-distill``), with statistics.

One command trains and scores every row under the few-references protocol
(:mod:`kdmri_lib.datasets.protocol`; sr x4, tiny student, demo data)::

    python -m kdmri_lib.ablation --out runs/bench            # 3 seeds per learned student row

The protocol: the teacher (the zoo's ``sr4_teacher_source_small``, pre-trained on axial + coronal
slices only) teaches a student on the **sagittal** target domain, where only ``references`` slices
(two volumes) have a ground truth and the other 12 target volumes are a measurement-only pool.
Every student row (U-Net, student alone, each distillation row) trains the same number of
optimiser steps with the same seeds; the student alone and the U-Net see the references only
(the pool has nothing for them without a teacher). A distillation batch holds as many references
as the student alone's, plus as many pool slices, so every row sees the references equally often;
``student_matched`` is the compute-matched control (the student alone with the distillation rows'
batch size). No model, the teacher's pre-training included, sees the ground truth of the pool or of
a scored slice.

Rows (in table order): the parameter-free baselines (zero-filled = sinc interpolation, low-res,
bicubic), the fastMRI U-Net, the student alone (and with the distillation rows' batch), vanilla KD
(frozen teacher, L1 output distillation on every sample + adapters and attention maps), then one
piece at a time on its base (:data:`kdmri_lib.distill.ABLATION_ROWS`, :data:`~kdmri_lib.distill.ABLATION_BASE`):
output-space KD on the pool only (no L1 + L1 dead zone, no adapters), the teacher's
test-time-augmented label, its uncertainty as the confidence, the dynamic weight with a floor and
gradient-norm balance; ``full`` = the augmented label + the correction of the teacher's head
(rehearsing its source domain, :mod:`kdmri_lib.engine.rehearsal`); then the teacher and the teacher
after correction (``full``'s corrected teacher, per seed).

``--protocol knee`` is the same protocol at the paper's scale (fastMRI knee, ``cs`` x4,
:data:`kdmri_lib.datasets.protocol.KNEE`): the teacher pre-trains on the training split (``--teacher
train`` by default), the references are training slices, the pool is the test split's measurements
as acquired (:func:`kdmri_lib.datasets.data.pool_dataset`), the rows are scored on the validation
split. Its cost is in ``docs/training.md`` (a GPU; ``python -m kdmri_lib.pilots step-cost``).

Scoring: every run's **final** weights (no selection on scored slices), by fastMRI's metric
functions (:func:`kdmri_lib.engine.reconstruct.evaluate`), on the target domain's validation slices
(``scored``: the sagittal files of ``singlecoil_val``) and on the held-out real scan
(``singlecoil_heldout``). PSNR / SSIM / NMSE of a row = mean over its seeds (``PSNR_sd``: their
sample standard deviation); ``per_seed`` lists each run. :func:`paired_difference` compares two
rows slice by slice (per-slice PSNR averaged over the seeds; 95 % bootstrap interval over slices).

Outputs in ``--out``: ``ablation.json`` (``{"settings", "meta", "rows"}``), ``ablation.md`` (table
with mean +- sd, the paired differences of ``full`` against ``student`` and ``kd_vanilla`` with
their intervals, settings, command), ``ablation.png`` and one run folder per row and seed
(``<row>/seed<k>/``). Resumable: a finished run with the same settings is reused, an interrupted
one resumed (``--force`` retrains).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from kdmri_lib.core.atomic import ensure_dir, write_json, write_text
from kdmri_lib.core.errors import ConfigError, DataError, KdmriError
from kdmri_lib.datasets.protocol import DEFAULT as DEFAULT_PROTOCOL
from kdmri_lib.datasets.protocol import PROTOCOLS
from kdmri_lib.datasets.protocol import Protocol
from kdmri_lib.distill import CANDIDATE_ROWS, DistillConfig
from kdmri_lib.engine.run_config import same_computation
from kdmri_lib.engine.train import RECIPES, TrainConfig, TrainingInterrupted, fit
from kdmri_lib.experiments.ablation_report import (  # noqa: F401 (re-exported)
    comparison_sentences,
    comparisons,
    figure,
    paired_difference,
    summary_markdown,
    to_markdown,
    volume_means,
)
from kdmri_lib.experiments.ablation_workers import run_workers as _run_workers
from kdmri_lib.experiments.ablation_workers import shares
from kdmri_lib.models.checkpoint import load_checkpoint, load_model

from kdmri_lib.experiments.ablation_rows import (  # noqa: F401 (re-exported)
    CANDIDATE_BASE,
    CANDIDATE_LABELS,
    DISTILL_ROWS,
    LABEL_OF,
    ROW_NAMES,
    ROWS,
    RUN_ORDER,
    WHAT_OF,
)
#: the teacher when --teacher is "train": this many times the rows' epochs
TEACHER_BUDGET = 3
#: the default teacher (pre-trained on the protocol's source domain; kdmri_lib.pretrained)
DEFAULT_TEACHER = "pretrained:sr4_teacher_source_small"


#: the run configuration's defaults: the settings the ablation shares with a training run start from them
_RUN_DEFAULT = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@dataclass
class AblationSettings:
    """The budget and protocol shared by every row (the fields a training run also has default to
    :class:`~kdmri_lib.engine.run_config.TrainConfig`'s; the budget — epochs, steps, seeds, validation
    slices — is the ablation's own)."""

    out: str = "runs/bench"
    data: str = _RUN_DEFAULT["data_dir"]
    task: str = _RUN_DEFAULT["task"]
    factor: int = _RUN_DEFAULT["factor"]
    preset: str = _RUN_DEFAULT["preset"]
    teacher_preset: Optional[str] = _RUN_DEFAULT["teacher_preset"]
    teacher: str = DEFAULT_TEACHER
    epochs: int = 2
    steps_per_epoch: Optional[int] = 800
    teacher_epochs: Optional[int] = None
    batch_size: Optional[int] = _RUN_DEFAULT["batch_size"]   # None: each model kind's recipe (train.RECIPES)
    lr: Optional[float] = _RUN_DEFAULT["lr"]
    seeds: Sequence[int] = (0, 1, 2)
    references: int = DEFAULT_PROTOCOL.references
    protocol: Protocol = field(default_factory=lambda: DEFAULT_PROTOCOL)
    device: str = _RUN_DEFAULT["device"]
    val_slices: Optional[int] = 2   # the ablation's own budget (TrainConfig: every validation slice)
    rows: Optional[Sequence[str]] = None
    candidates: Sequence[str] = ()   # extra rows (CANDIDATE_ROWS), trained and scored after the ladder
    force: bool = False
    progress: bool = True
    jobs: int = 1
    worker: Optional[tuple[int, int]] = None   # (k, n): train only the k-th of n shares, do not score
    argv: Optional[Sequence[str]] = None       # the command line, passed on to --jobs workers

    def to_dict(self) -> dict:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
             if k not in ("protocol", "jobs", "worker", "argv") and not (k == "candidates" and not v)}
        d["protocol"] = {**self.protocol.to_dict(), "references": int(self.references)}
        return d


def _train_config(s: AblationSettings, name: str, what: str, seed: int) -> TrainConfig:
    p = s.protocol
    common = dict(data_dir=s.data, task=s.task, factor=s.factor, epochs=s.epochs, steps_per_epoch=s.steps_per_epoch,
                  batch_size=s.batch_size, lr=s.lr, seed=seed, device=s.device, val_slices=s.val_slices, resume=True,
                  progress=s.progress, verbose=False, val_files=list(p.val))
    if what == "teacher":   # --teacher train: pre-training on the source domain only
        return TrainConfig(mode="teacher", preset=s.teacher_preset or s.preset, out_dir=str(Path(s.out) / "teacher"),
                           train_files=list(p.source), **{**common, "epochs": teacher_epochs(s), "seed": 0})
    target = dict(train_files=list(p.target), references=int(s.references))
    pool = dict(pool_split=p.pool_split) if p.pool_split else {}
    out = str(Path(s.out) / name / f"seed{seed}")
    # a distillation batch holds as many references as the student alone's batch, plus as many pool
    # slices (reference and pool slices interleave 1:1): every row sees the references equally often
    double = dict(common, batch_size=2 * (s.batch_size or RECIPES["student"]["batch_size"]))
    if what in ("student", "unet"):
        return TrainConfig(mode=what, preset=s.preset, out_dir=out, **target,
                           **(double if name == "student_matched" else common))
    dcfg = DistillConfig.preset(name)
    rehearse = list(p.source) if dcfg.correction and dcfg.t_rehearsal > 0 else None   # the teacher's own source domain
    return TrainConfig(mode="distill", preset=s.preset, teacher_preset=s.teacher_preset, out_dir=out,
                       teacher_checkpoint=teacher_checkpoint(s), unlabelled=True, distill=dcfg,
                       rehearsal_files=rehearse, **target, **pool, **double)


def teacher_checkpoint(s: AblationSettings) -> str:
    """The distillation rows' teacher: ``--teacher`` (a zoo name or a path), or OUT/teacher/last.pt."""
    return str(Path(s.out) / "teacher" / "last.pt") if s.teacher == "train" else s.teacher


def teacher_epochs(s: AblationSettings) -> int:
    """The teacher's epochs with ``--teacher train``: ``--teacher-epochs``, default 3 x ``--epochs``."""
    return s.teacher_epochs or TEACHER_BUDGET * s.epochs


def _finished(cfg: TrainConfig) -> Optional[bool]:
    """True: finished with these settings; False: partial (resume); None: nothing there.
    Raises ConfigError when a finished run used other settings."""
    last = Path(cfg.out_dir) / "last.pt"
    if not last.exists():
        return None
    ck = load_checkpoint(last)
    resolved = cfg.replace().validate(check_paths=False)   # recipe defaults filled in, as fit() stores them
    if not same_computation(ck.get("train_config", {}), resolved.to_dict()):
        raise ConfigError(f"{cfg.out_dir} holds a run with other settings; rerun with --force to retrain it "
                          f"(or choose another --out)")
    return int(ck["epoch"]) >= cfg.epochs and not ck.get("interrupted")


def _row_model_info(kind: str, preset: str, task: str, factor: int, shape) -> tuple[int, float]:
    from kdmri_lib.experiments.benchmark import count_params, model_flops
    from kdmri_lib.models import build_model

    params = count_params(build_model(kind, preset, task, factor))
    gflops = model_flops(kind, preset, task, factor, shape=shape) / 1e9
    return params, gflops


def _score(model, sets: dict, device) -> dict:
    """``{set: {"PSNR", "SSIM", "NMSE", "slices": [per-slice PSNR]}}`` (fastMRI's metric functions)."""
    from kdmri_lib.engine.reconstruct import evaluate

    out = {}
    for key, ds in sets.items():
        r = evaluate(model, ds, device=device, per_slice=True)
        out[key] = {**{m: float(r["means"][m]) for m in ("PSNR", "SSIM", "NMSE")},
                    "slice_PSNR": [float(x["PSNR"]) for x in r["per_slice"]],
                    "slice_files": [str(x["fname"]) for x in r["per_slice"]]}
    return out


def _aggregate(name: str, label: str, params: int, gflops: float, per_seed: list[dict], sets: Sequence[str]) -> dict:
    row = {"name": name, "label": label, "params": int(params), "GFLOPs": float(gflops), "seeds": len(per_seed)}
    for key in sets:
        pre = "" if key == "scored" else f"{key}_"
        for m in ("PSNR", "SSIM", "NMSE"):
            vals = [p[key][m] for p in per_seed]
            row[f"{pre}{m}"] = float(np.mean(vals))
            row[f"{pre}{m}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        row[f"{pre}slice_PSNR"] = [float(v) for v in np.mean([p[key]["slice_PSNR"] for p in per_seed], axis=0)]
        row[f"{pre}volume_PSNR"] = volume_means(row[f"{pre}slice_PSNR"], per_seed[0][key]["slice_files"])
    row["per_seed"] = [{"seed": p["seed"], "checkpoint": p.get("checkpoint"), "train_time_s": p.get("train_time_s", 0.0),
                        **{(m if key == "scored" else f"{key}_{m}"): p[key][m] for key in sets
                           for m in ("PSNR", "SSIM", "NMSE")}} for p in per_seed]
    row["train_time_s"] = float(np.mean([p.get("train_time_s", 0.0) for p in per_seed]))
    return row


def _wanted_rows(s: AblationSettings) -> tuple[str, ...]:
    """The rows to run (all by default; ``teacher_corrected`` brings ``full``), checked."""
    wanted = tuple(s.rows) if s.rows else ROW_NAMES
    unknown = sorted(set(wanted) - set(ROW_NAMES))
    if unknown:
        raise ConfigError(f"unknown ablation row(s) {', '.join(unknown)}; valid: {', '.join(ROW_NAMES)}")
    if not s.seeds:
        raise ConfigError("seeds: give at least one seed")
    if "teacher_corrected" in wanted and "full" not in wanted:
        wanted = wanted + ("full",)
    bad = sorted(set(s.candidates) - set(CANDIDATE_ROWS))
    if bad:
        raise ConfigError(f"unknown candidate row(s) {', '.join(bad)}; valid: {', '.join(CANDIDATE_ROWS)}")
    return wanted + tuple(c for c in s.candidates if c not in wanted)


def _scored_sets(s: AblationSettings) -> dict:
    """``{"scored": target-domain validation slices, "heldout": the held-out real scan (when present)}``."""
    from kdmri_lib.engine.reconstruct import open_split

    sets = {"scored": open_split(s.data, s.task, s.factor, "val", include=list(s.protocol.val))}
    if (Path(s.data) / "singlecoil_heldout").is_dir():
        sets["heldout"] = open_split(s.data, s.task, s.factor, "heldout")
    return sets


def _prepare_runs(s: AblationSettings, order: Sequence[str], log) -> tuple[set, list]:
    """Train the source teacher when ``s.teacher == "train"``, clear the runs ``--force`` retrains;
    return the (row, seed) runs finished before this call and those still to train."""
    if s.teacher == "train":
        tcfg = _train_config(s, "teacher", "teacher", 0)
        if s.force and Path(tcfg.out_dir).exists():
            shutil.rmtree(tcfg.out_dir)
        if not _finished(tcfg):
            log(f"[ablation] training the teacher on the source domain ({', '.join(s.protocol.source)}) ...")
            fit(tcfg)
    learned = [(n, seed) for n in order if WHAT_OF[n] not in ("baseline", "teacher", "corrected") for seed in s.seeds]
    if s.force:   # (workers never get --force: the parent clears the runs before it starts them)
        for n, seed in learned:
            d = Path(_train_config(s, n, WHAT_OF[n], seed).out_dir)
            if d.exists():
                shutil.rmtree(d)
    finished_before = {(n, seed) for n, seed in learned if _finished(_train_config(s, n, WHAT_OF[n], seed))}
    return finished_before, [r for r in learned if r not in finished_before]


def _split_text(s: AblationSettings) -> str:
    """Which target volumes are the references and which the pool (:func:`kdmri_lib.datasets.protocol.describe`)."""
    from kdmri_lib.datasets.protocol import describe
    from kdmri_lib.engine.reconstruct import open_split

    from kdmri_lib.datasets.data import pool_dataset

    train = open_split(s.data, s.task, s.factor, "train", include=list(s.protocol.target))
    pool = pool_dataset(s.data, s.protocol.pool_split, s.task, s.factor) if s.protocol.pool_split else None
    return describe(train, s.references, s.protocol.split_seed, pool=pool)


class _Scorer:
    """Scores the ablation's rows one by one (training, or resuming, a learned row's seeds first)."""

    def __init__(self, s: AblationSettings, sets: dict, device, finished_before: set, log):
        self.s, self.sets, self.device, self.finished_before, self.log = s, sets, device, finished_before, log
        self.shape = tuple(sets["scored"][0]["target"].shape[-2:])
        self.reused: list[str] = []
        self.corrected: list[dict] = []
        self.results: dict[str, dict] = {}

    def row(self, name: str, head: str) -> Optional[dict]:
        """Score one row; ``None`` when it does not apply (a baseline without meaning for the task,
        the corrected teacher without a ``full`` run)."""
        from kdmri_lib.models import baselines_for, build_model

        s, what = self.s, WHAT_OF[name]
        if what == "baseline":
            if name not in baselines_for(s.task):
                self.log(f"{head} skipped (no meaning for {s.task})")
                return None
            model = build_model(name, task=s.task, factor=s.factor)
            params, gflops = 0, _row_model_info(name, s.preset, s.task, s.factor, self.shape)[1]
            per_seed = [{"seed": None, **_score(model, self.sets, self.device)}]
        elif what == "teacher":
            model, _ = load_model(teacher_checkpoint(s), self.device, expect={"kind": "teacher", "task": s.task,
                                                                              "factor": s.factor})
            params, gflops = _row_model_info("teacher", model.preset, s.task, s.factor, self.shape)
            per_seed = [{"seed": None, "checkpoint": teacher_checkpoint(s), **_score(model, self.sets, self.device)}]
        elif what == "corrected":
            if not self.corrected:
                self.log(f"{head} skipped (no corrected teacher: run the full row)")
                return None
            per_seed = self.corrected
            params, gflops = self.results["teacher"]["params"], self.results["teacher"]["GFLOPs"]
        else:
            per_seed, model = self.learned(name, what, head)
            params, gflops = _row_model_info(model.kind, model.preset, s.task, s.factor, self.shape)
        self.results[name] = _aggregate(name, LABEL_OF[name], params, gflops, per_seed, list(self.sets))
        return self.results[name]

    def learned(self, name: str, what: str, head: str) -> tuple[list[dict], torch.nn.Module]:
        """Train (or reuse / resume) and score every seed of a learned row; ``full`` also scores its
        corrected teacher."""
        per_seed: list[dict] = []
        model = None
        for seed in self.s.seeds:
            cfg = _train_config(self.s, name, what, seed)
            row_dir = Path(cfg.out_dir)
            if (name, seed) in self.finished_before:
                self.reused.append(f"{name}/seed{seed}")
                state = True
            else:   # trained by a worker, or still to train (or resume) here
                state = _finished(cfg)
            if not state:
                self.log(f"{head} seed {seed}: training {cfg.mode} ({cfg.epochs} x {cfg.steps_per_epoch} steps)"
                         f"{' - resuming' if state is False else ''} ...")
                fit(cfg)
            model, ck = load_model(row_dir / "last.pt", self.device)
            train_time = float(sum(h.get("seconds", 0.0) for h in ck.get("history", [])))
            per_seed.append({"seed": seed, "checkpoint": str(row_dir / "last.pt"), "train_time_s": round(train_time, 1),
                             **_score(model, self.sets, self.device)})
            if name == "full" and (row_dir / "teacher_last.pt").exists():
                tmodel, _ = load_model(row_dir / "teacher_last.pt", self.device)
                self.corrected.append({"seed": seed, "checkpoint": str(row_dir / "teacher_last.pt"),
                                       **_score(tmodel, self.sets, self.device)})
        return per_seed, model


def run(s: AblationSettings, log=print, command: Optional[str] = None) -> dict:
    """Train (or reuse) and score every row and seed; write the table, JSON and figure.
    Returns the ``ablation.json`` object (``{}`` for a ``--worker`` share, which only trains)."""
    from kdmri_lib.core.device import describe, get_device

    out = Path(s.out)
    wanted = _wanted_rows(s)
    sets = _scored_sets(s)
    device = get_device(s.device)
    ensure_dir(out, "ablation output folder (--out)")    # only once the settings have been checked
    order = [n for n in RUN_ORDER if n in wanted] + [c for c in s.candidates]
    t_all = time.perf_counter()
    finished_before, pending = _prepare_runs(s, order, log)
    if s.worker is not None:   # one share of the training runs, no scoring
        k, n_workers = s.worker
        for name, seed in shares(pending, n_workers, WHAT_OF)[k]:
            cfg = _train_config(s, name, WHAT_OF[name], seed)
            log(f"[ablation] worker {k + 1}/{n_workers}: {name} seed {seed} ({cfg.epochs} x {cfg.steps_per_epoch} steps)")
            fit(cfg)
        return {}
    if s.jobs > 1 and len(pending) > 1 and s.argv is None:
        log("[ablation] jobs > 1 needs the command line (python -m kdmri_lib.ablation --jobs N); training here")
    elif s.jobs > 1 and len(pending) > 1:
        _run_workers(s, pending, log)
    scorer = _Scorer(s, sets, device, finished_before, log)
    for i, name in enumerate(order, 1):
        head = f"[ablation] {i:2d}/{len(order)} {name:<16}"
        t0 = time.perf_counter()
        r = scorer.row(name, head)
        if r is not None:
            sd = f" +- {r['PSNR_sd']:.3f}" if r["seeds"] > 1 else ""
            held = f"; held-out {r['heldout_PSNR']:.3f} dB" if "heldout_PSNR" in r else ""
            log(f"{head} PSNR {r['PSNR']:.3f}{sd} dB  SSIM {r['SSIM']:.4f}{held}  ({time.perf_counter() - t0:.0f} s)")
    rows = [scorer.results[n] for n in ROW_NAMES + tuple(s.candidates) if n in scorer.results]
    meta = {"command": command, "device": describe(device), "torch": str(torch.__version__),
            "machine": platform.machine(), "wall_time_s": round(time.perf_counter() - t_all, 1),
            "sets": {k: {"slices": len(ds), "volumes": len(ds.volumes()), "files": [f.name for f in ds.files]}
                     for k, ds in sets.items()},
            "slice_shape": list(scorer.shape), "date": time.strftime("%Y-%m-%d %H:%M"), "reused": scorer.reused,
            "comparisons": comparisons(rows, [(c, CANDIDATE_BASE[c]) for c in s.candidates]),
            "split": _split_text(s)}
    result = {"settings": s.to_dict(), "meta": meta, "rows": rows}
    write_json(out / "ablation.json", result)
    write_text(out / "ablation.md", to_markdown(result))
    figure(rows, out / "ablation.png")
    log(f"[ablation] wrote {out / 'ablation.md'}, {out / 'ablation.json'}, {out / 'ablation.png'} "
        f"({meta['wall_time_s']:.0f} s)")
    return result


def build_parser() -> argparse.ArgumentParser:
    from kdmri_lib.models import PRESETS

    d = AblationSettings()
    p = argparse.ArgumentParser(prog="python -m kdmri_lib.ablation",
                                description="Train and score the distillation ablation (same seed and budget for "
                                            "every row); writes ablation.md / .json / .png.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=d.out, help="output folder (one sub-folder per row)")
    p.add_argument("--data", default=d.data, help="data folder with singlecoil_train/ and singlecoil_val/ "
                                                  "(the demo data is built there when missing)")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="demo",
                   help="who sees which ground truth (kdmri_lib.datasets.protocol): demo = the demo data's "
                        "axial/coronal source and sagittal target; knee = fastMRI knee, the test split as the pool")
    p.add_argument("--task", choices=("sr", "cs"), default=d.task, help="acquisition")
    fac = p.add_mutually_exclusive_group()
    fac.add_argument("--scale", type=int, default=None, help="sr scale (default 4)")
    fac.add_argument("--acceleration", type=int, default=None, help="cs acceleration (default 4)")
    p.add_argument("--preset", choices=PRESETS, default=d.preset, help="student / U-Net preset")
    p.add_argument("--teacher-preset", choices=PRESETS, default=None, help="teacher preset (default: --preset)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of every learned row")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch, help="optimiser steps per epoch")
    p.add_argument("--teacher", default=None,
                   help="the distillation rows' teacher: a zoo name (pretrained:NAME), a checkpoint, or 'train' "
                        f"(pre-train one on the protocol's source domain into OUT/teacher); default: {d.teacher} "
                        f"with --protocol demo, train with the others")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help=f"epochs of the teacher with --teacher train (default: {TEACHER_BUDGET} x --epochs)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch of whole slices (default: each model kind's recipe)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate of every learned row (default: each model kind's recipe)")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="comma-separated seeds of every learned row")
    p.add_argument("--references", type=int, default=None,
                   help="target-domain slices with ground truth (default: the protocol's; demo 12, knee 350)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--val-slices", type=int, default=d.val_slices,
                   help="validation slices per training epoch (the table always scores every slice)")
    p.add_argument("--rows", default=None, help=f"comma-separated subset of rows ({', '.join(ROW_NAMES)})")
    p.add_argument("--candidates", default="",
                   help=f"comma-separated extra rows, trained with the same settings and compared with their base "
                        f"({', '.join(f'{c} vs {b}' for c, b in CANDIDATE_BASE.items())})")
    p.add_argument("--force", action="store_true", help="retrain rows that already finished")
    p.add_argument("--jobs", type=int, default=d.jobs,
                   help="train the runs in this many processes (cpu_count // jobs threads each); 1 = in this process")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars inside a row")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    factor = args.scale if args.scale is not None else args.acceleration
    try:
        seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
    except ValueError:
        print(f"error: --seeds must be comma-separated integers; got {args.seeds!r}", file=sys.stderr)
        return 2
    protocol = PROTOCOLS[args.protocol]
    teacher = args.teacher or (DEFAULT_TEACHER if args.protocol == "demo" else "train")
    s = AblationSettings(out=args.out, data=args.data, task=args.task, factor=factor or 4, preset=args.preset,
                         teacher_preset=args.teacher_preset, teacher=teacher, epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch, teacher_epochs=args.teacher_epochs,
                         batch_size=args.batch_size, lr=args.lr, seeds=seeds,
                         references=args.references if args.references is not None else protocol.references,
                         protocol=protocol, device=args.device, val_slices=args.val_slices,
                         rows=tuple(r.strip() for r in args.rows.split(",") if r.strip()) if args.rows else None,
                         candidates=tuple(c.strip() for c in args.candidates.split(",") if c.strip()),
                         force=args.force, progress=not args.no_progress, jobs=args.jobs)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1:
        print(f"error: --jobs must be >= 1; got {args.jobs}", file=sys.stderr)
        return 2
    if args.worker:
        k, n = (int(x) for x in args.worker.split("/"))
        s.worker = (k - 1, n)
        import os

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    s.argv, skip = [], False   # the workers' command line: without --force and --jobs N
    for a in argv:
        if skip or a == "--force" or a.startswith("--jobs="):
            skip = False
        elif a == "--jobs":
            skip = True
        else:
            s.argv.append(a)
    try:
        data = Path(s.data)
        if not data.exists() and args.protocol != "demo":
            raise DataError(f"--data {data}: folder not found; the {args.protocol} protocol needs its data prepared "
                            f"first (docs/real_data.md)")
        if not data.exists():
            from kdmri_lib.datasets.demo_data import build_demo_data

            print(f"[ablation] {data}: no data, building the demo data there", flush=True)
            build_demo_data(data, progress=False)
        import shlex

        run(s, log=lambda m: print(m, flush=True), command=" ".join(["python -m kdmri_lib.ablation", *map(shlex.quote, argv)]))
        return 0
    except TrainingInterrupted as e:
        print(f"{e}\n[ablation] interrupted: run the same command again to resume (finished rows are reused)",
              file=sys.stderr)
        return 130
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
