"""What a training run is and returns: :class:`TrainState` (saved in every checkpoint besides the
weights, optimisers and RNG states), :class:`TrainResult` (what :func:`kdmri_lib.engine.train.fit`
returns) and the two ways a run stops early (:class:`TrainingDiverged`, :class:`TrainingInterrupted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from torch import nn

from kdmri_lib.core.errors import KdmriError

if TYPE_CHECKING:
    from kdmri_lib.engine.run_config import TrainConfig

__all__ = ["TrainState", "TrainResult", "TrainingDiverged", "TrainingInterrupted"]


class TrainingDiverged(KdmriError):
    """The loss (or gradient norm) became NaN / Inf; training stopped before the bad update."""


class TrainingInterrupted(KdmriError):
    """Training stopped at a step boundary after SIGINT / SIGTERM; an interrupt checkpoint was written."""

    def __init__(self, message: str, epoch: int = 0, step: int = 0, checkpoint: Optional[str] = None):
        super().__init__(message)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint


@dataclass
class TrainResult:
    """What :func:`kdmri_lib.engine.train.fit` returns.

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


@dataclass
class TrainState:
    """Where a run is: ``epoch`` finished epochs, ``step`` steps done in the current epoch (non-zero
    only in an interrupt checkpoint), ``global_step`` optimiser steps in all, ``history`` one row per
    epoch, ``best`` (``{"epoch", "val_PSNR"}`` of the best validation so far)."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list = field(default_factory=list)
    best: Optional[dict] = None

    def to_checkpoint(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step, "history": self.history,
                "best": self.best}

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> "TrainState":
        return cls(epoch=int(ckpt["epoch"]), step=int(ckpt.get("step", 0)), global_step=int(ckpt["global_step"]),
                   history=list(ckpt.get("history", [])), best=ckpt.get("best"))
