"""Rehearsal for teacher correction: each correction step also fits a batch of the teacher's own
source-domain slices.

Why: the protocol's target references can be of one contrast only (the demo's are two T1w volumes).
Correcting the teacher on them alone trades the other contrast for that one about one for one
(measured, head at lr 1e-3, 100 steps: T1w +0.17 dB, T2w -0.56 dB on the target validation
volumes); rehearsing the source domain it was pre-trained on, which holds both contrasts, keeps
what the references cannot show (same run with rehearsal weight 1: +0.19 / -0.09 dB;
``python -m kdmri_lib.pilots correction --rehearsal 1``). The source domain's ground truth is the
teacher's own pre-training data, so rehearsal reads no ground truth of the target's
measurement-only pool or of a scored slice (``tests/datasets/test_protocol.py``).

Which files: ``TrainConfig.rehearsal_files``, or else the patterns the teacher's checkpoint records
for its pre-training (``train_config.train_files``; a teacher that records none, i.e. trained on
every file, rehearses nothing and the run says so). With a measurement-only pool of the training
split the rehearsed files must not overlap the run's own training files (:func:`setup_rehearsal`
refuses); a pool of another split (``pool_split``) cannot be among them.

The batch of correction step ``k`` is drawn from a generator seeded by ``(seed, k)``, so it does not
depend on what ran before: a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from kdmri_lib.core import device as D
from kdmri_lib.core.device import autocast
from kdmri_lib.core.errors import ConfigError, DataError

__all__ = ["SourceRehearsal", "setup_rehearsal"]


class SourceRehearsal:
    """``weight`` x the L1 loss of the teacher on ``batch_size`` source-domain slices.

    Args:
        dataset: the source-domain training slices (each item a sample dict with ``y``,
            ``target``; :func:`kdmri_lib.engine.trainer.training_dataset` of ``rehearsal_files``).
        weight: the loss weight (``DistillConfig.t_rehearsal``).
        batch_size: slices per correction step.
        seed: the run's seed.
        task, factor: the acquisition (builds each batch's operator).
        patterns: the file-name patterns, for messages.
    """

    def __init__(self, dataset, weight: float, batch_size: int, seed: int, task: str, factor: int,
                 patterns: Sequence[str] = ()):
        if len(dataset) == 0:
            raise DataError(f"rehearsal_files {list(patterns)}: no training slice matches; give the patterns of the "
                            f"teacher's source-domain files (e.g. '*_axial_*,*_coronal_*')")
        self.dataset, self.weight, self.batch_size = dataset, float(weight), int(batch_size)
        self.seed, self.task, self.factor = int(seed), task, factor

    def indices(self, step: int) -> list[int]:
        """The dataset indices of correction step ``step`` (a function of the seed and the step only)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        return torch.randint(len(self.dataset), (self.batch_size,), generator=g).tolist()

    def loss(self, teacher: nn.Module, step: int, device: torch.device, amp: bool = False) -> torch.Tensor:
        """``weight * mean |teacher(y) - target|`` on the batch of ``step``; graph to the teacher."""
        from kdmri_lib.datasets.data import batch_operator, collate, to_device

        batch = to_device(collate([self.dataset[i] for i in self.indices(step)]), device)
        op = batch_operator(batch, self.task, self.factor)
        with autocast(device, amp):
            out = teacher(batch["y"], op)
        return self.weight * (out.float() - batch["target"].float()).abs().mean()


def setup_rehearsal(cfg, teacher_record: Optional[Mapping[str, Any]], verbose: bool = True):
    """``(cfg, rehearsal)`` for a correcting distillation run with ``distill.t_rehearsal > 0``: the
    run's configuration with the rehearsed patterns filled in (so ``config.json`` and the checkpoint
    record them) and the :class:`SourceRehearsal`, or ``(cfg, None)`` when the teacher records no
    pre-training patterns and none are given.

    Under DDP it is off (with a note), or a :class:`ConfigError` when ``rehearsal_files`` were given.

    Raises:
        ConfigError: ``rehearsal_files`` under DDP; or, with a measurement-only pool, rehearsed files that are also
            training files of the run (their ground truth would reach the teacher).
        DataError: a pattern that matches no training file.
    """
    from kdmri_lib.datasets.data import build_dataset
    from kdmri_lib.datasets.data_files import list_h5, select_files, split_dir

    given = cfg.rehearsal_files
    patterns = list(given or ((teacher_record or {}).get("train_config") or {}).get("train_files") or [])
    if not patterns:
        if verbose:
            print(f"[train] rehearsal off: the teacher {cfg.teacher_checkpoint} records no pre-training file patterns "
                  f"(it trained on every file); give rehearsal_files (--rehearsal-files) to rehearse", flush=True)
        return cfg, None
    if D.is_distributed():   # a second forward of the DDP-wrapped teacher before one backward is not supported
        if given:
            raise ConfigError("rehearsal_files under torchrun: rehearsal runs on one process only (DDP does not "
                              "support a second teacher forward before one backward); drop --rehearsal-files or "
                              "set --t-rehearsal 0")
        if verbose:
            print("[train] rehearsal off under torchrun (one process only); the correction uses the references",
                  flush=True)
        return cfg, None
    names = [f.name for f in list_h5(split_dir(cfg.data_dir, "train"))]
    source = select_files(names, patterns, "rehearsal_files" if given else "the teacher's pre-training files")
    if cfg.unlabelled and cfg.pool_split is None:   # (a pool of another split cannot be among them)
        own = select_files(names, cfg.train_files) if cfg.train_files else set(names)
        if source & own:
            raise ConfigError(f"rehearsal_files {patterns} match training files of this run "
                              f"({', '.join(sorted(source & own)[:3])}, ...): with a measurement-only pool the teacher "
                              f"may rehearse only its source domain, never the target's ground truth")
    dataset = build_dataset(cfg.data_dir, "train", cfg.task, cfg.factor, include=patterns)
    rehearsal = SourceRehearsal(dataset, cfg.distill.t_rehearsal, cfg.batch_size, cfg.seed, cfg.task, cfg.factor,
                                patterns)
    return cfg.replace(rehearsal_files=patterns), rehearsal
