"""The switches and weights of corrective distillation: :class:`DistillConfig`, the ablation's rows
(:data:`ABLATION_ROWS`, cumulative) and one help line per field (the command line's distillation
flags are generated from them, :func:`kdmri_lib.engine.train.add_distill_flags`).

The maths of every term is in :mod:`kdmri_lib.distill`, which re-exports everything here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from kdmri_lib.core.errors import ConfigError, check_choice, check_float, check_int

__all__ = ["DistillConfig", "ABLATION_ROWS", "ABLATION_BASE", "ABLATION_PIECES", "PREDATED", "CANDIDATE_ROWS",
           "PAPER_METHOD", "RELEASED_RECIPE", "FIELD_HELP", "FIELD_CHOICES", "CONFIDENCE_MODES", "BALANCE_MODES",
           "KD_ON", "T_PARAMS", "STUDENT_TERMS"]

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
        teacher_lr: learning rate of the teacher's AdamW in correction mode (1e-3: the head's pilot,
            docs/training.md); ``None`` = 0.1 x the student's learning rate.
        t_edge_weight, t_error_focus, t_feedback_weight: the teacher-correction loss's
            hyper-parameters (:func:`kdmri_lib.distill.losses.teacher_correction_loss`); the feedback term
            needs ``feature_kd`` (it uses the trained adapters) and is 0 without it. ``t_error_focus``
            (extra weight on the pixels where the student beats the teacher) is 0 by default: with
            an under-trained student those pixels are mostly noise, and ``t_error_focus = 1``
            lowered the corrected teacher's validation PSNR by 0.05 dB in 100 steps on the demo
            data, where plain continued training (0) raised it by 0.01 dB.
        ema_decay: decay of the running averages (errors of dynamic weighting, term magnitudes of
            ``balance``), in [0, 1).
        kd_warmup_steps: linear ramp of the distillation weights over the first steps (0 = none).
        prestage_steps: KD-MRI's attention-transfer pre-stage: for the first N distillation steps the
            student learns only the feature and attention terms (``rec``, ``edge`` and ``kd`` weigh 0);
            after them those two weigh 0 and the other terms take over (0 = no pre-stage). Needs
            ``feature_kd`` or ``attention_kd``.
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
        dynamic_floor: lower bound of ``lambda`` (0 = the paper's rule, which dies; ``kd_dynamic`` uses 0.5).
        t_anchor: correction: L2-SP weight keeping the teacher near its pre-trained weights
            (:func:`kdmri_lib.distill.losses.anchor_penalty`); 0 = none.
        gradnorm_every: steps between gradient-norm measurements of ``balance="gradnorm"``.
        kd_loss, kd_delta: the output-distillation penalty, ``"l1"`` or ``"huber"`` with
            threshold ``kd_delta`` (:func:`kdmri_lib.distill.losses.output_distillation`).
        t_params: what the correction updates: ``"head"`` (the teacher's reconstruction head,
            :meth:`SwinTeacher.head_parameters`; the body that carries the source domain's knowledge
            stays frozen, so 12 references cannot over-fit it, and a memoised body makes the corrected
            teacher cheap, :mod:`kdmri_lib.distill.teacher_cache`) or ``"all"`` (every parameter).
        relabel_every: head correction with a memoised teacher: teacher steps after which the
            pool's augmented labels are recomputed with the corrected head.
        t_every: the teacher takes a correction step every ``t_every`` student steps (1 = every step).
        t_rehearsal: correction: weight of the L1 loss on a batch of the teacher's own source-domain
            slices (``TrainConfig.rehearsal_files``, with ground truth) added to each correction step
            (rehearsal: references of one contrast otherwise pull the teacher away from the other
            contrast; measured in ``python -m kdmri_lib.pilots correction --rehearsal 1``); 0 = none.

    ``confidence="uncertainty"`` weights the teacher by its own test-time-augmentation agreement
    (:func:`kdmri_lib.distill.losses.uncertainty_weights`), which — unlike ``"hard"`` / ``"soft"`` — needs no
    ground truth and so carries information the truth does not have (and works on the pool).
    """

    output_kd: bool = True
    feature_kd: bool = False
    attention_kd: bool = False
    edge: bool = False
    confidence: str = "none"
    correction: bool = True
    dynamic: bool = False
    w_rec: float = 1.0
    w_edge: float = 0.1
    w_kd: float = 1.0
    w_feat: float = 0.1
    w_att: float = 0.1
    teacher_lr: Optional[float] = 1e-3
    t_edge_weight: float = 0.1
    t_error_focus: float = 0.0
    t_feedback_weight: float = 0.05
    ema_decay: float = 0.9
    kd_warmup_steps: int = 0
    balance: Any = "none"
    kd_on: str = "unlabelled"
    teacher_tta: bool = True
    dynamic_floor: float = 0.0
    t_anchor: float = 0.0
    gradnorm_every: int = 20
    kd_loss: str = "l1"
    kd_delta: float = 0.02
    t_params: str = "head"
    relabel_every: int = 50
    t_every: int = 4
    t_rehearsal: float = 1.0
    prestage_steps: int = 0

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
        for name in ("w_rec", "w_edge", "w_kd", "w_feat", "w_att", "t_edge_weight", "t_error_focus", "t_feedback_weight",
                     "t_rehearsal"):
            setattr(self, name, check_float(f"distill.{name}", getattr(self, name), minimum=0.0))
        if self.teacher_lr is not None:
            self.teacher_lr = check_float("distill.teacher_lr", self.teacher_lr, minimum=0.0, strict_min=True)
        self.ema_decay = check_float("distill.ema_decay", self.ema_decay, minimum=0.0)
        if self.ema_decay >= 1.0:
            raise ConfigError(f"distill.ema_decay must be < 1; got {self.ema_decay}")
        self.kd_warmup_steps = check_int("distill.kd_warmup_steps", self.kd_warmup_steps, minimum=0)
        self.prestage_steps = check_int("distill.prestage_steps", self.prestage_steps, minimum=0)
        if self.prestage_steps and not (self.feature_kd or self.attention_kd):
            raise ConfigError("distill.prestage_steps > 0 (an attention-transfer pre-stage) needs feature_kd or "
                              "attention_kd: the pre-stage trains the student on those terms alone")
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
        """The config of an ablation row (:data:`ABLATION_ROWS`), e.g. ``"kd_vanilla"``, ``"full"``;
        ``overrides`` change its fields (one that is None keeps the row's value, so a notebook
        parameter left at None means "the recipe's")."""
        rows = {**ABLATION_ROWS, **CANDIDATE_ROWS}
        check_choice("distill preset", name, tuple(rows))
        return cls(**{**rows[name], **{k: v for k, v in overrides.items() if v is not None}})


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
    "prestage_steps": "KD-MRI's pre-stage: the first N steps train on the feature / attention terms only",
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
    "t_rehearsal": "teacher correction: weight of an L1 batch of its source-domain slices (--rehearsal-files) per step",
}
#: fields added after runs were stored, with the value that computes what those runs computed (a
#: stored configuration without the field is read with this value, not with today's default)
PREDATED: dict[str, Any] = {"t_rehearsal": 0.0, "prestage_steps": 0}
#: the choices of the string-valued fields
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "confidence": CONFIDENCE_MODES, "balance": BALANCE_MODES, "kd_on": KD_ON, "kd_loss": ("l1", "huber"),
    "t_params": T_PARAMS,
}


_VANILLA = dict(output_kd=True, feature_kd=True, attention_kd=True, edge=False, confidence="none",
                correction=False, dynamic=False, balance="magnitude", kd_on="all", teacher_tta=False,
                dynamic_floor=0.0, t_anchor=0.0, t_params="all", t_every=1, relabel_every=100, teacher_lr=None,
                t_rehearsal=0.0)
_POOL = {**_VANILLA, "kd_on": "unlabelled"}
_OUTPUT = {**_POOL, "feature_kd": False, "attention_kd": False, "balance": "none"}
_TTA = {**_OUTPUT, "teacher_tta": True}
_UNCERTAINTY = {**_TTA, "confidence": "uncertainty"}
_DYNAMIC = {**_UNCERTAINTY, "dynamic": True, "dynamic_floor": 0.5, "balance": "gradnorm"}
#: the distillation rows of the ablation, each one piece on top of its base (:data:`ABLATION_BASE`):
#: vanilla KD (frozen teacher, L1 output distillation on every sample + adapters and attention maps,
#: magnitude balance); + output-space transfer on the measurement-only pool only (no L1 + L1 dead
#: zone; no adapters / attention maps, as OFA-KD argues for CNN <- ViT); + the teacher's
#: test-time-augmented label; + its uncertainty as confidence; + dynamic weighting with a floor and
#: gradient-norm balance; and the full method = the augmented label + the teacher's correction (head
#: only, lr 1e-3, rehearsing its source domain, relabelling the pool), the :class:`DistillConfig`
#: defaults. The full method leaves out the uncertainty confidence and the dynamic weight because
#: the previous ablation measured both below the row they were added to (docs/training.md: both
#: lower the teacher's weight where it teaches). (``kd_pool``, the pool without the output-space
#: step, is a candidate row: within 0.02 dB of ``kd_vanilla`` in the pilots and an earlier ablation.)
ABLATION_ROWS: dict[str, dict] = {
    "kd_vanilla": dict(_VANILLA),
    "kd_output": dict(_OUTPUT),
    "kd_tta": dict(_TTA),
    "kd_uncertainty": dict(_UNCERTAINTY),
    "kd_dynamic": dict(_DYNAMIC),
    "full": {**_TTA, "correction": True, "t_params": "head", "teacher_lr": 1e-3, "t_rehearsal": 1.0, "t_every": 4,
             "relabel_every": 50},
}
#: the row each row adds its piece to
ABLATION_BASE: dict[str, str] = {"kd_output": "kd_vanilla", "kd_tta": "kd_output", "kd_uncertainty": "kd_tta",
                                 "kd_dynamic": "kd_uncertainty", "full": "kd_tta"}
#: what each row adds to its base (the fields it changes)
ABLATION_PIECES: dict[str, tuple[str, ...]] = {
    "kd_output": ("kd_on", "feature_kd", "attention_kd", "balance"), "kd_tta": ("teacher_tta",),
    "kd_uncertainty": ("confidence",), "kd_dynamic": ("dynamic", "dynamic_floor", "balance"),
    "full": ("correction", "t_params", "teacher_lr", "t_rehearsal", "t_every", "relabel_every"),
}
#: rows measured in pilots that are not in the ablation's ladder (``python -m kdmri_lib.ablation
#: --candidates NAME`` trains them with the ablation's settings); ``DistillConfig.preset`` accepts
#: these names too: vanilla KD at fixed weights, vanilla KD on the pool only, KD-MRI's pre-stage (measured
#: 1.7 dB below ``kd_tta``, docs/training.md), the correction of every teacher parameter
#: (no memoised body: about 6x the cost of a head correction on a CPU) and the previous full method.
CANDIDATE_ROWS: dict[str, dict] = {
    "kd_vanilla_fixed": {**_VANILLA, "balance": "none"},
    "kd_pool": dict(_POOL),
    "full_all": {**_TTA, "correction": True, "t_rehearsal": 1.0},
    # the previous ablation's full method: the head correction anchored by L2-SP at lr 1e-4, on kd_dynamic
    # KD-MRI's attention-transfer pre-stage (a quarter of the default 1600 steps: feature and attention
    # terms through the adapters only), then kd_tta: the third way across architectures, beside vanilla's
    # adapters all along and output-space transfer only
    "kd_prestage": {**_TTA, "feature_kd": True, "attention_kd": True, "prestage_steps": 400},
    "full_anchored": {**_DYNAMIC, "correction": True, "t_anchor": 1.0, "t_params": "head", "t_every": 4,
                      "relabel_every": 50},
}
#: what the released training script computes, as switches (notebook 04 runs it literally,
#: :mod:`kdmri_lib.teaching.released`): a frozen teacher whose only distillation term is the
#: one-channel KL divergence (always 0, logged as ``kl``) and an edge loss on detached Canny maps
#: (no gradient) — so the student learns from the ground truth alone
RELEASED_RECIPE = {**_VANILLA, "output_kd": False, "feature_kd": False, "attention_kd": False, "balance": "none"}
#: the paper's pieces as it states them (edge loss, GT-based confidence, correction, dynamic
#: weighting without a floor), for comparison with the rows above
PAPER_METHOD = {**_VANILLA, "edge": True, "confidence": "soft", "correction": True, "dynamic": True}
