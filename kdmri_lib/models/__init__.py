r"""Reconstruction models: Swin ViT teacher, unrolled CNN student, fastMRI U-Net, baselines.

One factory (fixed public API)::

    model = kdmri_lib.models.build_model(kind, preset, task, factor)
    op = kdmri_lib.mri.physics.build_operator(task, factor, shape=(H, W))
    image = model(y, op)                              # float32 (B, 1, H, W) magnitude
    image, feats = model(y, op, return_features=True) # feats: list of (B, C_i, h_i, w_i)

Kinds (:data:`MODEL_KINDS` are learned and take a preset from :data:`PRESETS`; the
:data:`BASELINES` are parameter-free and ignore the preset):

=================  ======================================================================
``"teacher"``      :class:`~.teacher.SwinTeacher` -- Swin restoration transformer (SwinIR-style)
``"student"``      :class:`~.student.UnrolledStudent` -- unrolled CNN with exact data consistency
``"unet"``         :class:`~.baselines.UnetBaseline` -- ``fastmri.models.Unet`` wrapped
``"zero_filled"``  ``|A^H y|`` (both tasks)
``"lowres"``       ``sr``: nearest-neighbour up-sampled low-resolution magnitude
``"bicubic"``      ``sr``: bicubic up-sampled low-resolution magnitude
=================  ======================================================================

:class:`~.adapters.Adapters` maps the student's feature maps to the teacher's token maps for
feature distillation (1x1 convolution + bilinear resize, documented pairing rule).

Every model is a :class:`~.common.ReconModel` with ``kind``, ``preset``, ``task``, ``factor``,
``config`` (``build_model(**model.config)`` rebuilds it), ``hparams`` and ``feature_channels``.
Feature conventions per kind are documented on each class. Registry helpers
(:func:`registry`, :data:`TASK_FACTORS`) enumerate every (kind, preset, task, factor) for tests.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Sequence

from kdmri_lib.core.errors import ConfigError, check_choice
from kdmri_lib.models.adapters import Adapters, pairing
from kdmri_lib.models.baselines import BASELINES, UNET_PRESETS, Baseline, UnetBaseline, baselines_for
from kdmri_lib.models.common import PRESETS, SR_SCALES, TASK_FACTORS, ReconModel, check_task_factor, magnitude
from kdmri_lib.models.reference import CHPNetLike
from kdmri_lib.models.student import STUDENT_PRESETS, UnrolledStudent
from kdmri_lib.models.teacher import TEACHER_PRESETS, AttentionMaps, SwinTeacher

#: learned model kinds (take a preset)
MODEL_KINDS = ("teacher", "student", "unet")
#: every kind build_model accepts
ALL_KINDS = MODEL_KINDS + BASELINES

_CLASSES = {"teacher": SwinTeacher, "student": UnrolledStudent, "unet": UnetBaseline}
#: preset tables per learned kind
PRESET_TABLES = {"teacher": TEACHER_PRESETS, "student": STUDENT_PRESETS, "unet": UNET_PRESETS}

__all__ = [
    "build_model", "registry", "ModelSpec", "MODEL_KINDS", "ALL_KINDS", "PRESETS", "BASELINES", "TASK_FACTORS",
    "SR_SCALES", "PRESET_TABLES", "ReconModel", "SwinTeacher", "UnrolledStudent", "UnetBaseline", "Baseline",
    "CHPNetLike", "AttentionMaps", "baselines_for", "magnitude", "check_task_factor", "Adapters", "pairing",
]


def build_model(kind: str, preset: str = "tiny", task: str = "sr", factor: int = 4, **overrides) -> ReconModel:
    """Build a reconstruction model (the toolkit's fixed public API).

    Args:
        kind: ``"teacher"``, ``"student"``, ``"unet"`` or a baseline (``"zero_filled"``,
            ``"lowres"``, ``"bicubic"``).
        preset: ``"tiny"``, ``"small"`` or ``"paper"`` (ignored by baselines).
        task: ``"sr"`` (factor = scale: 2, 3, 4, 8) or ``"cs"`` (factor = acceleration).
        factor: the scale or acceleration.
        **overrides: optional hyper-parameters replacing the preset's (e.g. ``iterations=3``
            for the student); unknown names raise :class:`~kdmri_lib.core.errors.ConfigError`
            listing the valid ones. They are recorded in ``model.config``.

    Returns:
        a :class:`ReconModel` in training mode, float32, on the CPU.

    Raises:
        ConfigError: unknown kind / preset / task, unsupported factor, bad hyper-parameter.
    """
    check_choice("kind", kind, ALL_KINDS)
    check_task_factor(task, factor)
    if kind in BASELINES:
        if overrides:
            raise ConfigError(f"baseline {kind!r} has no hyper-parameters; got {', '.join(sorted(overrides))}")
        return Baseline(kind, task, factor)
    check_choice(f"{kind} preset", preset, PRESETS)
    return _CLASSES[kind](preset, task, factor, **overrides)


class ModelSpec(NamedTuple):
    """One entry of the model registry."""

    kind: str
    preset: str
    task: str
    factor: int

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.preset}-{self.task}{self.factor}"

    def build(self, **overrides) -> ReconModel:
        return build_model(self.kind, self.preset, self.task, self.factor, **overrides)


def registry(kinds: Optional[Sequence[str]] = None, presets: Optional[Sequence[str]] = None,
             task_factors: Sequence[tuple[str, int]] = TASK_FACTORS) -> Iterator[ModelSpec]:
    """Every valid (kind, preset, task, factor), for property tests and benchmarks.

    Baselines appear once per (task, factor) with preset ``"none"``, and only where they are
    defined (:func:`baselines_for`).
    """
    kinds = ALL_KINDS if kinds is None else tuple(kinds)
    presets = PRESETS if presets is None else tuple(presets)
    for kind in kinds:
        check_choice("kind", kind, ALL_KINDS)
        for task, factor in task_factors:
            if kind in BASELINES:
                if kind in baselines_for(task):
                    yield ModelSpec(kind, "none", task, factor)
                continue
            for preset in presets:
                check_choice("preset", preset, PRESETS)
                yield ModelSpec(kind, preset, task, factor)

