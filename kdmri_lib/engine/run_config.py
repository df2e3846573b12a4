"""One training run's configuration: :class:`TrainConfig` (its fields, defaults and checks) and the
recipe of each model kind (what ``lr``, ``warmup_steps`` and ``batch_size`` become when left unset).

:func:`kdmri_lib.engine.train.fit`, the command line (:mod:`kdmri_lib.engine.train`), the notebooks and the ablation
all build a :class:`TrainConfig`. Each field carries a role (:data:`FIELD_ROLES`): the ``identity``
fields must agree for a run to resume (:func:`check_resume`), and every field but the
``operational`` ones must agree for the ablation to reuse a finished run (:func:`same_computation`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from kdmri_lib.core import device as D
from kdmri_lib.core.errors import CheckpointError, ConfigError, DataError, check_choice, check_float, check_int
from kdmri_lib.distill import PREDATED, DistillConfig

__all__ = ["TrainConfig", "RECIPES", "FIELD_ROLES", "RESUME_IDENTITY", "OPERATIONAL", "same_computation",
           "TRAIN_MODES", "SCHEDULES", "check_resume"]

TRAIN_MODES = ("teacher", "student", "unet", "distill")
SCHEDULES = ("cosine", "step", "constant")
#: the training recipe of each model kind: what ``lr``, ``warmup_steps`` and ``batch_size`` are when a
#: run leaves them unset (None). Transformers need a warm-up and a lower learning rate (SwinIR trains
#: at 2e-4): at 1e-3 without warm-up the tiny Swin stays at the zero-filled level on whole slices.
#: Every training sample is a whole slice, hence the small batches.
RECIPES: dict[str, dict[str, Any]] = {
    "teacher": {"lr": 2e-4, "warmup_steps": 200, "batch_size": 2},
    "student": {"lr": 1e-3, "warmup_steps": 0, "batch_size": 2},
    "unet": {"lr": 1e-3, "warmup_steps": 100, "batch_size": 2},
}


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
        val_slices: cap on validation slices per epoch (:func:`kdmri_lib.engine.reconstruct.select_slices`).
        val_batch_size: slices per forward pass in validation.
        natural: mix natural images 1:1 from ``data_dir/natural/train`` when that folder exists.
        augment: warp every training slice at random (flip, rotation, scale, shift) before its
            acquisition is simulated (:mod:`kdmri_lib.datasets.augment`): more anatomical variety
            than the data hold.
        teacher_cache: distillation: memoise the teacher's frozen computations per training sample
            (:mod:`kdmri_lib.distill.teacher_cache`; exact; used for ``sr`` without natural images on one
            process, with a frozen teacher or ``distill.t_params="head"``).
        train_files, val_files: file-name patterns (``fnmatch``, e.g. ``["*_sagittal_*"]``) selecting
            the training / validation files; None = every file of the split.
        references: train on only this many slices *with* ground truth (whole volumes picked by
            :func:`kdmri_lib.datasets.protocol.split_references`); None = every selected slice.
        unlabelled: distill mode with ``references``: interleave the other volumes of the selected
            training files 1:1 as a measurement-only pool (no ground truth read; the teacher labels
            them, :mod:`kdmri_lib.datasets.protocol`).
        pool_split: with ``unlabelled``: the pool is this split's slices instead (e.g. ``"test"``:
            fastMRI's test split, under-sampled k-space as acquired, no ground truth;
            :func:`kdmri_lib.datasets.data.pool_dataset`). Not ``train`` or ``val``.
        rehearsal_files: distill mode with ``distill.t_rehearsal > 0``: file-name patterns of the
            teacher's own source-domain training files (with ground truth), which the correction
            rehearses (:mod:`kdmri_lib.engine.rehearsal`); None = the patterns the teacher's checkpoint
            records for its pre-training (the trainer fills them in).
        distill: :class:`~kdmri_lib.distill.DistillConfig` (a dict is converted).
        model_overrides: hyper-parameters of the trained model overriding its preset.
        resume: continue from ``out_dir/last.pt`` when it exists.
        epoch_limit: stop this call after this many epochs (resumable; None: run to ``epochs``).
        progress: tqdm progress bars (rank 0).
        verbose: one summary line per epoch (rank 0).
        log_every: write a ``steps.csv`` row every this many steps.
    """

    mode: str = field(default="student", metadata={"role": "identity"})
    data_dir: str = field(default="data/demo", metadata={"role": "result"})
    out_dir: str = field(default="runs/train", metadata={"role": "operational"})
    task: str = field(default="sr", metadata={"role": "identity"})
    factor: int = field(default=4, metadata={"role": "identity"})
    preset: str = field(default="tiny", metadata={"role": "identity"})
    teacher_preset: Optional[str] = field(default=None, metadata={"role": "identity"})
    teacher_checkpoint: Optional[str] = field(default=None, metadata={"role": "result"})
    epochs: int = field(default=10, metadata={"role": "result"})
    batch_size: Optional[int] = field(default=None, metadata={"role": "identity"})
    lr: Optional[float] = field(default=None, metadata={"role": "result"})
    weight_decay: float = field(default=1e-4, metadata={"role": "result"})
    schedule: str = field(default="cosine", metadata={"role": "result"})
    warmup_steps: Optional[int] = field(default=None, metadata={"role": "result"})
    grad_clip: Optional[float] = field(default=1.0, metadata={"role": "result"})
    amp: bool = field(default=True, metadata={"role": "result"})
    device: str = field(default="auto", metadata={"role": "operational"})
    seed: int = field(default=0, metadata={"role": "identity"})
    num_workers: int = field(default=0, metadata={"role": "operational"})
    steps_per_epoch: Optional[int] = field(default=None, metadata={"role": "result"})
    val_slices: Optional[int] = field(default=None, metadata={"role": "result"})
    val_batch_size: int = field(default=1, metadata={"role": "operational"})
    natural: bool = field(default=False, metadata={"role": "identity"})
    augment: bool = field(default=False, metadata={"role": "identity"})
    train_files: Optional[list] = field(default=None, metadata={"role": "identity"})
    val_files: Optional[list] = field(default=None, metadata={"role": "identity"})
    references: Optional[int] = field(default=None, metadata={"role": "identity"})
    unlabelled: bool = field(default=False, metadata={"role": "identity"})
    pool_split: Optional[str] = field(default=None, metadata={"role": "identity"})
    rehearsal_files: Optional[list] = field(default=None, metadata={"role": "identity"})
    teacher_cache: bool = field(default=True, metadata={"role": "result"})
    distill: DistillConfig = field(default_factory=DistillConfig, metadata={"role": "identity"})
    model_overrides: dict = field(default_factory=dict, metadata={"role": "identity"})
    resume: bool = field(default=False, metadata={"role": "operational"})
    epoch_limit: Optional[int] = field(default=None, metadata={"role": "operational"})
    progress: bool = field(default=True, metadata={"role": "operational"})
    verbose: bool = field(default=True, metadata={"role": "operational"})
    log_every: int = field(default=1, metadata={"role": "operational"})

    def validate(self, check_paths: bool = True) -> "TrainConfig":
        """Check every field; raise :class:`ConfigError` (or :class:`DataError` for the data folder)."""
        from kdmri_lib.models import PRESETS, check_task_factor
        from kdmri_lib.mri.physics import TASKS

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
        for name in ("amp", "natural", "augment", "resume", "progress", "verbose", "unlabelled", "teacher_cache"):
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
        from kdmri_lib.datasets.data import check_patterns

        for name in ("train_files", "val_files", "rehearsal_files"):
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
        self._check_pool_split()
        if isinstance(self.distill, Mapping):
            self.distill = DistillConfig.from_dict(self.distill)
        if not isinstance(self.distill, DistillConfig):
            raise ConfigError(f"distill must be a DistillConfig or a dict; got {type(self.distill).__name__}")
        self.distill.validate()
        self._check_rehearsal()
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
            from kdmri_lib.pretrained.index import card, zoo_name

            if check_paths and zoo_name(self.teacher_checkpoint):
                card(zoo_name(self.teacher_checkpoint))   # a known zoo entry (its file is verified when loaded)
            elif check_paths and not Path(self.teacher_checkpoint).is_file():
                raise ConfigError(f"teacher_checkpoint {self.teacher_checkpoint}: file not found (train a teacher first: "
                                  f"`python -m kdmri_lib.train teacher ...`)")
        if check_paths:
            from kdmri_lib.datasets.data import split_dir

            d = Path(self.data_dir)
            if not d.is_dir():
                raise DataError(f"{d}: data folder not found (run `make data` for the demo data, or see README 'Using real data')")
            for split in ("train", "val") + ((self.pool_split,) if self.pool_split else ()):
                split_dir(d, split)
        return self

    def _check_pool_split(self) -> None:
        if self.pool_split is None:
            return
        if not isinstance(self.pool_split, str) or not self.pool_split.strip():
            raise ConfigError(f"pool_split must be a split name such as 'test'; got {self.pool_split!r}")
        if self.pool_split in ("train", "val"):
            raise ConfigError(f"pool_split={self.pool_split!r}: the pool must come from another split (the "
                              f"training split's other volumes are the default pool; the validation split is "
                              f"scored, so its measurements never train a model)")
        if not self.unlabelled:
            raise ConfigError("pool_split needs unlabelled=True (a measurement-only pool the teacher labels)")

    def _check_rehearsal(self) -> None:
        if self.rehearsal_files and not (self.mode == "distill" and self.distill.correction and self.distill.t_rehearsal > 0):
            raise ConfigError("rehearsal_files is only used by teacher correction with distill.t_rehearsal > 0 "
                              f"(mode {self.mode!r}, correction {self.distill.correction}, "
                              f"t_rehearsal {self.distill.t_rehearsal}); leave it unset")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["distill"] = self.distill.to_dict() if isinstance(self.distill, DistillConfig) else dict(self.distill)
        for k in ("data_dir", "out_dir", "teacher_checkpoint"):
            if d[k] is not None:
                d[k] = str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        from kdmri_lib.datasets.data import reject_patch_size

        known = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "patch_size" in d:  # configurations written before training moved to whole slices
            reject_patch_size(d.pop("patch_size"), "training option patch_size")
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        d = _with_defaults(d)
        if "distill" in d and isinstance(d["distill"], Mapping):
            d["distill"] = DistillConfig.from_dict(d["distill"])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def model_kind(self) -> str:
        return "student" if self.mode == "distill" else self.mode



#: every field's role (its ``metadata["role"]``), the one place that says what makes two runs the same:
#: ``"identity"`` — must agree for a run to resume from a checkpoint (the distillation config only in
#: distill mode); ``"result"`` — changes what a run computes but may change on resume (a longer
#: schedule, another data folder holding the same files); ``"operational"`` — where and how it runs,
#: never what it computes.
FIELD_ROLES: dict[str, str] = {f.name: f.metadata["role"] for f in dataclasses.fields(TrainConfig)}
#: fields that must agree between a run and the checkpoint it resumes from
RESUME_IDENTITY: tuple[str, ...] = tuple(k for k, r in FIELD_ROLES.items() if r == "identity")
#: fields that do not change what a finished run computed (the ablation's reuse of a finished run
#: compares every other field)
OPERATIONAL: tuple[str, ...] = tuple(k for k, r in FIELD_ROLES.items() if r == "operational")


def _with_defaults(d: Mapping[str, Any]) -> dict:
    """A stored configuration with the distillation fields it predates filled in with the values that
    compute what it computed (:data:`kdmri_lib.distill.PREDATED`)."""
    d = dict(d)
    if isinstance(d.get("distill"), Mapping):
        d["distill"] = {**PREDATED, **d["distill"]}
    return d


def same_computation(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two run configurations (``to_dict()`` form) compute the same thing: every
    non-operational field agrees (the distillation settings only in distill mode; fields that one of
    them predates count at the values they had, :data:`kdmri_lib.distill.PREDATED`)."""
    a, b = _with_defaults(a), _with_defaults(b)
    keys = (set(a) | set(b)) - set(OPERATIONAL)
    if a.get("mode") != "distill" and b.get("mode") != "distill":   # a model trained alone ignores them
        keys -= {"distill"}
    return all(a.get(k) == b.get(k) for k in keys)


def check_resume(ckpt: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``cfg`` may resume from checkpoint ``ckpt`` (read from ``path``):
    the :data:`~kdmri_lib.engine.run_config.RESUME_IDENTITY` fields, the distillation config and the number
    of processes must agree."""
    old = _with_defaults(ckpt.get("train_config") or {})
    new = _with_defaults(cfg.to_dict())
    diff = [k for k in RESUME_IDENTITY if k in old and old[k] != new[k] and (k != "distill" or cfg.mode == "distill")]
    if diff:
        detail = "; ".join(f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path}: cannot resume: this run's settings differ from the checkpoint's ({detail}). "
                              f"Use another out_dir, or the same settings.")
    if ckpt.get("world_size", 1) != D.world_size():
        raise CheckpointError(f"{path}: written by a run with {ckpt.get('world_size')} process(es), resumed with "
                              f"{D.world_size()}; resume with the same number of processes (the data order depends on it)")
