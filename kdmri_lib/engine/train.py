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
The teacher comes from ``teacher_checkpoint`` (:func:`kdmri_lib.models.checkpoint.load_model`, which
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
Under ``torchrun`` (``kdmri_lib.core.device.launched_distributed()``) :func:`fit` initialises the process
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
``config.json``. See :mod:`kdmri_lib.models.checkpoint` for the checkpoint format.

The pieces: :mod:`kdmri_lib.engine.run_config` (the run's fields, defaults, checks and recipes),
:mod:`kdmri_lib.engine.trainer` (:class:`~kdmri_lib.engine.trainer.Trainer`: the loop over an explicit
:class:`~kdmri_lib.engine.trainer.TrainState`, step hooks), :mod:`kdmri_lib.engine.schedule` (seeds, sampler, LR
schedule, stop flag) and :mod:`kdmri_lib.engine.run_log` (the log files). This module is ``fit`` and the
command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdmri_lib.core import device as D
from kdmri_lib.core.errors import ConfigError, KdmriError, check_float, check_int
from kdmri_lib.core.resources import catch_oom
from kdmri_lib.distill import DistillConfig
from kdmri_lib.engine.run_config import RECIPES, RESUME_IDENTITY, SCHEDULES, TRAIN_MODES, TrainConfig
from kdmri_lib.engine.schedule import EpochSampler, StopFlag, epoch_seed, lr_lambda
from kdmri_lib.engine.trainer import (
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    TrainState,
    add_step_hook,
    training_dataset,
)
from kdmri_lib.models.checkpoint import load_checkpoint, load_model

__all__ = ["TrainConfig", "TrainResult", "TrainState", "Trainer", "fit", "load_checkpoint", "load_model",
           "TrainingDiverged", "TrainingInterrupted", "EpochSampler", "epoch_seed", "lr_lambda", "main", "TRAIN_MODES",
           "SCHEDULES", "RECIPES", "RESUME_IDENTITY", "add_step_hook", "training_dataset", "make_loader",
           "make_optimizer"]


def _resolve_device(cfg: TrainConfig) -> torch.device:
    try:
        if D.launched_distributed() and cfg.device.strip().lower() == "cuda":
            return D.get_device(f"cuda:{D.dist_env()[1] % max(torch.cuda.device_count(), 1)}")
        return D.get_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def fit(cfg: TrainConfig, on_step: Optional[Callable[[Trainer, dict], None]] = None) -> TrainResult:
    """Train according to ``cfg`` (see the module docstring); returns a :class:`TrainResult`.

    ``on_step(trainer, row)`` runs after every training step (as :func:`add_step_hook`'s hooks do).

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
        with StopFlag() as stop, catch_oom("training", device, batch_size=cfg.batch_size,
                                           preset=cfg.preset, teacher_preset=cfg.teacher_preset,
                                           val_batch_size=cfg.val_batch_size, amp=cfg.amp):
            return Trainer(cfg, device, stop, hooks=(on_step,) if on_step is not None else ()).run()
    finally:
        if owns_pg:
            D.cleanup_distributed()


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from kdmri_lib.distill import ABLATION_ROWS
    from kdmri_lib.models import PRESETS

    d = TrainConfig()   # every default below is the run configuration's (one definition)
    p = argparse.ArgumentParser(
        prog="python -m kdmri_lib.train",
        description="Train a teacher, a student or a U-Net alone, or distil a teacher into the student "
                    "(corrective heterogeneous distillation). Runs under torchrun for DDP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("mode", choices=TRAIN_MODES, help="what to train")
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, help="data folder with singlecoil_train/ and singlecoil_val/")
    g.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    g.add_argument("--task", choices=("sr", "cs"), default=d.task, help="sr: low-resolution acquisition; cs: Cartesian under-sampling")
    fac = g.add_mutually_exclusive_group()
    fac.add_argument("--scale", type=int, default=None, help="sr scale (default 4)")
    fac.add_argument("--acceleration", type=int, default=None, help="cs acceleration (default 4)")
    g.add_argument("--natural", action="store_true", help="mix natural images 1:1 from DATA/natural/train")
    g.add_argument("--augment", action="store_true", help="warp each training slice at random (flip, rotation, "
                                                          "scale, shift) before it is measured")
    g.add_argument("--train-files", default=None, help="comma-separated file-name patterns of the training files "
                                                       "(e.g. '*_sagittal_*'; default: every file)")
    g.add_argument("--val-files", default=None, help="comma-separated file-name patterns of the validation files")
    g.add_argument("--references", type=int, default=None,
                   help="train on only this many slices with ground truth (whole volumes; kdmri_lib.datasets.protocol)")
    g.add_argument("--unlabelled", action="store_true",
                   help="distill with --references: the other volumes as a measurement-only pool the teacher labels")
    g.add_argument("--pool-split", default=None,
                   help="with --unlabelled: the pool is this split's slices instead (e.g. test: fastMRI's test split, "
                        "under-sampled k-space as acquired, no ground truth)")
    g.add_argument("--rehearsal-files", default=None,
                   help="distill with --t-rehearsal W: comma-separated file-name patterns of the teacher's "
                        "source-domain training files, which its correction rehearses")
    g.add_argument("--val-slices", type=int, default=None, help="cap on validation slices per epoch (default: all)")
    g.add_argument("--val-batch-size", type=int, default=d.val_batch_size, help="slices per forward pass in validation")
    g.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader worker processes")
    m = p.add_argument_group("model and optimisation")
    m.add_argument("--preset", choices=PRESETS, default=d.preset, help="preset of the trained model (student in distill mode)")
    m.add_argument("--epochs", type=int, default=d.epochs, help="epochs (the LR schedule spans them)")
    m.add_argument("--epoch-limit", type=int, default=None, help="stop this call after N epochs (resumable)")
    m.add_argument("--steps-per-epoch", type=int, default=None, help="optimiser steps per epoch (default: one pass over the data)")
    m.add_argument("--batch-size", type=int, default=None, help="batch size per process, whole slices (default: the mode's recipe)")
    m.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: the mode's recipe)")
    m.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    m.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="learning-rate schedule")
    m.add_argument("--warmup-steps", type=int, default=None, help="linear LR warm-up steps (default: the mode's recipe)")
    m.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: no clipping)")
    m.add_argument("--no-amp", action="store_true", help="no autocast on CUDA (full float32)")
    m.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    m.add_argument("--seed", type=int, default=d.seed, help="seed of the run")
    m.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (after an epoch, an interrupt or a crash)")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")
    m.add_argument("--quiet", action="store_true", help="no per-epoch summary lines")
    m.add_argument("--log-every", type=int, default=d.log_every, help="steps.csv row every N steps")
    k = p.add_argument_group("distillation (mode distill)")
    k.add_argument("--teacher-checkpoint", default=None, help="the teacher's checkpoint; if missing, a teacher is trained first into OUT/teacher")
    k.add_argument("--teacher-preset", choices=PRESETS, default=None, help="the teacher's preset (checked against its checkpoint; default: --preset when training one)")
    k.add_argument("--teacher-epochs", type=int, default=None, help="epochs of the teacher trained first when no --teacher-checkpoint is given (default: --epochs)")
    k.add_argument("--ablation-row", choices=tuple(ABLATION_ROWS), default=None,
                   help="start from the switches of an ablation row (flags below override; default: the full method)")
    add_distill_flags(k)
    return p


def add_distill_flags(group) -> None:
    """One flag per :class:`DistillConfig` field, generated from the dataclass (its defaults, types and
    :data:`kdmri_lib.distill.FIELD_HELP`): ``--feature-kd / --no-feature-kd`` for a switch,
    ``--confidence {none,...}`` for a choice, ``--w-kd 0.5`` for a number. A flag that is not given
    leaves no attribute (``argparse.SUPPRESS``): the row's or the config's value stays."""
    from kdmri_lib.distill import FIELD_CHOICES, FIELD_HELP

    defaults = DistillConfig()
    for f in dataclasses.fields(DistillConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        help_ = f"{FIELD_HELP[f.name]} (default: {default})"
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        elif f.name in FIELD_CHOICES:
            group.add_argument(flag, choices=FIELD_CHOICES[f.name], default=argparse.SUPPRESS, help=help_)
        else:
            kind = int if isinstance(default, int) else float
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_)


def config_from_args(args) -> TrainConfig:
    """The :class:`TrainConfig` of parsed CLI arguments (teacher checkpoint resolved by the caller)."""
    factor = args.scale if args.scale is not None else args.acceleration
    if factor is None:
        factor = 4
    base = dict(DistillConfig.preset(args.ablation_row).to_dict()) if args.ablation_row else DistillConfig().to_dict()
    for f in dataclasses.fields(DistillConfig):
        if getattr(args, f.name, None) is not None:
            base[f.name] = getattr(args, f.name)
    return TrainConfig(
        mode=args.mode, data_dir=args.data, out_dir=args.out, task=args.task, factor=factor, preset=args.preset,
        teacher_preset=args.teacher_preset, teacher_checkpoint=args.teacher_checkpoint, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip or None, amp=not args.no_amp,
        device=args.device, seed=args.seed, num_workers=args.num_workers, steps_per_epoch=args.steps_per_epoch,
        val_slices=args.val_slices, val_batch_size=args.val_batch_size, natural=args.natural, augment=args.augment,
        train_files=args.train_files, val_files=args.val_files, references=args.references, unlabelled=args.unlabelled,
        pool_split=args.pool_split,
        rehearsal_files=args.rehearsal_files, distill=DistillConfig.from_dict(base), resume=args.resume, epoch_limit=args.epoch_limit,
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
