r"""Training loops — teacher, student, U-Net and corrective distillation — with exact resume,
interrupt checkpoints, divergence stop, fastMRI validation and DistributedDataParallel.

Library use (notebooks)::

    cfg = TrainConfig(mode="student", data_dir="data/demo", out_dir="runs/student", epochs=4, steps_per_epoch=50)
    result = fit(cfg)                      # TrainResult: history, model, best/last checkpoints, ...

Command line (``python -m kdmri_lib.train --help`` lists every flag)::

    python -m kdmri_lib.train student --data data/demo --out runs/student --task sr --scale 4 --preset tiny --epochs 8
    python -m kdmri_lib.train distill --data data/demo --out runs/kd --teacher-epochs 8 --epochs 8
    torchrun --nproc_per_node=2 -m kdmri_lib.train student --data data/demo --out runs/ddp --device cpu --epochs 1

What one epoch is
-----------------
``steps_per_epoch`` optimiser steps (default: one pass, ``len(train set) // (batch_size * world_size)``
steps). Training samples are whole slices (with random ``cs`` masks), so the sampler simply draws
as many permutations of the training slices as the epoch needs: with ``steps_per_epoch`` below one
pass an epoch is a capped pass (as the notebooks' CPU defaults use it), above it the epoch goes
round the data more than once — this keeps validation, checkpoints and the progress bar at a
sensible rhythm on a small data set. ``batch_size`` is per process under DDP.

Determinism and exact resume
----------------------------
Every epoch starts by re-seeding Python, NumPy and torch from ``(seed, epoch)``
(:func:`epoch_seed`) and the sampler and DataLoader generators from the same number, so the
randomness of an epoch (which slices, which ``cs`` masks, which natural-image crops) is a pure function of
``(seed, epoch)``. ``resume=True`` continues from ``out_dir/last.pt``:

* after an epoch boundary it simply starts the next epoch: bit-identical (CPU) to an
  uninterrupted run;
* after an **interrupt** (SIGINT / SIGTERM: Ctrl-C, the notebook's stop button, a scheduler's
  TERM; handlers are installed during :func:`fit` only and the previous handlers restored after) the
  loop wrote an interrupt checkpoint at the next step boundary — the position inside the epoch,
  model / optimiser / scheduler / teacher / adapter states, every RNG state and the partial epoch
  sums — and raised :class:`TrainingInterrupted` (CLI: exit code 130). Resume re-seeds that epoch,
  regenerates and skips the batches already done (so the data RNG stream matches), restores the
  saved RNG states and continues: the same final weights as without the interrupt;
* after a crash or ``kill -9`` the last epoch-boundary (or interrupt) checkpoint is intact
  (atomic writes), and resume redoes the lost steps identically.

The LR schedule follows ``epochs`` (a per-step cosine / step / constant schedule with optional
linear warm-up); ``epoch_limit`` stops a call after that many epochs with a normal epoch
checkpoint, so a run can be trained in chunks (``fit(cfg with epoch_limit=1)``, then
``fit(cfg with resume=True)``) along the schedule of the full run.

Divergence: a non-finite loss or gradient norm stops training at once, *before* the bad update;
nothing is written, the last good checkpoint stays, and :class:`TrainingDiverged` names the epoch
and step and suggests a lower learning rate (CLI: ``error: ...``, exit code 2).

Distillation (``mode="distill"``)
---------------------------------
The teacher comes from ``teacher_checkpoint`` (:func:`kdmri_lib.checkpoint.load_model`, which
must hold a teacher of the same task and factor). Frozen (``distill.correction = False``): the
teacher is put in ``eval()``, ``requires_grad_(False)``, is in no optimiser and never changes.
Correction: the teacher trains with its **own** AdamW (``distill.teacher_lr``, default 0.1 x ``lr``,
same schedule shape) on the teacher-correction loss; the student's AdamW holds only the student and
adapter parameters. The corrected teacher is saved inside every checkpoint and as
``teacher_last.pt`` (loadable by :func:`load_model`). Every loss term and weight is logged per
step (``steps.csv``). Validation scores the student (and, in correction mode, the teacher too:
``teacher_val_PSNR``).

DistributedDataParallel
-----------------------
Under ``torchrun`` (``kdmri_lib.device.launched_distributed()``) :func:`fit` initialises the process
group (NCCL on CUDA, gloo on CPU), wraps the trained modules in DDP (student + adapters, and the
teacher in correction mode; every parameter is used in every step, so no
``find_unused_parameters``), shards the training samples with a per-epoch seeded
:class:`EpochSampler` (a ``DistributedSampler``), validates volumes sharded across ranks and
gathered (every rank reports the same metrics as a single-process evaluation), averages the epoch
means of the loss terms over all ranks (``steps.csv`` holds rank 0's per-step values), writes files on
rank 0 only, with barriers around checkpoint writes, and all ranks agree on interrupts and on
divergence at every step.

Files in ``out_dir``: ``last.pt``, ``best.pt`` (best validation PSNR), ``teacher_last.pt``
(correction), ``history.csv`` / ``history.json`` (one row per epoch), ``steps.csv`` (one row per
``log_every`` steps: every loss term and weight, learning rates, dynamic factor, gradient norms),
``config.json``. See :mod:`kdmri_lib.checkpoint` for the checkpoint format.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from . import device as D
from . import teacher_cache
from .atomic import atomic_write, ensure_dir, remove_stale_temporaries, write_json, write_text
from .checkpoint import (load_checkpoint, load_model, model_checkpoint, plain_rng_state, restore_rng_state,
                         save_checkpoint)
from .distill import Adapters, DistillConfig, DistillState, distill_losses
from .errors import CheckpointError, ConfigError, DataError, KdmriError, check_choice, check_float, check_int
from .resources import catch_oom
from .losses import reconstruction_loss

__all__ = ["TrainConfig", "TrainResult", "fit", "load_checkpoint", "load_model", "TrainingDiverged",
           "TrainingInterrupted", "EpochSampler", "epoch_seed", "main", "TRAIN_MODES", "SCHEDULES"]

TRAIN_MODES = ("teacher", "student", "unet", "distill")
SCHEDULES = ("cosine", "step", "constant")
#: fields that must agree between a run and the checkpoint it resumes from
RESUME_IDENTITY = ("mode", "task", "factor", "preset", "teacher_preset", "batch_size", "seed",
                   "natural", "model_overrides", "train_files", "val_files", "references", "unlabelled")
#: the training recipe of each model kind: what ``lr``, ``warmup_steps`` and ``batch_size`` are when a
#: run leaves them unset (None). Transformers need a warm-up and a lower learning rate (SwinIR trains
#: at 2e-4): at 1e-3 without warm-up the tiny Swin stays at the zero-filled level on whole slices.
#: Every training sample is a whole slice, hence the small batches.
RECIPES: dict[str, dict[str, Any]] = {
    "teacher": {"lr": 2e-4, "warmup_steps": 200, "batch_size": 2},
    "student": {"lr": 1e-3, "warmup_steps": 0, "batch_size": 2},
    "unet": {"lr": 1e-3, "warmup_steps": 100, "batch_size": 2},
}
#: leading columns of steps.csv (others follow in first-seen order)
STEP_COLUMNS = ("global_step", "epoch", "step", "lr", "t_lr", "loss", "rec", "edge", "kd", "feat", "att", "kl",
                "w_rec", "w_edge", "w_kd", "w_feat", "w_att", "dynamic", "warmup", "confidence_mean", "e_student",
                "e_teacher", "t_loss", "t_rec", "t_edge", "t_feedback", "t_w_feedback", "t_wrong_fraction", "grad_norm",
                "t_grad_norm", "train_PSNR", "seconds")
_NOT_AVERAGED = ("global_step", "epoch", "step", "lr", "t_lr", "seconds")


class TrainingDiverged(KdmriError):
    """The loss (or gradient norm) became NaN / Inf; training stopped before the bad update."""


class TrainingInterrupted(KdmriError):
    """Training stopped at a step boundary after SIGINT / SIGTERM; an interrupt checkpoint was written."""

    def __init__(self, message: str, epoch: int = 0, step: int = 0, checkpoint: Optional[str] = None):
        super().__init__(message)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything a training run needs (JSON round trip: :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        mode: ``"teacher"``, ``"student"``, ``"unet"`` (train that model kind alone on the L1 loss)
            or ``"distill"`` (train the student from a teacher, :mod:`kdmri_lib.distill`).
        data_dir: folder with ``singlecoil_train/`` and ``singlecoil_val/`` (fastMRI format).
        out_dir: where checkpoints and logs go.
        task, factor: ``"sr"`` + scale or ``"cs"`` + acceleration.
        preset: preset of the trained model (the student in distill mode).
        teacher_preset: distill: the teacher's preset (checked against the checkpoint; None = any).
        teacher_checkpoint: distill: the teacher's checkpoint (required).
        epochs: number of epochs (the LR schedule spans them).
        batch_size: training batch (per process; None: the recipe's).
        lr, weight_decay: AdamW (``lr`` None: the recipe's, :data:`RECIPES`).
        schedule: ``"cosine"`` (to 0), ``"step"`` (x0.5 at 50 % and 75 % of the steps) or ``"constant"``.
        warmup_steps: linear LR warm-up steps (None: the recipe's).
        grad_clip: max gradient norm (None: no clipping; the norm is logged either way).
        amp: autocast on CUDA (bf16, or fp16 with loss scaling on older GPUs); no effect on CPU / MPS.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        seed: the run's seed (model initialisation and every epoch's randomness).
        num_workers: DataLoader worker processes.
        steps_per_epoch: optimiser steps per epoch (module docstring); None: one pass.
        val_slices: cap on validation slices per epoch (:func:`kdmri_lib.reconstruct.select_slices`).
        val_batch_size: slices per forward pass in validation.
        natural: mix natural images 1:1 from ``data_dir/natural/train`` when that folder exists.
        teacher_cache: distillation: memoise the teacher's frozen computations per training sample
            (:mod:`kdmri_lib.teacher_cache`; exact; used for ``sr`` without natural images on one
            process, with a frozen teacher or ``distill.t_params="head"``).
        train_files, val_files: file-name patterns (``fnmatch``, e.g. ``["*_sagittal_*"]``) selecting
            the training / validation files; None = every file of the split.
        references: train on only this many slices *with* ground truth (whole volumes picked by
            :func:`kdmri_lib.protocol.split_references`); None = every selected slice.
        unlabelled: distill mode with ``references``: interleave the other volumes of the selected
            training files 1:1 as a measurement-only pool (no ground truth read; the teacher labels
            them, :mod:`kdmri_lib.protocol`).
        distill: :class:`~kdmri_lib.distill.DistillConfig` (a dict is converted).
        model_overrides: hyper-parameters of the trained model overriding its preset.
        resume: continue from ``out_dir/last.pt`` when it exists.
        epoch_limit: stop this call after this many epochs (resumable; None: run to ``epochs``).
        progress: tqdm progress bars (rank 0).
        verbose: one summary line per epoch (rank 0).
        log_every: write a ``steps.csv`` row every this many steps.
    """

    mode: str = "student"
    data_dir: str = "data/demo"
    out_dir: str = "runs/train"
    task: str = "sr"
    factor: int = 4
    preset: str = "tiny"
    teacher_preset: Optional[str] = None
    teacher_checkpoint: Optional[str] = None
    epochs: int = 10
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: Optional[int] = None
    grad_clip: Optional[float] = 1.0
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    steps_per_epoch: Optional[int] = None
    val_slices: Optional[int] = None
    val_batch_size: int = 1
    natural: bool = False
    train_files: Optional[list] = None
    val_files: Optional[list] = None
    references: Optional[int] = None
    unlabelled: bool = False
    teacher_cache: bool = True
    distill: DistillConfig = field(default_factory=DistillConfig)
    model_overrides: dict = field(default_factory=dict)
    resume: bool = False
    epoch_limit: Optional[int] = None
    progress: bool = True
    verbose: bool = True
    log_every: int = 1

    def validate(self, check_paths: bool = True) -> "TrainConfig":
        """Check every field; raise :class:`ConfigError` (or :class:`DataError` for the data folder)."""
        from .models import PRESETS, check_task_factor
        from .physics import TASKS

        check_choice("mode", self.mode, TRAIN_MODES)
        check_choice("task", self.task, TASKS)
        self.task, self.factor = check_task_factor(self.task, self.factor)
        check_choice("preset", self.preset, PRESETS)
        if self.teacher_preset is not None:
            check_choice("teacher_preset", self.teacher_preset, PRESETS)
        self.epochs = check_int("epochs", self.epochs, minimum=1)
        recipe = RECIPES[self.model_kind]
        for name in ("batch_size", "lr", "warmup_steps"):
            if getattr(self, name) is None:
                setattr(self, name, recipe[name])
        self.batch_size = check_int("batch_size", self.batch_size, minimum=1)
        self.lr = check_float("lr", self.lr, minimum=0.0, strict_min=True)
        self.weight_decay = check_float("weight_decay", self.weight_decay, minimum=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        self.warmup_steps = check_int("warmup_steps", self.warmup_steps, minimum=0)
        if self.grad_clip is not None:
            self.grad_clip = check_float("grad_clip", self.grad_clip, minimum=0.0, strict_min=True)
        for name in ("amp", "natural", "resume", "progress", "verbose", "unlabelled", "teacher_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0].strip().lower() not in D.DEVICE_CHOICES:
            raise ConfigError(f"device must be one of {D.DEVICE_CHOICES} (or 'cuda:N'); got {self.device!r}")
        self.seed = check_int("seed", self.seed, minimum=0)
        self.num_workers = check_int("num_workers", self.num_workers, minimum=0)
        if self.steps_per_epoch is not None:
            self.steps_per_epoch = check_int("steps_per_epoch", self.steps_per_epoch, minimum=1)
        if self.val_slices is not None:
            self.val_slices = check_int("val_slices", self.val_slices, minimum=1)
        self.val_batch_size = check_int("val_batch_size", self.val_batch_size, minimum=1)
        if self.epoch_limit is not None:
            self.epoch_limit = check_int("epoch_limit", self.epoch_limit, minimum=1)
        self.log_every = check_int("log_every", self.log_every, minimum=1)
        from .data import check_patterns

        for name in ("train_files", "val_files"):
            if getattr(self, name) is not None:
                setattr(self, name, check_patterns(name, getattr(self, name)))
        if self.references is not None:
            self.references = check_int("references", self.references, minimum=1)
            if self.natural:
                raise ConfigError("natural=True cannot be combined with references=N (the few-references protocol "
                                  "trains on target-domain slices only)")
        if self.unlabelled and (self.references is None or self.mode != "distill"):
            raise ConfigError("unlabelled=True (a measurement-only pool) needs mode='distill' and references=N: only "
                              "a teacher can label slices without ground truth")
        if isinstance(self.distill, Mapping):
            self.distill = DistillConfig.from_dict(self.distill)
        if not isinstance(self.distill, DistillConfig):
            raise ConfigError(f"distill must be a DistillConfig or a dict; got {type(self.distill).__name__}")
        self.distill.validate()
        if not isinstance(self.model_overrides, Mapping):
            raise ConfigError(f"model_overrides must be a dict of hyper-parameters; got {self.model_overrides!r}")
        self.model_overrides = dict(self.model_overrides)
        for name in ("data_dir", "out_dir"):
            if not isinstance(getattr(self, name), (str, os.PathLike)):
                raise ConfigError(f"{name} must be a path; got {getattr(self, name)!r}")
        if self.mode == "distill":
            if self.teacher_checkpoint is None:
                raise ConfigError("distill mode needs teacher_checkpoint: train a teacher first "
                                  "(`python -m kdmri_lib.train teacher ...`, or give the distill CLI --teacher-epochs N "
                                  "to train one into OUT/teacher)")
            from .pretrained import card, zoo_name

            if check_paths and zoo_name(self.teacher_checkpoint):
                card(zoo_name(self.teacher_checkpoint))   # a known zoo entry (its file is verified when loaded)
            elif check_paths and not Path(self.teacher_checkpoint).is_file():
                raise ConfigError(f"teacher_checkpoint {self.teacher_checkpoint}: file not found (train a teacher first: "
                                  f"`python -m kdmri_lib.train teacher ...`)")
        if check_paths:
            from .data import split_dir

            d = Path(self.data_dir)
            if not d.is_dir():
                raise DataError(f"{d}: data folder not found (run `make data` for the demo data, or see README 'Using real data')")
            for split in ("train", "val"):
                split_dir(d, split)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["distill"] = self.distill.to_dict() if isinstance(self.distill, DistillConfig) else dict(self.distill)
        for k in ("data_dir", "out_dir", "teacher_checkpoint"):
            if d[k] is not None:
                d[k] = str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        from .data import reject_patch_size

        known = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "patch_size" in d:  # configurations written before training moved to whole slices
            reject_patch_size(d.pop("patch_size"), "training option patch_size")
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        if "distill" in d and isinstance(d["distill"], Mapping):
            d["distill"] = DistillConfig.from_dict(d["distill"])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def model_kind(self) -> str:
        return "student" if self.mode == "distill" else self.mode


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        history: per-epoch dicts (``epoch``, ``train_loss``, each term's epoch mean, ``val_PSNR``,
            ``val_SSIM``, ``val_NMSE``, ``val_MSE``, ``lr``, ``seconds``, ...).
        best_checkpoint, last_checkpoint: paths (``best.pt``, ``last.pt``).
        out_dir: the run folder.
        model: the trained model with its **final** weights (``last.pt``), eval mode, on CPU/device;
            ``load_model(result.best_checkpoint)`` gives the best-validation weights.
        teacher: distill mode: the teacher (corrected in correction mode), else None.
        steps_log: path of ``steps.csv``.
        config: the run's :class:`TrainConfig`.
    """

    history: list
    best_checkpoint: Path
    last_checkpoint: Path
    out_dir: Path
    model: nn.Module
    teacher: Optional[nn.Module]
    steps_log: Path
    config: TrainConfig
    adapters: Optional[nn.Module] = None

    @property
    def best(self) -> Optional[dict]:
        rows = [h for h in self.history if h.get("val_PSNR") is not None]
        return max(rows, key=lambda h: h["val_PSNR"]) if rows else None


# --------------------------------------------------------------------------------------------
# sampling, schedules, seeds
# --------------------------------------------------------------------------------------------

def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run with seed ``seed`` (a pure function, 32 bits)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch may be longer than one pass over the data set.

    Each epoch draws ``samples_per_replica * num_replicas`` indices from consecutive random
    permutations of the data set (a generator seeded with ``epoch_seed(seed, epoch)``; call
    :meth:`set_epoch`) and gives rank ``r`` the indices ``r, r + W, r + 2W, ...``. With one replica it
    is a seeded random sampler. Works without a process group (``num_replicas``/``rank`` are given).
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, samples_per_replica: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.samples_per_replica = int(samples_per_replica)

    def __iter__(self):
        n = len(self.dataset)
        total = self.samples_per_replica * self.num_replicas
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        chunks, have = [], 0
        while have < total:
            chunks.append(torch.randperm(n, generator=g))
            have += n
        idx = torch.cat(chunks)[:total]
        return iter(idx[self.rank: total: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.samples_per_replica


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Multiplicative LR factor as a function of the optimiser step (for ``LambdaLR``).

    The linear warm-up lasts ``warmup_steps``, capped at a quarter of the run, so that a short run
    (a notebook's few hundred steps) still reaches its peak learning rate.
    """
    total = max(int(total_steps), 1)
    warmup_steps = min(int(warmup_steps), total // 4)

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return 0.5 ** sum(step >= m for m in (total // 2, (3 * total) // 4))
        t = min(max(step - warmup_steps, 0) / max(total - warmup_steps, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return f


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------

class _StopFlag:
    """SIGINT / SIGTERM set a flag (a second SIGINT raises KeyboardInterrupt at once)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._previous[s] = signal.signal(s, self._handler)
                except (ValueError, OSError):  # pragma: no cover - exotic embeddings
                    pass
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
        return False

    @property
    def set(self) -> bool:
        return self.signum is not None


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on any rank (a no-op without a process group)."""
    if not D.is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu")
    return bool(D.all_reduce_sum(t).item() > 0)


# --------------------------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------------------------

def _csv_text(rows: Sequence[Mapping[str, Any]], leading: Sequence[str] = ()) -> str:
    present: dict[str, None] = {}
    for r in rows:
        present.update(dict.fromkeys(r))
    cols = [c for c in leading if c in present] + [k for k in present if k not in set(leading)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def _read_steps(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            d = {}
            for k, v in r.items():
                if v in ("", None):
                    continue
                try:
                    d[k] = int(v) if k in ("global_step", "epoch", "step") else float(v)
                except ValueError:
                    d[k] = v
            if int(d.get("global_step", 0)) <= upto:
                rows.append(d)
    return rows


class _EpochSums:
    """Running sums of the logged numbers of one epoch (plain data for interrupt checkpoints)."""

    def __init__(self, state: Optional[Mapping[str, Any]] = None):
        self.sums: dict[str, list] = {k: [float(v[0]), int(v[1])] for k, v in (state or {}).get("sums", {}).items()}
        self.seconds = float((state or {}).get("seconds", 0.0))

    def add(self, row: Mapping[str, float]) -> None:
        for k, v in row.items():
            if k in _NOT_AVERAGED or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            s = self.sums.setdefault(k, [0.0, 0])
            s[0] += float(v)
            s[1] += 1

    def means(self) -> dict[str, float]:
        return {k: s[0] / s[1] for k, s in self.sums.items() if s[1]}

    def reduced_means(self) -> dict[str, float]:
        """Epoch means over every rank's steps (all ranks log the same terms; a plain mean without
        a process group)."""
        if not D.is_distributed():
            return self.means()
        keys = sorted(self.sums)
        t = torch.tensor([[self.sums[k][0], float(self.sums[k][1])] for k in keys], dtype=torch.float64)
        t = D.all_reduce_sum(t)
        return {k: float(t[i, 0] / t[i, 1]) for i, k in enumerate(keys) if t[i, 1] > 0}

    def state(self, extra_seconds: float = 0.0) -> dict:
        return {"sums": {k: [s[0], s[1]] for k, s in self.sums.items()}, "seconds": self.seconds + extra_seconds}


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------

def _resolve_device(cfg: TrainConfig) -> torch.device:
    try:
        if D.launched_distributed() and cfg.device.strip().lower() == "cuda":
            return D.get_device(f"cuda:{D.dist_env()[1] % max(torch.cuda.device_count(), 1)}")
        return D.get_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _batch_psnr(out: torch.Tensor, x: torch.Tensor) -> float:
    mse = float(((out.detach().float() - x) ** 2).mean())
    peak = float(x.max())
    return 10.0 * math.log10(peak * peak / mse) if mse > 0 and peak > 0 else float("inf")


def _state_cpu(sd: Mapping[str, Any]) -> dict:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}


def _optimizer_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    return {"state": {k: _state_cpu(v) for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def training_dataset(cfg: TrainConfig):
    """The training set of a run: whole slices of ``data_dir/singlecoil_train`` (random ``cs``
    masks), mixed 1:1 with ``data_dir/natural/train`` when ``cfg.natural`` and that folder exists."""
    from .data import build_dataset

    natural_dir = Path(cfg.data_dir) / "natural" / "train"
    return build_dataset(cfg.data_dir, "train", cfg.task, cfg.factor,
                         natural_dir=natural_dir if (cfg.natural and natural_dir.is_dir()) else None,
                         include=cfg.train_files, references=cfg.references, unlabelled=cfg.unlabelled)


def fit(cfg: TrainConfig) -> TrainResult:
    """Train according to ``cfg`` (see the module docstring); returns a :class:`TrainResult`.

    Raises:
        ConfigError / DataError / CheckpointError: bad configuration, data or checkpoint.
        TrainingDiverged: non-finite loss; the last good checkpoint is kept.
        TrainingInterrupted: SIGINT / SIGTERM; an interrupt checkpoint was written (``resume=True``).
    """
    cfg = dataclasses.replace(cfg)
    cfg.validate()
    owns_pg = D.launched_distributed() and not D.is_distributed()
    device = _resolve_device(cfg)
    if D.launched_distributed():
        D.init_distributed(device)
    try:
        with _StopFlag() as stop, catch_oom("training", device, batch_size=cfg.batch_size,
                                            preset=cfg.preset, teacher_preset=cfg.teacher_preset,
                                            val_batch_size=cfg.val_batch_size, amp=cfg.amp):
            return _fit(cfg, device, stop)
    finally:
        if owns_pg:
            D.cleanup_distributed()


def _fit(cfg: TrainConfig, device: torch.device, stop: _StopFlag) -> TrainResult:
    from .models import build_model
    from .reconstruct import evaluate, open_split

    distributed = D.is_distributed()
    rank, world = D.rank(), D.world_size()
    main = rank == 0
    out = Path(cfg.out_dir)
    last_path, best_path, teacher_path = out / "last.pt", out / "best.pt", out / "teacher_last.pt"
    steps_path = out / "steps.csv"
    if main:
        ensure_dir(out, "run folder (--out)")
        # a process killed during a checkpoint write (kill -9) left its temporary file: this run owns
        # the folder now, so it is removed (the checkpoint it was replacing is intact)
        remove_stale_temporaries(out, [p.name for p in (last_path, best_path, teacher_path)])
    D.barrier()
    amp = cfg.amp and D.amp_dtype(device) is not None
    dcfg = cfg.distill
    distill = cfg.mode == "distill"
    correction = distill and dcfg.correction

    # ---- data ---------------------------------------------------------------------------------
    train_ds = training_dataset(cfg)
    val_ds = open_split(cfg.data_dir, cfg.task, cfg.factor, "val", include=cfg.val_files)
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_ds) // (cfg.batch_size * world))
    total_steps = steps_per_epoch * cfg.epochs

    # ---- models -------------------------------------------------------------------------------
    D.seed_everything(cfg.seed)
    model = build_model(cfg.model_kind, cfg.preset, cfg.task, cfg.factor, **cfg.model_overrides).to(device)
    teacher = adapters = teacher_anchor = None
    if distill:
        teacher, tckpt = load_model(cfg.teacher_checkpoint, device,
                                    expect={"kind": "teacher", "task": cfg.task, "factor": cfg.factor,
                                            "preset": cfg.teacher_preset})
        if correction:
            teacher.train()
            if dcfg.t_params == "head":   # the body keeps the source domain's knowledge; the head adapts
                teacher.requires_grad_(False)
                for p in teacher.head_parameters():
                    p.requires_grad_(True)
        else:
            teacher.eval()
            teacher.requires_grad_(False)
        if dcfg.feature_kd:
            adapters = Adapters.for_models(model, teacher).to(device)
        # the pre-trained teacher, which the correction's L2-SP term keeps it near (captured before a
        # resumed run restores the corrected weights)
        teacher_anchor = ([p.detach().clone() for p in teacher.parameters()]
                          if correction and dcfg.t_anchor > 0 else None)
    params = list(model.parameters()) + (list(adapters.parameters()) if adapters is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, total_steps, cfg.warmup_steps))
    t_opt = t_sched = None
    teacher_lr = dcfg.teacher_lr if dcfg.teacher_lr is not None else 0.1 * cfg.lr
    if correction:
        t_opt = torch.optim.AdamW([p for p in teacher.parameters() if p.requires_grad], lr=teacher_lr,
                                  weight_decay=cfg.weight_decay)
        t_sched = torch.optim.lr_scheduler.LambdaLR(t_opt, lr_lambda(cfg.schedule, total_steps, cfg.warmup_steps))
    scaler = torch.amp.GradScaler(device.type) if D.needs_grad_scaler(device, amp) else None
    dstate = DistillState(dcfg.ema_decay, dcfg.dynamic_floor)

    # ---- resume -------------------------------------------------------------------------------
    start_epoch, start_step, global_step = 0, 0, 0
    history: list[dict] = []
    best: Optional[dict] = None
    ckpt: Optional[dict] = None
    step_rows: list[dict] = []
    if cfg.resume and last_path.exists():
        ckpt = load_checkpoint(last_path)
        _check_resume(ckpt, cfg, last_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if distill:
            dd = ckpt.get("distill") or {}
            if correction:
                teacher.load_state_dict(dd["teacher"]["model"])
                t_opt.load_state_dict(dd["teacher"]["optimizer"])
                t_sched.load_state_dict(dd["teacher"]["scheduler"])
            if adapters is not None:
                adapters.load_state_dict(dd["adapters"])
            if dd.get("state"):
                dstate.load_state_dict(dd["state"])
        start_epoch, start_step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
        global_step = int(ckpt["global_step"])
        history = list(ckpt.get("history", []))
        best = ckpt.get("best")
        if main:
            step_rows = _read_steps(steps_path, global_step)
        if cfg.verbose and main:
            if start_epoch >= cfg.epochs:
                print(f"[train] {last_path}: already trained for {start_epoch} epoch(s); nothing to do", flush=True)
            else:
                where = f"epoch {start_epoch + 1} step {start_step}" if start_step else f"epoch {start_epoch + 1}"
                print(f"[train] resuming {last_path} at {where} (global step {global_step})", flush=True)
    elif cfg.resume and cfg.verbose and main:
        print(f"[train] --resume: no {last_path} yet, starting from scratch", flush=True)

    if main:
        write_json(out / "config.json", cfg.to_dict())

    # ---- DDP ----------------------------------------------------------------------------------
    def ddp(m):
        if not distributed or m is None:
            return m
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(m, device_ids=[device.index] if device.type == "cuda" else None)

    model_t, adapters_t = ddp(model), ddp(adapters)
    teacher_t = ddp(teacher) if correction else teacher
    cache = None
    if (distill and cfg.teacher_cache and not distributed and teacher_cache.usable(cfg.task, cfg.natural, teacher)
            and (not correction or dcfg.t_params == "head")):
        from .pretrained import resolve

        store = teacher_cache.shared_store(str(resolve(cfg.teacher_checkpoint)), frozen=not correction)
        teacher_t = cache = teacher_cache.TeacherCache(teacher, relabel_every=dcfg.relabel_every, store=store)
        saved = ((ckpt or {}).get("distill") or {}).get("teacher_cache")
        if saved:
            cache.load_state(saved)
        elif correction and global_step:   # resuming a run that did not memoise: relabel from here
            cache.teacher_steps = -(-global_step // dcfg.t_every)   # teacher steps so far (one every t_every)
            cache.version = cache.teacher_steps // dcfg.relabel_every

    sampler = EpochSampler(train_ds, world, rank, cfg.seed, steps_per_epoch * cfg.batch_size)
    loader_gen = torch.Generator()
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, generator=loader_gen, pin_memory=device.type == "cuda")
    train_params = [p for p in params if p.requires_grad]

    def checkpoint_dict(epoch: int, step: int, interrupted: bool, sums: Optional[dict]) -> dict:
        c = model_checkpoint(model)
        c.update(epoch=epoch, step=step, global_step=global_step, interrupted=interrupted,
                 optimizer=_optimizer_state(opt), scheduler=sched.state_dict(),
                 scaler=scaler.state_dict() if scaler is not None else None, rng=plain_rng_state(),
                 train_config=cfg.to_dict(), history=history, best=best, epoch_sums=sums,
                 steps_per_epoch=steps_per_epoch, world_size=world)
        if distill:
            dd: dict[str, Any] = {"state": dstate.state_dict(), "teacher_checkpoint": str(cfg.teacher_checkpoint)}
            if correction:
                dd["teacher"] = {**model_checkpoint(teacher), "optimizer": _optimizer_state(t_opt),
                                 "scheduler": t_sched.state_dict()}
            if adapters is not None:
                dd["adapters"] = _state_cpu(adapters.state_dict())
                dd["adapters_config"] = adapters.config
            if cache is not None and correction:
                dd["teacher_cache"] = cache.state()
            c["distill"] = dd
        return c

    def write_logs():
        if not main:
            return
        write_text(steps_path, _csv_text(step_rows, STEP_COLUMNS))
        write_text(out / "history.csv", _csv_text(history, ("epoch", "train_loss")))
        write_json(out / "history.json", history)

    # ---- epochs -------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    epochs_run = 0
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.epoch_limit is not None and epochs_run >= cfg.epoch_limit:
            break
        t_epoch = time.perf_counter()
        es = epoch_seed(cfg.seed, epoch)
        D.seed_everything(es)
        sampler.set_epoch(epoch)
        loader_gen.manual_seed(es)
        it = iter(loader)
        skip = start_step if (ckpt is not None and epoch == start_epoch) else 0
        sums = _EpochSums(ckpt.get("epoch_sums") if skip else None)
        for _ in range(skip):
            next(it)
        if skip:
            restore_rng_state(ckpt["rng"])
        model_t.train()
        if adapters is not None:
            adapters.train()
        bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   leave=False, disable=not (cfg.progress and main), dynamic_ncols=True)
        try:
            for step in range(skip, steps_per_epoch):
                if _any_rank(stop.set, device):
                    c = checkpoint_dict(epoch, step, True, sums.state(time.perf_counter() - t_epoch))
                    D.barrier()
                    if main:
                        save_checkpoint(c, last_path)
                        write_logs()
                    D.barrier()
                    msg = (f"interrupted at epoch {epoch + 1} step {step}; resume with --resume "
                           f"(checkpoint {last_path})")
                    raise TrainingInterrupted(msg, epoch + 1, step, str(last_path))
                t0 = time.perf_counter()
                batch = next(it)
                row = _train_step(batch, cfg, device, amp, model_t, teacher_t, adapters_t, dstate, opt, t_opt, scaler,
                                  train_params, teacher, epoch, step, last_path, teacher_anchor)
                if cache is not None and row.get("t_step"):
                    cache.step()
                sched.step()
                if t_sched is not None:
                    t_sched.step()
                global_step += 1
                row.update(global_step=global_step, epoch=epoch + 1, step=step + 1,
                           lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
                if t_opt is not None:
                    row["t_lr"] = t_opt.param_groups[0]["lr"]
                sums.add(row)
                if main and global_step % cfg.log_every == 0:
                    step_rows.append(row)
                bar.update(1)
                if main and cfg.progress:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['train_PSNR']:.2f}", refresh=False)
        finally:
            bar.close()

        # ---- validation, checkpoint ----------------------------------------------------------
        res = evaluate(model, val_ds, "val", cfg.task, cfg.factor, device, cfg.val_batch_size, cfg.val_slices,
                       amp=amp, per_slice=False, distributed=distributed)
        means = sums.reduced_means()
        h: dict[str, Any] = {"epoch": epoch + 1, "train_loss": means.pop("loss", float("nan"))}
        h.update(means)
        h.update({f"val_{k}": res["means"][k] for k in ("PSNR", "SSIM", "NMSE", "MSE")})
        if correction:
            tres = evaluate(teacher, val_ds, "val", cfg.task, cfg.factor, device, cfg.val_batch_size, cfg.val_slices,
                            amp=amp, per_slice=False, distributed=distributed)
            h.update({f"teacher_val_{k}": tres["means"][k] for k in ("PSNR", "SSIM", "NMSE")})
            teacher.train()
        h["lr"] = opt.param_groups[0]["lr"]
        h["steps"] = global_step
        h["seconds"] = sums.seconds + (time.perf_counter() - t_epoch)
        history.append(h)
        is_best = best is None or h["val_PSNR"] > best["val_PSNR"]
        if is_best:
            best = {"epoch": epoch + 1, "val_PSNR": h["val_PSNR"]}
        c = checkpoint_dict(epoch + 1, 0, False, None)
        D.barrier()
        if main:
            save_checkpoint(c, last_path)
            if is_best:
                with atomic_write(best_path) as tmp:
                    shutil.copyfile(last_path, tmp)
            if correction:
                save_checkpoint({**model_checkpoint(teacher), "epoch": epoch + 1, "global_step": global_step,
                                 "source": "teacher corrected during distillation", "train_config": cfg.to_dict()},
                                teacher_path)
            write_logs()
        D.barrier()
        if cfg.verbose and main:
            extra = f" | teacher {h['teacher_val_PSNR']:.2f} dB" if correction else ""
            kd = f" | dyn {h['dynamic']:.2f}" if distill and "dynamic" in h else ""
            print(f"[{cfg.mode}] epoch {epoch + 1}/{cfg.epochs} | loss {h['train_loss']:.4f} | val PSNR "
                  f"{h['val_PSNR']:.2f} dB SSIM {h['val_SSIM']:.4f} NMSE {h['val_NMSE']:.4f}{extra}{kd} | "
                  f"lr {h['lr']:.2e} | {h['seconds']:.0f} s{' *' if is_best else ''}", flush=True)
        epochs_run += 1
        ckpt = None

    model.eval()
    if teacher is not None:
        teacher.eval()
    if not history and main and not last_path.exists():  # pragma: no cover - nothing ran and nothing saved
        raise ConfigError("no epoch was run")
    return TrainResult(history=history, best_checkpoint=best_path, last_checkpoint=last_path, out_dir=out,
                       model=model, teacher=teacher, steps_log=steps_path, config=cfg, adapters=adapters)


def _check_resume(ckpt: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    old = ckpt.get("train_config") or {}
    new = cfg.to_dict()
    diff = [k for k in RESUME_IDENTITY if k in old and old[k] != new[k]]
    if cfg.mode == "distill" and old.get("distill") and old["distill"] != new["distill"]:
        diff.append("distill")
    if diff:
        detail = "; ".join(f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path}: cannot resume: this run's settings differ from the checkpoint's ({detail}). "
                              f"Use another out_dir, or the same settings.")
    if ckpt.get("world_size", 1) != D.world_size():
        raise CheckpointError(f"{path}: written by a run with {ckpt.get('world_size')} process(es), resumed with "
                              f"{D.world_size()}; resume with the same number of processes (the data order depends on it)")


def _train_step(batch, cfg: TrainConfig, device, amp, model_t, teacher_t, adapters_t, dstate, opt, t_opt, scaler,
                train_params, teacher, epoch, step, last_path, teacher_anchor=None) -> dict:
    from .data import batch_operator, to_device

    batch = to_device(batch, device)
    op = batch_operator(batch, cfg.task, cfg.factor)
    x = batch["target"].float()
    opt.zero_grad(set_to_none=True)
    if t_opt is not None:
        t_opt.zero_grad(set_to_none=True)
    t_loss = None
    t_step = t_opt is not None and dstate.steps % cfg.distill.t_every == 0   # a teacher step this time
    if cfg.mode == "distill":
        lb = distill_losses(model_t, teacher_t, adapters_t, batch["y"], op, x, cfg.distill, dstate,
                            teacher_grad=t_step, amp=amp, labelled=batch.get("labelled"),
                            teacher_anchor=teacher_anchor)
        loss, t_loss = lb.total, lb.teacher_total
        if not t_step:
            t_loss = None
        row = lb.log_dict()
        row["t_step"] = float(t_step)
        out = lb.maps["student"]
    else:
        with D.autocast(device, amp):
            out = model_t(batch["y"], op)
        loss = reconstruction_loss(out.float(), x)
        row = {"loss": float(loss.detach()), "rec": float(loss.detach())}
    finite = math.isfinite(row["loss"]) and (t_loss is None or math.isfinite(row.get("t_loss", 0.0)))
    if _any_rank(not finite, device):
        _diverged(cfg, epoch, step, row, last_path)
    both = loss if t_loss is None else loss + t_loss
    if scaler is not None:
        scaler.scale(both).backward()
        scaler.unscale_(opt)
        if t_step:
            scaler.unscale_(t_opt)
    else:
        both.backward()
    clip = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
    gn = float(torch.nn.utils.clip_grad_norm_(train_params, clip))
    row["grad_norm"] = gn
    tgn = None
    if t_step:
        tgn = float(torch.nn.utils.clip_grad_norm_([p for p in teacher.parameters() if p.requires_grad], clip))
        row["t_grad_norm"] = tgn
    if scaler is None and _any_rank(not (math.isfinite(gn) and (tgn is None or math.isfinite(tgn))), device):
        _diverged(cfg, epoch, step, {**row, "grad_norm": gn}, last_path, what="gradient norm")
    if scaler is not None:
        scaler.step(opt)
        if t_step:
            scaler.step(t_opt)
        scaler.update()
    else:
        opt.step()
        if t_step:
            t_opt.step()
    lab = batch.get("labelled")
    keep = slice(None) if lab is None else lab > 0.5   # PSNR only where there is a ground truth
    row["train_PSNR"] = _batch_psnr(out[keep], x[keep]) if bool((lab is None) or keep.any()) else float("nan")
    return row


def _diverged(cfg: TrainConfig, epoch: int, step: int, row: Mapping[str, Any], last_path: Path, what: str = "loss"):
    terms = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k in
                      ("loss", "rec", "edge", "kd", "feat", "att", "t_loss", "grad_norm", "t_grad_norm"))
    keep = (f"the last good checkpoint {last_path} is kept" if last_path.exists()
            else "no checkpoint was written yet")
    raise TrainingDiverged(
        f"training diverged at epoch {epoch + 1} step {step + 1}: the {what} is not finite ({terms}); stopped before "
        f"the update, {keep}. Try a lower learning rate (lr is {cfg.lr:g}; e.g. --lr {cfg.lr / 10:g}), "
        f"gradient clipping (--grad-clip), or --no-amp.")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .distill import ABLATION_ROWS, CONFIDENCE_MODES
    from .models import PRESETS

    p = argparse.ArgumentParser(
        prog="python -m kdmri_lib.train",
        description="Train a teacher, a student or a U-Net alone, or distil a teacher into the student "
                    "(corrective heterogeneous distillation). Runs under torchrun for DDP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("mode", choices=TRAIN_MODES, help="what to train")
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, help="data folder with singlecoil_train/ and singlecoil_val/")
    g.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    g.add_argument("--task", choices=("sr", "cs"), default="sr", help="sr: low-resolution acquisition; cs: Cartesian under-sampling")
    fac = g.add_mutually_exclusive_group()
    fac.add_argument("--scale", type=int, default=None, help="sr scale (default 4)")
    fac.add_argument("--acceleration", type=int, default=None, help="cs acceleration (default 4)")
    g.add_argument("--natural", action="store_true", help="mix natural images 1:1 from DATA/natural/train")
    g.add_argument("--train-files", default=None, help="comma-separated file-name patterns of the training files "
                                                       "(e.g. '*_sagittal_*'; default: every file)")
    g.add_argument("--val-files", default=None, help="comma-separated file-name patterns of the validation files")
    g.add_argument("--references", type=int, default=None,
                   help="train on only this many slices with ground truth (whole volumes; kdmri_lib.protocol)")
    g.add_argument("--unlabelled", action="store_true",
                   help="distill with --references: the other volumes as a measurement-only pool the teacher labels")
    g.add_argument("--val-slices", type=int, default=None, help="cap on validation slices per epoch (default: all)")
    g.add_argument("--val-batch-size", type=int, default=1, help="slices per forward pass in validation")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    m = p.add_argument_group("model and optimisation")
    m.add_argument("--preset", choices=PRESETS, default="tiny", help="preset of the trained model (student in distill mode)")
    m.add_argument("--epochs", type=int, default=10, help="epochs (the LR schedule spans them)")
    m.add_argument("--epoch-limit", type=int, default=None, help="stop this call after N epochs (resumable)")
    m.add_argument("--steps-per-epoch", type=int, default=None, help="optimiser steps per epoch (default: one pass over the data)")
    m.add_argument("--batch-size", type=int, default=None, help="batch size per process, whole slices (default: the mode's recipe)")
    m.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: the mode's recipe)")
    m.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    m.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule")
    m.add_argument("--warmup-steps", type=int, default=None, help="linear LR warm-up steps (default: the mode's recipe)")
    m.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    m.add_argument("--no-amp", action="store_true", help="no autocast on CUDA (full float32)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    m.add_argument("--seed", type=int, default=0, help="seed of the run")
    m.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (after an epoch, an interrupt or a crash)")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")
    m.add_argument("--quiet", action="store_true", help="no per-epoch summary lines")
    m.add_argument("--log-every", type=int, default=1, help="steps.csv row every N steps")
    k = p.add_argument_group("distillation (mode distill)")
    k.add_argument("--teacher-checkpoint", default=None, help="the teacher's checkpoint; if missing, a teacher is trained first into OUT/teacher")
    k.add_argument("--teacher-preset", choices=PRESETS, default=None, help="the teacher's preset (checked against its checkpoint; default: --preset when training one)")
    k.add_argument("--teacher-epochs", type=int, default=None, help="epochs of the teacher trained first when no --teacher-checkpoint is given (default: --epochs)")
    k.add_argument("--ablation-row", choices=tuple(ABLATION_ROWS), default=None, help="start from the switches of an ablation row (flags below override)")
    k.add_argument("--no-output-kd", action="store_true", help="no output distillation w*|S-T|")
    k.add_argument("--no-feature-kd", action="store_true", help="no feature distillation through adapters")
    k.add_argument("--no-attention-kd", action="store_true", help="no attention-map transfer")
    k.add_argument("--no-edge", action="store_true", help="no Sobel edge loss for the student")
    k.add_argument("--confidence", choices=CONFIDENCE_MODES, default=None, help="teacher confidence weights (default: soft)")
    k.add_argument("--no-correction", action="store_true", help="frozen teacher (no teacher correction)")
    k.add_argument("--no-dynamic", action="store_true", help="no dynamic weighting of the distillation terms")
    k.add_argument("--teacher-lr", type=float, default=None, help="teacher learning rate in correction mode (default: 0.1 x --lr)")
    for name, help_ in (("w-rec", "weight of the student's L1 loss"), ("w-edge", "weight of the student's edge loss"),
                        ("w-kd", "weight of output distillation"), ("w-feat", "weight of feature distillation"),
                        ("w-att", "weight of attention transfer"),
                        ("t-edge-weight", "teacher correction: edge-loss weight"),
                        ("t-error-focus", "teacher correction: extra weight where the student beats the teacher"),
                        ("t-feedback-weight", "teacher correction: weight of the student-feedback term"),
                        ("ema-decay", "decay of the error EMAs of dynamic weighting")):
        k.add_argument(f"--{name}", type=float, default=None, help=f"{help_} (default: the DistillConfig default)")
    k.add_argument("--kd-warmup-steps", type=int, default=None, help="linear ramp of the distillation weights over N steps")
    return p


def config_from_args(args) -> TrainConfig:
    """The :class:`TrainConfig` of parsed CLI arguments (teacher checkpoint resolved by the caller)."""
    factor = args.scale if args.scale is not None else args.acceleration
    if factor is None:
        factor = 4
    base = dict(DistillConfig.preset(args.ablation_row).to_dict()) if args.ablation_row else DistillConfig().to_dict()
    for flag, key in (("no_output_kd", "output_kd"), ("no_feature_kd", "feature_kd"), ("no_attention_kd", "attention_kd"),
                      ("no_edge", "edge"), ("no_correction", "correction"), ("no_dynamic", "dynamic")):
        if getattr(args, flag):
            base[key] = False
    for key in ("confidence", "teacher_lr", "w_rec", "w_edge", "w_kd", "w_feat", "w_att", "t_edge_weight",
                "t_error_focus", "t_feedback_weight", "ema_decay", "kd_warmup_steps"):
        v = getattr(args, key)
        if v is not None:
            base[key] = v
    return TrainConfig(
        mode=args.mode, data_dir=args.data, out_dir=args.out, task=args.task, factor=factor, preset=args.preset,
        teacher_preset=args.teacher_preset, teacher_checkpoint=args.teacher_checkpoint, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip or None, amp=not args.no_amp,
        device=args.device, seed=args.seed, num_workers=args.num_workers, steps_per_epoch=args.steps_per_epoch,
        val_slices=args.val_slices, val_batch_size=args.val_batch_size, natural=args.natural,
        train_files=args.train_files, val_files=args.val_files, references=args.references, unlabelled=args.unlabelled,
        distill=DistillConfig.from_dict(base), resume=args.resume, epoch_limit=args.epoch_limit,
        progress=not args.no_progress, verbose=not args.quiet, log_every=args.log_every)


def train_teacher_first(cfg: TrainConfig, teacher_epochs: Optional[int] = None) -> Path:
    """Distill mode without a teacher checkpoint: train a teacher (``teacher_preset`` or ``preset``)
    with the run's data / budget into ``out_dir/teacher`` (resumed if it is there) and return its
    ``last.pt`` (final weights)."""
    tdir = Path(cfg.out_dir) / "teacher"
    tcfg = cfg.replace(mode="teacher", out_dir=str(tdir), preset=cfg.teacher_preset or cfg.preset, teacher_preset=None,
                       teacher_checkpoint=None, epochs=teacher_epochs or cfg.epochs, resume=True, epoch_limit=None,
                       distill=DistillConfig())
    last = tdir / "last.pt"
    if last.exists():
        c = load_checkpoint(last)
        if int(c["epoch"]) >= tcfg.epochs and not c.get("interrupted"):
            return last
    if cfg.verbose and D.is_main_process():
        print(f"[train] no teacher checkpoint given: training a {tcfg.preset} teacher for {tcfg.epochs} epoch(s) "
              f"into {tdir}", flush=True)
    fit(tcfg)
    return last


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.mode == "distill" and cfg.teacher_checkpoint is None:
            cfg.teacher_checkpoint = str(train_teacher_first(cfg, args.teacher_epochs))
        fit(cfg)
        return 0
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr, flush=True)
        return 130
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted (second Ctrl-C): stopped without an interrupt checkpoint; --resume continues from the "
              "last checkpoint", file=sys.stderr, flush=True)
        return 130


# --------------------------------------------------------------------------------------------
# the pieces of a training loop, for notebooks that write one out by hand
# --------------------------------------------------------------------------------------------

def make_loader(dataset, batch_size: int = 8, seed: int = 0, shuffle: bool = True, num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` with a seeded shuffle (the lesson loop of notebook 02; ``fit``
    builds its own, resumable, loader)."""
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    return DataLoader(dataset, batch_size=check_int("batch_size", batch_size, minimum=1), shuffle=shuffle,
                      generator=g, drop_last=True, num_workers=num_workers)


def make_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model`` (what ``fit`` uses)."""
    lr = check_float("lr", lr, minimum=0.0, strict_min=True)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)


if __name__ == "__main__":
    sys.exit(main())
