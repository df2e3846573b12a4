r"""Corrective heterogeneous distillation: configuration, state and one batch's losses.

One function computes every term of one batch, for the training loop *and* for the notebook's
interactive loss widget::

    cfg = DistillConfig()                                   # the full method
    adapters = Adapters.for_models(student, teacher)
    lb = distill_losses(student, teacher, adapters, batch["y"], op, batch["target"], cfg)
    lb.total.backward()                                     # the student's loss
    lb.terms["kd"], lb.weights["kd"], lb.maps["confidence"]

The student's loss (notation of :mod:`kdmri_lib.losses`; ``lambda`` the dynamic factor; ``R`` the
samples with a ground truth, ``P`` the measurement-only samples of a protocol batch,
:mod:`kdmri_lib.protocol`; without ``labelled`` every sample is in ``R``)::

    L_S = w_rec * L1_R(S, x) + w_edge * edge_R(S, x)
        + lambda * ( w_kd * mean_K(w ⊙ rho(S - T~)) + w_feat * feat(adapt(F_S), F_T) + w_att * AT(F_S, F_T) )

``K`` is every sample (``kd_on="all"``, the paper) or ``P`` only (``kd_on="unlabelled"``: where
there is a truth it teaches, where there is none the teacher does; no pixel gets both, so the
L1 + L1 dead zone cannot occur); ``T~`` is the teacher's output, or with ``teacher_tta`` the mean
of its predictions on flipped copies of the measurement (:func:`teacher_tta`); ``rho`` is L1 or
Huber (``kd_loss``); ``w`` the confidence: ``"none"``, the paper's ground-truth ``"hard"`` /
``"soft"`` maps (on ``R`` only), or ``"uncertainty"`` from the spread of the augmented
predictions (no ground truth needed).

With ``correction``, the teacher's own loss (it keeps learning while it teaches, with its own
optimiser): :func:`kdmri_lib.losses.teacher_correction_loss` on ``R`` (its reconstruction loss
weighted ``1 + t_error_focus`` where the student beats it, ``t_edge_weight`` x edge loss),
``t_feedback_weight`` x the feedback term that pulls its token maps towards the student's
adapted features, and ``t_anchor`` x the L2-SP distance to its pre-trained weights. Gradients
never cross: the student's terms see the teacher detached, the teacher's terms see the student
detached, so one ``backward()`` of ``L_S + L_T`` gives each model its own gradient.

Switches (each piece can be turned off; :data:`ABLATION_ROWS` lists the ablation's configs, the
defaults of :class:`DistillConfig` are its ``full`` row).

Dynamic weighting: ``lambda = dynamic_weight(EMA(e_S), EMA(e_T), floor)`` with ``e = mean|. - x|``
on the references of each batch and :attr:`DistillConfig.ema_decay`; see
:func:`kdmri_lib.losses.dynamic_weight`. The EMA lives in a :class:`DistillState`, saved in
checkpoints. Without dynamic weighting ``lambda = 1``.

Balance (``balance``): ``"magnitude"`` weighs the feature and attention terms (and the teacher's
feedback term) as fractions of the running L1 loss, ``w * EMA(L1) / EMA(term)``. Measured on the
protocol (output KD on the pool + feature terms, demo data, 600 steps): as the attention term
converged (0.35 -> 0.017) its effective weight rose 20x (0.013 -> 0.28), and the student never left
the zero-filled level (21.01 vs 20.99 dB on its references, 20.47 vs 20.49 on the scored slices).
``"gradnorm"``
instead rescales each distillation term every ``gradnorm_every`` steps so that its gradient norm
(w.r.t. the student) is ``w_k`` times the reconstruction term's.

Distillation warm-up (``kd_warmup_steps``): the distillation weights ramp linearly from 0 to their
value over the first steps of training (the state counts the steps), so that a fresh student first
learns the reconstruction task from the ground truth.

Terms that are switched off are still computed for the log when they are cheap (under
``torch.no_grad()``, weight 0), so that every run logs the same columns; the released code's
one-channel KL term is always logged: it is exactly 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import nn

from . import losses as L
from .errors import ConfigError, check_choice, check_float, check_int
from .models.adapters import Adapters
from .teacher_cache import TeacherCache

__all__ = ["DistillConfig", "DistillState", "LossBreakdown", "distill_losses", "ABLATION_ROWS", "ABLATION_PIECES",
           "Adapters", "gradient_norms", "teacher_tta", "unwrap"]

CONFIDENCE_MODES = ("none", "hard", "soft", "uncertainty")
BALANCE_MODES = ("none", "magnitude", "gradnorm")
KD_ON = ("all", "unlabelled")
#: what teacher correction updates (DistillConfig.t_params)
T_PARAMS = ("head", "all")
#: student loss terms (keys of ``LossBreakdown.terms`` / ``weights``) in log order
STUDENT_TERMS = ("rec", "edge", "kd", "feat", "att")


@dataclass
class DistillConfig:
    """Switches and weights of corrective distillation (the defaults are the full method).

    Attributes:
        output_kd: output distillation ``w ⊙ |S - T|``.
        feature_kd: feature distillation through :class:`~kdmri_lib.models.adapters.Adapters`.
        attention_kd: spatial attention-map transfer (raw student maps vs teacher token maps).
        edge: Sobel edge loss of the student against the ground truth.
        confidence: per-pixel teacher confidence ``w``: ``"none"`` (w = 1), ``"hard"``, ``"soft"``.
        correction: the teacher keeps learning while teaching (its own optimiser, ``teacher_lr``);
            ``False`` = frozen teacher (``eval()``, no gradient, never changes).
        dynamic: scale the distillation terms by the error-ratio factor ``lambda``.
        w_rec, w_edge, w_kd, w_feat, w_att: term weights (``>= 0``).
        teacher_lr: learning rate of the teacher's AdamW in correction mode; ``None`` = 0.1 x the
            student's learning rate.
        t_edge_weight, t_error_focus, t_feedback_weight: the teacher-correction loss's
            hyper-parameters (:func:`kdmri_lib.losses.teacher_correction_loss`); the feedback term
            needs ``feature_kd`` (it uses the trained adapters) and is 0 without it. ``t_error_focus``
            (extra weight on the pixels where the student beats the teacher) is 0 by default: with
            an under-trained student those pixels are mostly noise, and ``t_error_focus = 1``
            lowered the corrected teacher's validation PSNR by 0.05 dB in 100 steps on the demo
            data, where plain continued training (0) raised it by 0.01 dB.
        ema_decay: decay of the running averages (errors of dynamic weighting, term magnitudes of
            ``balance``), in [0, 1).
        kd_warmup_steps: linear ramp of the distillation weights over the first steps (0 = none).
        balance: ``"none"``; ``"magnitude"`` (``True``): the feature-type terms' weights are
            fractions of the running L1 loss (module docstring); ``"gradnorm"``: every
            ``gradnorm_every`` steps the gradient norm of each distillation term (w.r.t. the
            student) is measured, and its weight rescaled so that ``w_k`` is the fraction of the
            reconstruction term's gradient norm it contributes (loss sizes are not gradient sizes:
            measured 0.0146 rec / 0.0274 kd / 0.0098 att / 0.0018 feat at equal loss weights).
        kd_on: where output distillation applies: ``"all"`` samples (the paper; on a sample with a
            ground truth, L1 + L1 has a dead zone where the student lies between the truth and the
            teacher) or ``"unlabelled"`` (only the measurement-only pool: the truth teaches where
            there is one, the teacher where there is none — no pixel gets both).
        teacher_tta: the teacher's label is the mean of its predictions under flips
            (:func:`teacher_tta`); their spread feeds ``confidence="uncertainty"``.
        dynamic_floor: lower bound of ``lambda`` (0 = the paper's rule, which dies).
        t_anchor: correction: L2-SP weight keeping the teacher near its pre-trained weights
            (:func:`kdmri_lib.losses.anchor_penalty`); 0 = none.
        gradnorm_every: steps between gradient-norm measurements of ``balance="gradnorm"``.
        kd_loss, kd_delta: the output-distillation penalty, ``"l1"`` or ``"huber"`` with
            threshold ``kd_delta`` (:func:`kdmri_lib.losses.output_distillation`).
        t_params: what the correction updates: ``"head"`` (the teacher's reconstruction head,
            :meth:`SwinTeacher.head_parameters`; the body that carries the source domain's knowledge
            stays frozen, so 12 references cannot over-fit it, and a memoised body makes the corrected
            teacher cheap, :mod:`kdmri_lib.teacher_cache`) or ``"all"`` (every parameter).
        relabel_every: head correction with a memoised teacher: teacher steps after which the
            pool's augmented labels are recomputed with the corrected head.
        t_every: the teacher takes a correction step every ``t_every`` student steps (1 = every step).

    ``confidence="uncertainty"`` weights the teacher by its own test-time-augmentation agreement
    (:func:`kdmri_lib.losses.uncertainty_weights`), which — unlike ``"hard"`` / ``"soft"`` — needs no
    ground truth and so carries information the truth does not have (and works on the pool).
    """

    output_kd: bool = True
    feature_kd: bool = False
    attention_kd: bool = False
    edge: bool = False
    confidence: str = "uncertainty"
    correction: bool = True
    dynamic: bool = True
    w_rec: float = 1.0
    w_edge: float = 0.1
    w_kd: float = 1.0
    w_feat: float = 0.1
    w_att: float = 0.1
    teacher_lr: Optional[float] = None
    t_edge_weight: float = 0.1
    t_error_focus: float = 0.0
    t_feedback_weight: float = 0.05
    ema_decay: float = 0.9
    kd_warmup_steps: int = 0
    balance: Any = "gradnorm"
    kd_on: str = "unlabelled"
    teacher_tta: bool = True
    dynamic_floor: float = 0.5
    t_anchor: float = 1.0
    gradnorm_every: int = 20
    kd_loss: str = "l1"
    kd_delta: float = 0.02
    t_params: str = "head"
    relabel_every: int = 50
    t_every: int = 4

    def __post_init__(self):
        self.validate()

    def validate(self) -> "DistillConfig":
        if isinstance(self.balance, bool):   # configurations written before "gradnorm" existed
            self.balance = "magnitude" if self.balance else "none"
        check_choice("distill.balance", self.balance, BALANCE_MODES)
        for name in ("output_kd", "feature_kd", "attention_kd", "edge", "correction", "dynamic", "teacher_tta"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"distill.{name} must be True or False; got {getattr(self, name)!r}")
        check_choice("distill.confidence", self.confidence, CONFIDENCE_MODES)
        check_choice("distill.kd_on", self.kd_on, KD_ON)
        if self.confidence == "uncertainty" and not self.teacher_tta:
            raise ConfigError("distill.confidence='uncertainty' needs teacher_tta=True (the spread of the teacher's "
                              "augmented predictions is its uncertainty)")
        self.dynamic_floor = check_float("distill.dynamic_floor", self.dynamic_floor, minimum=0.0)
        if self.dynamic_floor > 1.0:
            raise ConfigError(f"distill.dynamic_floor must be in [0, 1]; got {self.dynamic_floor}")
        self.t_anchor = check_float("distill.t_anchor", self.t_anchor, minimum=0.0)
        self.gradnorm_every = check_int("distill.gradnorm_every", self.gradnorm_every, minimum=1)
        check_choice("distill.kd_loss", self.kd_loss, ("l1", "huber"))
        check_choice("distill.t_params", self.t_params, T_PARAMS)
        self.relabel_every = check_int("distill.relabel_every", self.relabel_every, minimum=1)
        self.t_every = check_int("distill.t_every", self.t_every, minimum=1)
        self.kd_delta = check_float("distill.kd_delta", self.kd_delta, minimum=0.0, strict_min=True)
        for name in ("w_rec", "w_edge", "w_kd", "w_feat", "w_att", "t_edge_weight", "t_error_focus", "t_feedback_weight"):
            setattr(self, name, check_float(f"distill.{name}", getattr(self, name), minimum=0.0))
        if self.teacher_lr is not None:
            self.teacher_lr = check_float("distill.teacher_lr", self.teacher_lr, minimum=0.0, strict_min=True)
        self.ema_decay = check_float("distill.ema_decay", self.ema_decay, minimum=0.0)
        if self.ema_decay >= 1.0:
            raise ConfigError(f"distill.ema_decay must be < 1; got {self.ema_decay}")
        self.kd_warmup_steps = check_int("distill.kd_warmup_steps", self.kd_warmup_steps, minimum=0)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DistillConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown distill option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**dict(d))

    @classmethod
    def preset(cls, name: str, **overrides) -> "DistillConfig":
        """The config of an ablation row (:data:`ABLATION_ROWS`), e.g. ``"kd_vanilla"``, ``"full"``."""
        rows = {**ABLATION_ROWS, **CANDIDATE_ROWS}
        check_choice("distill preset", name, tuple(rows))
        return cls(**{**rows[name], **overrides})


#: one line of help per :class:`DistillConfig` field: the command line's distillation flags are
#: generated from the dataclass and this table (``python -m kdmri_lib.train --help``)
FIELD_HELP: dict[str, str] = {
    "output_kd": "output distillation w*rho(S - T)",
    "feature_kd": "feature distillation through adapters (CNN features -> ViT token maps)",
    "attention_kd": "spatial attention-map transfer",
    "edge": "Sobel edge loss of the student against the ground truth",
    "confidence": "per-pixel teacher confidence w",
    "correction": "teacher correction: the teacher keeps learning while it teaches (else frozen)",
    "dynamic": "scale the distillation terms by the student/teacher error-ratio factor lambda",
    "w_rec": "weight of the student's L1 loss",
    "w_edge": "weight of the student's edge loss",
    "w_kd": "weight of output distillation",
    "w_feat": "weight of feature distillation",
    "w_att": "weight of attention transfer",
    "teacher_lr": "teacher learning rate in correction mode (None: 0.1 x the student's)",
    "t_edge_weight": "teacher correction: edge-loss weight",
    "t_error_focus": "teacher correction: extra weight where the student beats the teacher",
    "t_feedback_weight": "teacher correction: weight of the student-feedback term (needs feature KD)",
    "ema_decay": "decay of the running averages (dynamic weighting, balance)",
    "kd_warmup_steps": "linear ramp of the distillation weights over N steps",
    "balance": "weights of the distillation terms: none, loss magnitude, or gradient norm",
    "kd_on": "output distillation on every sample (all) or on the measurement-only pool (unlabelled)",
    "teacher_tta": "the teacher's label is the mean of its predictions on flipped measurements",
    "dynamic_floor": "lower bound of the dynamic factor lambda, in [0, 1]",
    "t_anchor": "teacher correction: L2-SP weight towards the pre-trained weights",
    "gradnorm_every": "steps between gradient-norm measurements (balance=gradnorm)",
    "kd_loss": "output-distillation penalty rho",
    "kd_delta": "Huber threshold of kd_loss=huber",
    "t_params": "what the correction updates: the teacher's head or all its parameters",
    "relabel_every": "head correction: teacher steps between relabellings of the pool",
    "t_every": "the teacher takes a correction step every N student steps",
}
#: the choices of the string-valued fields
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "confidence": CONFIDENCE_MODES, "balance": BALANCE_MODES, "kd_on": KD_ON, "kd_loss": ("l1", "huber"),
    "t_params": T_PARAMS,
}


_VANILLA = dict(output_kd=True, feature_kd=True, attention_kd=True, edge=False, confidence="none",
                correction=False, dynamic=False, balance="magnitude", kd_on="all", teacher_tta=False,
                dynamic_floor=0.0, t_anchor=0.0, t_params="all", t_every=1, relabel_every=100)
_POOL = {**_VANILLA, "kd_on": "unlabelled"}
_OUTPUT = {**_POOL, "feature_kd": False, "attention_kd": False, "balance": "none"}
_UNCERTAINTY = {**_OUTPUT, "teacher_tta": True, "confidence": "uncertainty"}
_DYNAMIC = {**_UNCERTAINTY, "dynamic": True, "dynamic_floor": 0.5, "balance": "gradnorm"}
#: the distillation rows of the ablation, cumulative: vanilla KD (frozen teacher, L1 output
#: distillation on every sample + adapters and attention maps, magnitude balance); + output-space
#: transfer on the measurement-only pool only (no L1 + L1 dead zone; no adapters / attention maps, as
#: OFA-KD argues for CNN <- ViT); + the teacher's test-time-augmented label with its uncertainty as
#: confidence; + dynamic weighting with a floor and gradient-norm balance; + the regularised teacher
#: correction (head only, L2-SP anchored, relabelling the pool) = the full method, the
#: :class:`DistillConfig` defaults. (``kd_pool``, the pool without the output-space step, is a
#: candidate row: it measured within 0.02 dB of ``kd_vanilla`` in the pilots and the earlier ablation.)
ABLATION_ROWS: dict[str, dict] = {
    "kd_vanilla": dict(_VANILLA),
    "kd_output": dict(_OUTPUT),
    "kd_uncertainty": dict(_UNCERTAINTY),
    "kd_dynamic": dict(_DYNAMIC),
    "full": {**_DYNAMIC, "correction": True, "t_anchor": 1.0, "t_params": "head", "t_every": 4,
             "relabel_every": 50},
}
#: what each row adds to the one before it (the fields it changes)
ABLATION_PIECES: dict[str, tuple[str, ...]] = {
    "kd_output": ("kd_on", "feature_kd", "attention_kd", "balance"),
    "kd_uncertainty": ("teacher_tta", "confidence"), "kd_dynamic": ("dynamic", "dynamic_floor", "balance"),
    "full": ("correction", "t_anchor", "t_params", "t_every", "relabel_every"),
}
#: rows measured in pilots that are not in the ablation's ladder; ``DistillConfig.preset`` accepts
#: these names too: vanilla KD at fixed weights, vanilla KD on the pool only, and the correction of
#: every teacher parameter
#: (no memoised body: about 6x the cost of a head correction on a CPU).
CANDIDATE_ROWS: dict[str, dict] = {
    "kd_vanilla_fixed": {**_VANILLA, "balance": "none"},
    "kd_pool": dict(_POOL),
    "full_all": {**_DYNAMIC, "correction": True, "t_anchor": 1.0},
}
#: the paper's pieces as it states them (edge loss, GT-based confidence, correction, dynamic
#: weighting without a floor), for comparison with the rows above
PAPER_METHOD = {**_VANILLA, "edge": True, "confidence": "soft", "correction": True, "dynamic": True}


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


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return getattr(module, "module", module)


def _amp_ctx(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    from .device import autocast

    return autocast(device, True)


def teacher_tta(teacher: nn.Module, y: torch.Tensor, op, first: Optional[torch.Tensor] = None,
                amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's prediction under test-time augmentation, and its spread (no gradient).

    Flips of the image are measured again with the same operator, ``y_f = A flip(A^H y)``,
    reconstructed, and flipped back: ``sr``: flips along both axes and both together (the
    low-resolution block is symmetric up to one line); ``cs``: along the fully-sampled rows only (a
    column flip would move the measured columns). ``first``: the un-augmented prediction when it is
    already computed. Returns ``(mean, std)``, each ``(B, 1, H, W)`` float32.
    """
    flips = ((-2,), (-1,), (-2, -1)) if getattr(op, "task", "sr") == "sr" or not hasattr(op, "mask") else ((-2,),)
    with torch.no_grad(), _amp_ctx(y.device, amp):
        preds = [first.detach().float() if first is not None else teacher(y, op).float()]
        x0 = op.adjoint(y)
        for dims in flips:
            yf = op.forward(torch.flip(x0, dims))
            preds.append(torch.flip(teacher(yf, op).float(), dims))
    p = torch.stack(preds)
    return p.mean(0), p.std(0, unbiased=False)


def _select(t: torch.Tensor, idx: Optional[torch.Tensor]) -> torch.Tensor:
    return t if idx is None else t[idx]


def distill_losses(student: nn.Module, teacher: nn.Module, adapters: Optional[nn.Module], y: torch.Tensor, op,
                   target: torch.Tensor, cfg: Optional[DistillConfig] = None, state: Optional[DistillState] = None,
                   teacher_grad: bool = False, amp: bool = False, labelled: Optional[torch.Tensor] = None,
                   teacher_anchor: Optional[list] = None) -> LossBreakdown:
    """Every distillation term of one batch (see the module docstring).

    Args:
        student: the CNN student (or its DDP wrapper): ``student(y, op, return_features=True)``.
        teacher: the ViT teacher (or its DDP wrapper).
        adapters: :class:`Adapters` (or DDP wrapper) from the student's maps to the teacher's;
            may be None when ``feature_kd`` is off.
        y, op, target: measurement ``(B, 1, h, w)`` complex, its operator, ground truth
            ``(B, 1, H, W)`` float32 (normalised as the datasets yield them).
        cfg: the switches and weights (default: the full method).
        state: running :class:`DistillState` (EMA of the errors, step count); updated in place. None:
            a fresh one (the dynamic factor then comes from this batch alone; no warm-up ramp).
        teacher_grad: run the teacher with gradients and return ``teacher_total`` with its graph
            (the training loop in correction mode). False: teacher under ``torch.no_grad()``.
        amp: run the forward passes under the device's autocast (CUDA bf16/fp16).
        labelled: ``(B,)`` 1 for a sample with ground truth, 0 for a measurement-only sample
            (whose ``target`` is never used: every ground-truth term, the errors of the dynamic
            weight, the GT-based confidence and the teacher's correction see labelled samples
            only). None: every sample is labelled.
        teacher_anchor: correction with ``t_anchor > 0``: the teacher's pre-trained parameters.

    Returns:
        a :class:`LossBreakdown`. Works with gradients on or under ``torch.no_grad()``.
    """
    cfg = cfg or DistillConfig()
    fresh_state = state is None
    state = state or DistillState(cfg.ema_decay, cfg.dynamic_floor)
    state.floor = cfg.dynamic_floor
    x = target.float()
    device = y.device
    B = y.shape[0]
    if labelled is None:
        lab_idx = unl_idx = None
        n_lab, n_unl = B, 0
    else:
        lab = labelled.reshape(-1).to(device) > 0.5
        lab_idx, unl_idx = lab.nonzero().flatten(), (~lab).nonzero().flatten()
        n_lab, n_unl = int(lab_idx.numel()), int(unl_idx.numel())

    cached = isinstance(teacher, TeacherCache)
    with _amp_ctx(device, amp):
        S, fs = student(y, op, return_features=True)
        # a memoised teacher runs its head live (with gradients) on the references only, below
        tctx = contextlib.nullcontext() if (teacher_grad and not cached) else torch.no_grad()
        with tctx:
            T, ft = teacher(y, op, return_features=True)
    S, T = S.float(), T.float()
    fs = [f.float() for f in fs]
    ft = [f.float() for f in ft]
    T_det = T.detach()
    ft_det = [f.detach() for f in ft]
    if cfg.teacher_tta and isinstance(teacher, TeacherCache):   # memoised (until the head's next relabelling)
        T_label, spread = teacher.label(y, op, amp=amp)
    elif cfg.teacher_tta:   # the label: the mean of the teacher's augmented predictions
        T_label, spread = teacher_tta(teacher, y, op, first=T_det, amp=amp)
    else:
        T_label, spread = T_det, None

    # ---- errors (labelled samples only), dynamic factor, warm-up ------------------------------
    with torch.no_grad():
        err_s = (S - x).abs()
        err_t = (T_det - x).abs()
        e_s = float(_select(err_s, lab_idx).mean()) if n_lab else float("nan")
        e_t = float(_select(err_t, lab_idx).mean()) if n_lab else float("nan")
    if cfg.dynamic:
        lam = state.update(e_s, e_t) if n_lab else state.factor
    else:
        lam = 1.0
    if cfg.kd_warmup_steps > 0 and not fresh_state:
        ramp = min(1.0, (state.steps + 1) / cfg.kd_warmup_steps)
    else:
        ramp = 1.0
    state.steps += 1

    # ---- student terms ------------------------------------------------------------------------
    terms: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    S_l, x_l = _select(S, lab_idx), _select(x, lab_idx)
    if n_lab:
        terms["rec"] = L.reconstruction_loss(S_l, x_l)
    else:
        terms["rec"] = S.sum() * 0.0
    weights["rec"] = cfg.w_rec
    if cfg.edge and n_lab:
        terms["edge"] = L.edge_loss(S_l, x_l)
    else:
        with torch.no_grad():
            terms["edge"] = L.edge_loss(S_l.detach(), x_l) if n_lab else S.new_zeros(())
    weights["edge"] = cfg.w_edge if cfg.edge else 0.0

    # confidence: GT-based modes on labelled samples (1 elsewhere), uncertainty everywhere
    if cfg.confidence == "uncertainty":
        w_map = L.uncertainty_weights(spread)
    elif cfg.confidence == "none" or lab_idx is None:
        w_map = L.confidence_weights(S.detach(), T_label, x, cfg.confidence)
    else:
        w_map = torch.ones_like(S)
        if n_lab:
            w_map[lab_idx] = L.confidence_weights(S_l.detach(), _select(T_label, lab_idx), x_l, cfg.confidence)
    kd_idx = unl_idx if cfg.kd_on == "unlabelled" else None
    n_kd = B if kd_idx is None else n_unl
    if n_kd:
        S_k, T_k, w_k = _select(S, kd_idx), _select(T_label, kd_idx), _select(w_map, kd_idx)
        if cfg.output_kd:
            terms["kd"] = L.output_distillation(S_k, T_k, w_k, cfg.kd_loss, cfg.kd_delta)
        else:
            with torch.no_grad():
                terms["kd"] = L.output_distillation(S_k.detach(), T_k, w_k, cfg.kd_loss, cfg.kd_delta)
    else:
        terms["kd"] = S.sum() * 0.0
    weights["kd"] = cfg.w_kd * lam * ramp if cfg.output_kd else 0.0

    adapted: list[torch.Tensor] = []
    if adapters is not None and ft:
        sizes = [tuple(f.shape[-2:]) for f in ft]
        if cfg.feature_kd:
            adapted = adapters(fs, sizes)
            terms["feat"] = L.feature_distillation(adapted, ft_det)
        else:
            with torch.no_grad():
                terms["feat"] = L.feature_distillation(adapters([f.detach() for f in fs], sizes), ft_det)
        weights["feat"] = cfg.w_feat * lam * ramp if cfg.feature_kd else 0.0
    elif cfg.feature_kd:
        raise ConfigError("feature_kd is on but no adapters were given; build them with Adapters.for_models(student, teacher)")

    if fs and ft:
        paired = unwrap(adapters).pair_student(fs) if adapters is not None else _default_pairs(fs, ft)
        if cfg.attention_kd:
            terms["att"] = L.attention_transfer(paired, ft_det)
        else:
            with torch.no_grad():
                terms["att"] = L.attention_transfer([p.detach() for p in paired], ft_det)
        weights["att"] = cfg.w_att * lam * ramp if cfg.attention_kd else 0.0

    with torch.no_grad():
        terms["kl"] = L.released_kl_term(S.detach(), T_det)

    if cfg.balance == "magnitude":   # feature-type terms relative to the running magnitude of the L1 loss
        rec_m = state.track("rec", float(terms["rec"].detach())) if n_lab else (
            state.magnitudes["rec"].value if "rec" in state.magnitudes else 1.0)
        for k in ("feat", "att"):
            if k in terms:
                norm = rec_m / max(state.track(k, float(terms[k].detach())), 1e-12)
                weights[k] = weights[k] * norm
    elif cfg.balance == "gradnorm":
        if S.requires_grad and n_lab and (not state.grad_factors or state.steps % cfg.gradnorm_every == 1
                                          or cfg.gradnorm_every == 1):
            _update_grad_factors(state, terms, student, adapters)
        for k in ("kd", "feat", "att"):
            if k in weights:
                weights[k] = weights[k] * state.grad_factors.get(k, 1.0)

    total = S.new_zeros(())
    for k in STUDENT_TERMS:
        if k in terms and weights.get(k, 0.0) > 0:
            total = total + weights[k] * terms[k]

    # ---- teacher correction (labelled samples: the target domain's references) ----------------
    teacher_total = None
    teacher_terms: dict[str, float] = {}
    if cfg.correction:
        T_src = T if teacher_grad else T_det
        if n_lab:
            if cached and teacher_grad:
                with _amp_ctx(device, amp):
                    T_lab = teacher(_select(y, lab_idx), op).float()
            else:
                T_lab = _select(T_src, lab_idx)
            tl = L.teacher_correction_loss(T_lab, S_l.detach(), x_l, edge_weight=cfg.t_edge_weight,
                                           error_focus=cfg.t_error_focus, feedback_weight=0.0)
            teacher_total = tl["loss"]
            teacher_terms = {k: float(tl[k]) for k in ("rec", "edge", "wrong_fraction")}
        else:
            teacher_total = T_src.sum() * 0.0
            teacher_terms = {"rec": float("nan"), "edge": float("nan"), "wrong_fraction": float("nan")}
        fb_w = 0.0
        use_fb = cfg.feature_kd and bool(adapted) and cfg.t_feedback_weight > 0
        if use_fb:
            fb = L.feedback_loss(ft if teacher_grad else ft_det, [a.detach() for a in adapted])
            fb_w = cfg.t_feedback_weight
            if cfg.balance != "none" and n_lab:
                fb_w *= state.track("t_rec", teacher_terms["rec"]) / max(state.track("t_feedback", float(fb.detach())), 1e-12)
            elif cfg.balance != "none" and "t_rec" in state.magnitudes and "t_feedback" in state.magnitudes:
                fb_w *= state.magnitudes["t_rec"].value / max(state.magnitudes["t_feedback"].value, 1e-12)
            teacher_total = teacher_total + fb_w * fb
            teacher_terms["feedback"] = float(fb.detach())
        else:
            teacher_terms["feedback"] = 0.0
        teacher_terms["w_feedback"] = float(fb_w)
        if cfg.t_anchor > 0 and teacher_anchor is not None and teacher_grad:
            pen = L.anchor_penalty([p for p in (teacher.teacher if cached else unwrap(teacher)).parameters()],
                                   teacher_anchor)
            teacher_total = teacher_total + cfg.t_anchor * pen
            teacher_terms["anchor"] = float(pen.detach())

    maps = {"confidence": w_map.detach(), "student": S.detach(), "teacher": T_det, "teacher_label": T_label,
            "student_error": err_s, "teacher_error": err_t}
    if spread is not None:
        maps["teacher_spread"] = spread
    return LossBreakdown(total=total, terms=terms, weights=weights, maps=maps, teacher_total=teacher_total,
                         teacher_terms=teacher_terms, dynamic=float(lam), warmup=float(ramp),
                         student_error=e_s, teacher_error=e_t)


def _update_grad_factors(state: DistillState, terms: dict, student: nn.Module, adapters: Optional[nn.Module]) -> None:
    """``balance="gradnorm"``: factor_k = EMA(|grad rec| / |grad term_k|) over the student's (and
    adapters') parameters, so that ``w_k`` is term k's gradient norm as a fraction of rec's."""
    params = [p for p in unwrap(student).parameters() if p.requires_grad]
    if adapters is not None:
        params += [p for p in unwrap(adapters).parameters() if p.requires_grad]

    def norm(t):
        return _grad_norm(t, params) if t.requires_grad else 0.0

    g_rec = norm(terms["rec"])
    if not (g_rec > 0):
        return
    for k in ("kd", "feat", "att"):
        if k in terms:
            g = norm(terms[k])
            if g > 0:
                f = g_rec / g
                old = state.grad_factors.get(k)
                state.grad_factors[k] = f if old is None else state.decay * old + (1 - state.decay) * f


def _default_pairs(fs, ft):
    from .models.adapters import pairing

    return [fs[i] for i in pairing(len(ft), len(fs))]


def gradient_norms(breakdown: LossBreakdown, module: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of each *weighted* student term w.r.t. ``module``'s parameters
    (for the notebook's loss widget; needs a breakdown computed with gradients). Terms with weight
    0 or without a graph give 0.0."""
    params = [p for p in module.parameters() if p.requires_grad]
    out = {}
    for k in STUDENT_TERMS:
        t = breakdown.terms.get(k)
        w = breakdown.weights.get(k, 0.0)
        if t is None or w == 0 or not t.requires_grad:
            out[k] = 0.0
            continue
        out[k] = _grad_norm(w * t, params)
    return out


def _grad_norm(t: torch.Tensor, params) -> float:
    """L2 norm of the gradient of scalar ``t`` w.r.t. ``params`` (graph kept; nothing accumulated)."""
    grads = torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)
    sq = [g.float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0
