r"""Shared pieces of every reconstruction model: the :class:`ReconModel` contract and small helpers.

The contract (one for teacher, student, U-Net and the parameter-free baselines)
--------------------------------------------------------------------------------
``model(y, op)`` takes

* ``y``: the measurement, complex ``(B, 1, h, w)`` with ``(h, w) == op.meas_shape``
  (``sr``: the central k-space block, ``(H/s, W/s)``; ``cs``: masked k-space, ``(H, W)``);
* ``op``: the acquisition operator of :func:`kdmri_lib.mri.physics.build_operator`,

and returns the reconstructed **magnitude** image, ``float32 (B, 1, H, W)`` with
``(H, W) == op.shape``. ``model(y, op, return_features=True)`` returns ``(image, features)``
where ``features`` is a ``list`` of ``(B, C_i, h_i, w_i)`` float maps (what each kind returns
is documented on its class; ``model.feature_channels`` lists the ``C_i`` without a forward pass).
Features keep their graph (distillation losses back-propagate through them) and come in the
autocast dtype under autocast; the image is always float32.

Input representation: every learned model starts from the complex image ``op.initial(y)``
(``sr``: the low-resolution image; ``cs``: the zero-filled image) fed as two real channels
``(real, imag)`` (:func:`kdmri_lib.mri.physics.complex_to_channels`); the demo data have a smooth
random phase, so the magnitude alone would throw information away.

Inputs are validated before any computation: a wrong channel count, a measurement whose size
does not match the operator, or an operator of another task (or, for ``sr``, another scale)
raise :class:`kdmri_lib.core.errors.ConfigError` naming the expected shape. ``cs`` models accept an
operator of any acceleration (no network depends on it), so a model trained at 4x can be
evaluated at 8x. Any image size the operator takes works: models pad internally (to the Swin
window, to the U-Nets' down-sampling multiple) and crop back.

Mixed precision: models are autocast-friendly (CUDA bf16/fp16): the complex physics stays in
complex64, convolutions / attention run in the autocast dtype, the output is float32.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdmri_lib.core.errors import ConfigError, check_choice, check_int
from kdmri_lib.mri.physics import TASKS, Operator

#: presets of every learned model kind
PRESETS = ("tiny", "small", "paper")
#: factors each task supports: sr scales (the teacher's PixelShuffle tail handles 2^n and 3);
#: cs accelerations are not baked into any network (any integer >= 1 works).
SR_SCALES = (2, 3, 4, 8)
#: the (task, factor) pairs the toolkit trains and tests: sr scale 2/4, cs acceleration 4/8.
TASK_FACTORS = (("sr", 2), ("sr", 4), ("cs", 4), ("cs", 8))

#: small constant inside the magnitude's square root: keeps the gradient finite at 0
MAG_EPS = 1e-12


def check_task_factor(task: str, factor: Any) -> tuple[str, int]:
    """Validate a (task, factor) pair; return it with ``factor`` as an int."""
    check_choice("task", task, TASKS)
    if task == "sr":
        factor = check_int("scale (factor)", factor, minimum=2)
        if factor not in SR_SCALES:
            raise ConfigError(f"sr scale must be one of {', '.join(map(str, SR_SCALES))}; got {factor}")
    else:
        factor = check_int("acceleration (factor)", factor, minimum=1)
    return task, factor


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """Magnitude of a complex image, float32.

    Args:
        x: complex ``(B, 1, H, W)``, or real ``(B, 2, H, W)`` holding (real, imaginary).

    Returns:
        float32 ``(B, 1, H, W)``: ``sqrt(re^2 + im^2 + eps)`` (``eps`` = :data:`MAG_EPS`, so the
        gradient stays finite where the image is 0; computed in float32 also under autocast).
    """
    if x.is_complex():
        re, im = x.real.float(), x.imag.float()
    else:
        if x.shape[1] != 2:
            raise ConfigError(f"magnitude expects complex (B, 1, H, W) or real (B, 2, H, W); got {tuple(x.shape)}")
        re, im = x[:, :1].float(), x[:, 1:].float()
    return torch.sqrt(re * re + im * im + MAG_EPS)


def pad_to_multiple(x: torch.Tensor, multiple: int | Sequence[int], minimum: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two axes at the bottom / right up to a multiple of ``multiple``.

    Reflection padding where the image is large enough (as SwinIR does), replication otherwise.

    Args:
        x: ``(B, C, H, W)`` real tensor.
        multiple: int or ``(mh, mw)``.
        minimum: also pad up to at least this size.

    Returns:
        ``(padded, (H, W))``: the padded tensor and the original size for :func:`crop_to`.
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    H, W = x.shape[-2:]
    Hp = max(math.ceil(H / mh) * mh, math.ceil(minimum / mh) * mh)
    Wp = max(math.ceil(W / mw) * mw, math.ceil(minimum / mw) * mw)
    ph, pw = Hp - H, Wp - W
    if ph or pw:
        mode = "reflect" if (ph < H and pw < W) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (H, W)


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the last two axes to ``shape`` from the top-left corner (undoes :func:`pad_to_multiple`)."""
    h, w = shape
    return x[..., :h, :w]


def scale_init_(module: nn.Module, factor: float) -> None:
    """Multiply the (default-initialised) weights of ``module`` by ``factor``.

    Used on the last layer of residual branches so that a fresh model starts close to its
    physics-based base image; never zero (every parameter must receive a gradient from step one).
    """
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(factor)


class ReconModel(nn.Module):
    """Base class of every reconstruction model (see the module docstring for the contract).

    Attributes:
        kind: model kind ("teacher", "student", "unet", or a baseline name).
        preset: "tiny", "small" or "paper" (baselines: "none").
        task: "sr" or "cs".
        factor: sr scale or cs acceleration the model was built for.
        config: plain JSON-able dict; ``build_model(**model.config)`` rebuilds the model.
        hparams: the resolved hyper-parameters (preset + overrides), JSON-able.

    Subclasses implement :meth:`reconstruct`.
    """

    kind: str = "model"

    def __init__(self, preset: str, task: str, factor: int, hparams: Optional[dict] = None,
                 overrides: Optional[dict] = None):
        super().__init__()
        self.preset = preset
        self.task, self.factor = check_task_factor(task, factor)
        self.hparams = dict(hparams or {})
        overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in (overrides or {}).items()}
        self.config: dict[str, Any] = {"kind": self.kind, "preset": preset, "task": self.task,
                                       "factor": self.factor, **overrides}

    # -- to implement ---------------------------------------------------------------------------
    def reconstruct(self, y: torch.Tensor, op: Operator, return_features: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(image (B, 1, H, W), features)`` for a validated complex64 ``y``."""
        raise NotImplementedError  # pragma: no cover

    @property
    def feature_channels(self) -> list[int]:
        """Channels ``C_i`` of the maps that ``forward(..., return_features=True)`` returns."""
        return []

    # -- shared ---------------------------------------------------------------------------------
    def forward(self, y: torch.Tensor, op: Operator, return_features: bool = False):
        """Reconstruct the magnitude image from a measurement.

        Args:
            y: complex ``(B, 1, *op.meas_shape)`` measurement.
            op: the operator that produced ``y`` (same task; for ``sr`` the same scale).
            return_features: also return the list of intermediate feature maps.

        Returns:
            float32 ``(B, 1, *op.shape)``, or ``(image, features)`` with ``return_features``.
        """
        y = self.check_inputs(y, op)
        image, features = self.reconstruct(y, op, return_features)
        image = image.float()
        return (image, features) if return_features else image

    def check_inputs(self, y: torch.Tensor, op: Operator) -> torch.Tensor:
        """Validate ``(y, op)`` against this model; return ``y`` as complex64 (or float32 if real)."""
        if not isinstance(op, Operator):
            raise ConfigError(f"op must be an operator from kdmri_lib.mri.physics.build_operator; got {type(op).__name__}")
        if op.task != self.task:
            raise ConfigError(f"this {self.kind} model was built for task {self.task!r} but the operator is {op.task!r}")
        if self.task == "sr" and op.factor != self.factor:
            raise ConfigError(f"this {self.kind} model was built for sr scale {self.factor} but the operator has scale {op.factor}")
        h, w = op.meas_shape
        if not isinstance(y, torch.Tensor):
            raise ConfigError(f"y must be a complex tensor of shape (B, 1, {h}, {w}); got {type(y).__name__}")
        if y.dim() != 4:
            raise ConfigError(f"y must have shape (B, 1, {h}, {w}) (batch, 1 channel, measurement size of the "
                              f"{op.task} x{op.factor} operator); got {y.dim()} dimensions {tuple(y.shape)}")
        if y.shape[1] != 1:
            raise ConfigError(f"y must have 1 (complex) channel: expected shape (B, 1, {h}, {w}); got {tuple(y.shape)} "
                              f"({y.shape[1]} channels; single-coil complex k-space, not real/imag channels)")
        if tuple(y.shape[-2:]) != (h, w):
            extra = (f" (the sr x{op.factor} operator measures H/{op.factor} x W/{op.factor} of its {op.shape[0]}x{op.shape[1]} image)"
                     if op.task == "sr" else "")
            raise ConfigError(f"y must have shape (B, 1, {h}, {w}) for this operator{extra}; got {tuple(y.shape)}")
        if y.shape[0] < 1:
            raise ConfigError("y has an empty batch")
        if y.is_complex():
            return y.to(torch.complex64)
        return y.float()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, preset={self.preset!r}, task={self.task!r}, factor={self.factor}"


def resolve_hparams(name: str, presets: dict[str, dict], preset: str, overrides: dict) -> dict:
    """Preset hyper-parameters updated with ``overrides`` (unknown keys raise :class:`ConfigError`)."""
    check_choice(f"{name} preset", preset, tuple(presets))
    hp = dict(presets[preset])
    unknown = sorted(set(overrides) - set(hp))
    if unknown:
        raise ConfigError(f"unknown {name} hyper-parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(hp))}")
    for k, v in overrides.items():
        hp[k] = list(v) if isinstance(v, tuple) else v
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()}
