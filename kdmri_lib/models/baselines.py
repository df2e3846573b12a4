r"""Baselines in the same ``forward(y, op)`` contract: parameter-free images and fastMRI's U-Net.

Parameter-free baselines (:data:`BASELINES`, ``preset`` is ignored; they return no features):

* ``"zero_filled"`` -- ``|A^H y|``. For ``cs`` the zero-filled image (unmeasured k-space
  columns set to 0). For ``sr`` the measured central k-space block zero-padded to full size:
  the band-limited (sinc) interpolation of the low-resolution image, at the full-resolution
  intensity scale (``A^H y == op.upsample(op.initial(y))``; no extra factor).
* ``"lowres"`` -- ``sr`` only: the low-resolution magnitude ``|op.initial(y)|`` shown at full
  size by nearest-neighbour interpolation: what the low-resolution scan itself looks like.
* ``"bicubic"`` -- ``sr`` only: bicubic interpolation of ``|op.initial(y)|``, clamped at 0 (a
  magnitude cannot be negative; bicubic overshoots).

Sampling geometry of both: with the centred FFT, low-resolution pixel ``i`` sits at full-resolution
pixel ``i * s`` (``op.initial(y) == x[..., ::s, ::s]`` for a band-limited ``x``), so full-resolution
pixel ``j`` is interpolated at low-resolution coordinate ``j / s`` (``F.grid_sample``, border
padding). ``F.interpolate(..., scale_factor=s)`` assumes pixel *centres* instead and would shift the
image by ``(s - 1) / 2`` pixels: on the demo validation slices that costs the bicubic baseline
4.9 dB PSNR at x4 (21.5 vs 26.4 dB) and 3.8 dB at x2.

``lowres`` and ``bicubic`` have no meaning for ``cs`` (there is no low-resolution image) and
raise :class:`~kdmri_lib.core.errors.ConfigError` there; :func:`baselines_for` lists the valid ones.

fastMRI U-Net (kind ``"unet"``): ``fastmri.models.Unet(in_chans=1, out_chans=1, chans,
num_pool_layers=4)`` on the magnitude of the starting image at full resolution (``cs``:
zero-filled; ``sr``: ``A^H y``, the sinc-interpolated low-res image), normalised per image to zero
mean and unit standard deviation as fastMRI's ``UnetDataTransform`` does
(``fastmri.data.transforms.normalize_instance``), predicting a correction of that magnitude:
``out = |A^H y| + std * Unet((|A^H y| - mean) / std)``. (Fed the (real, imag) channels of a
complex image with a random smooth phase instead, the tiny U-Net stayed at the zero-filled level
on the whole-head demo data.) Inputs are padded (reflection) to a
multiple of ``2^num_pool_layers`` (at least ``2^(num_pool_layers+1)``, so that the instance norm of
the bottleneck sees more than one pixel) and cropped back. Features (``return_features=True``):
the bottleneck and each decoder level, coarse to fine, ``[16c, 8c, 4c, 2c, c]`` channels for
``chans = c`` (captured with forward hooks on fastMRI's own modules).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastmri.models import Unet
from torch import nn

from kdmri_lib.core.errors import ConfigError, check_choice, check_int
from kdmri_lib.models.common import ReconModel, crop_to, magnitude, pad_to_multiple, resolve_hparams
from kdmri_lib.mri.physics import Operator

BASELINES = ("zero_filled", "lowres", "bicubic")
_SR_ONLY = ("lowres", "bicubic")

UNET_PRESETS: dict[str, dict] = {
    "tiny": dict(chans=8, num_pool_layers=4),
    "small": dict(chans=16, num_pool_layers=4),
    "paper": dict(chans=32, num_pool_layers=4),
}


def baselines_for(task: str) -> tuple[str, ...]:
    """The parameter-free baselines that make sense for ``task``."""
    return BASELINES if task == "sr" else ("zero_filled",)


class Baseline(ReconModel):
    """A parameter-free baseline (see the module docstring). ``kind`` is the baseline's name."""

    def __init__(self, name: str, task: str, factor: int, preset: str = "none"):
        check_choice("baseline", name, BASELINES)
        self.kind = name
        super().__init__("none", task, factor)
        if name in _SR_ONLY and self.task != "sr":
            raise ConfigError(f"baseline {name!r} is defined for task 'sr' only (a low-resolution image); "
                              f"for {self.task!r} use one of {', '.join(map(repr, baselines_for(self.task)))}")
        self.name = name

    def reconstruct(self, y: torch.Tensor, op: Operator, return_features: bool):
        if self.name == "zero_filled":
            return magnitude(op.adjoint(y)), []
        low = magnitude(op.initial(y))
        grid = sampling_grid(low, self.factor)
        if self.name == "lowres":
            return F.grid_sample(low, grid, mode="nearest", padding_mode="border", align_corners=False), []
        up = F.grid_sample(low, grid, mode="bicubic", padding_mode="border", align_corners=False)
        return up.clamp_min(0.0), []


def sampling_grid(low: torch.Tensor, s: int) -> torch.Tensor:
    """``F.grid_sample`` grid ``(B, h*s, w*s, 2)`` that reads ``low`` (``(B, C, h, w)``) at
    low-resolution coordinates ``j / s`` for full-resolution pixel ``j`` (the sr sampling grid)."""
    B, _, h, w = low.shape
    ys = ((torch.arange(h * s, device=low.device, dtype=torch.float32) / s + 0.5) / h) * 2 - 1
    xs = ((torch.arange(w * s, device=low.device, dtype=torch.float32) / s + 0.5) / w) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).to(low.dtype).unsqueeze(0).expand(B, -1, -1, -1)


class UnetBaseline(ReconModel):
    """``fastmri.models.Unet`` in the toolkit's contract (see the module docstring).

    Args:
        preset: ``"tiny"`` (chans 8), ``"small"`` (16) or ``"paper"`` (32, fastMRI's baseline).
        task, factor: ``"sr"`` + scale or ``"cs"`` + acceleration.
        **overrides: ``chans``, ``num_pool_layers``.
    """

    kind = "unet"

    def __init__(self, preset: str = "tiny", task: str = "cs", factor: int = 4, **overrides):
        hp = resolve_hparams("unet", UNET_PRESETS, preset, overrides)
        super().__init__(preset, task, factor, hp, overrides)
        chans = check_int("chans", hp["chans"], minimum=1)
        pools = check_int("num_pool_layers", hp["num_pool_layers"], minimum=1)
        self.unet = Unet(in_chans=1, out_chans=1, chans=chans, num_pool_layers=pools)

    @property
    def feature_channels(self) -> list[int]:
        c, n = self.unet.chans, self.unet.num_pool_layers
        return [c * 2 ** n] + [c * 2 ** l for l in reversed(range(n))]

    def _feature_modules(self) -> list[nn.Module]:
        ups = list(self.unet.up_conv)
        return [self.unet.conv] + ups[:-1] + [ups[-1][0]]  # the last up_conv ends with the 1x1 output conv

    def reconstruct(self, y: torch.Tensor, op: Operator, return_features: bool):
        base = magnitude(op.adjoint(y))
        H, W = base.shape[-2:]
        n = self.unet.num_pool_layers
        mean = base.mean(dim=(-2, -1), keepdim=True)
        std = base.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        inp, _ = pad_to_multiple((base - mean) / std, 2 ** n, minimum=2 ** (n + 1))
        feats: list[torch.Tensor] = []
        handles = []
        if return_features:
            handles = [m.register_forward_hook(lambda _m, _i, out: feats.append(out)) for m in self._feature_modules()]
        try:
            out = self.unet(inp)
        finally:
            for h in handles:
                h.remove()
        Hp = inp.shape[-2]
        feats = [crop_to(f, (-(-H * f.shape[-2] // Hp), -(-W * f.shape[-1] // inp.shape[-1]))) for f in feats]
        return base + std * crop_to(out, (H, W)), feats
