"""The state and the result of distillation: :class:`DistillState` (running averages of dynamic
weighting and balance, the step count; saved in checkpoints) and :class:`LossBreakdown` (one
batch's terms, weights and maps, as :func:`kdmri_lib.distill.distill_losses` returns them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from kdmri_lib.distill import losses as L

__all__ = ["DistillState", "LossBreakdown"]


class DistillState:
    """Running state of distillation: error EMAs (dynamic weighting) and the step count (warm-up).

    ``state_dict()`` is plain data (floats / ints / None) for checkpoints.
    """

    def __init__(self, ema_decay: float = 0.9, floor: float = 0.0):
        self.decay = ema_decay
        self.floor = float(floor)
        self.student_error = L.EMA(ema_decay)
        self.teacher_error = L.EMA(ema_decay)
        self.magnitudes: dict[str, L.EMA] = {}
        self.grad_factors: dict[str, float] = {}   # balance="gradnorm": weight factor of each term
        self.steps = 0

    def track(self, name: str, value: float) -> float:
        """Update the running magnitude of loss term ``name``; return it."""
        ema = self.magnitudes.setdefault(name, L.EMA(self.decay))
        return ema.update(abs(float(value)))

    def update(self, e_student: float, e_teacher: float) -> float:
        """Push one batch's mean absolute errors; return the dynamic factor ``lambda``."""
        es = self.student_error.update(e_student)
        et = self.teacher_error.update(e_teacher)
        return L.dynamic_weight(es, et, floor=self.floor)

    @property
    def factor(self) -> float:
        """``lambda`` from the current EMAs (1.0 before any update)."""
        if self.student_error.value is None or self.teacher_error.value is None:
            return 1.0
        return L.dynamic_weight(self.student_error.value, self.teacher_error.value, floor=self.floor)

    def state_dict(self) -> dict:
        return {"student_error": self.student_error.state_dict(), "teacher_error": self.teacher_error.state_dict(),
                "magnitudes": {k: v.state_dict() for k, v in sorted(self.magnitudes.items())}, "steps": int(self.steps),
                "grad_factors": {k: float(v) for k, v in sorted(self.grad_factors.items())}, "floor": self.floor}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        self.student_error.load_state_dict(dict(d["student_error"]))
        self.teacher_error.load_state_dict(dict(d["teacher_error"]))
        self.magnitudes = {}
        for k, v in dict(d.get("magnitudes", {})).items():
            self.magnitudes[k] = L.EMA(self.decay)
            self.magnitudes[k].load_state_dict(dict(v))
        self.steps = int(d.get("steps", 0))
        self.grad_factors = {k: float(v) for k, v in dict(d.get("grad_factors", {})).items()}
        self.floor = float(d.get("floor", self.floor))


@dataclass
class LossBreakdown:
    """One batch's distillation losses.

    Attributes:
        total: the student's loss (scalar tensor with graph; backward it for the student).
        terms: unweighted terms ``rec, edge, kd, feat, att`` (with graph where enabled) and the
            released ``kl`` (always exactly 0), scalar tensors.
        weights: effective weight of each student term in ``total`` (incl. the dynamic factor and
            the warm-up ramp; 0 for a switched-off term).
        maps: detached ``(B, 1, H, W)`` maps: ``confidence`` (w), ``student``, ``teacher``,
            ``student_error`` ``|S - x|``, ``teacher_error`` ``|T - x|``.
        teacher_total: the teacher-correction loss (graph to the teacher when ``teacher_grad``),
            or None without correction.
        teacher_terms: ``rec``, ``edge``, ``feedback``, ``wrong_fraction`` of the teacher and the
            effective feedback weight ``w_feedback`` (floats).
        dynamic: the dynamic factor ``lambda`` used (1.0 without dynamic weighting).
        warmup: the warm-up ramp factor used (1.0 after warm-up).
        student_error, teacher_error: batch mean absolute errors.
    """

    total: torch.Tensor
    terms: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    teacher_total: Optional[torch.Tensor] = None
    teacher_terms: dict = field(default_factory=dict)
    dynamic: float = 1.0
    warmup: float = 1.0
    student_error: float = 0.0
    teacher_error: float = 0.0

    def log_dict(self) -> dict[str, float]:
        """Flat floats for the step log: ``loss``, each term, ``w_<term>``, ``dynamic``, ... ``t_*``."""
        d: dict[str, float] = {"loss": float(self.total.detach())}
        for k, v in self.terms.items():
            d[k] = float(v.detach())
        for k, v in self.weights.items():
            d[f"w_{k}"] = float(v)
        d["dynamic"] = float(self.dynamic)
        d["warmup"] = float(self.warmup)
        d["confidence_mean"] = float(self.maps["confidence"].float().mean()) if "confidence" in self.maps else 1.0
        d["e_student"] = float(self.student_error)
        d["e_teacher"] = float(self.teacher_error)
        if self.teacher_total is not None:
            d["t_loss"] = float(self.teacher_total.detach())
            for k, v in self.teacher_terms.items():
                d[f"t_{k}"] = float(v)
        return d
