r"""The CNN student: an unrolled proximal-gradient network with a shared, pixel-unshuffled U-Net.

The paper's student (CHPNet) done right. With ``x`` the complex image estimate::

    sr:  x_0 = A^H y + PixelShuffle_s( conv3x3 -> LReLU -> conv3x3 ( op.initial(y) ) )
         (sinc-interpolated low-res image + a learned sub-pixel-convolution correction)
    cs:  x_0 = A^H y                                           (zero-filled image)
    for k = 1..K:
         x_k = x_{k-1} - delta_k * ( A^H (A x_{k-1} - y) + eta_k * (x_{k-1} - D(x_{k-1})) )
    output = |x_K|                                             (float32 magnitude)

* the data term ``A^H (A x - y)`` is exact (:meth:`kdmri_lib.mri.physics.Operator.data_grad`), not
  the learned conv + PixelShuffle approximation of the released code;
* ``delta_k`` and ``eta_k`` are learnable per iteration, initialised to 0.1 and 0.9 as in the
  released code;
* ``D`` is one small U-Net shared by all iterations, and it works on the **pixel-unshuffled**
  image: ``D(x) = x + PixelShuffle_u(U(PixelUnshuffle_u([re x, im x])))``. With ``u = 4`` the
  convolutions run on an ``(H/4, W/4)`` grid with ``2*16 = 32`` input channels, 16x fewer
  positions than a full-resolution CNN (the released student runs 64-channel convolutions at full
  resolution in every iteration: 1.36M parameters but ~420 GFLOPs at 320x320);
* every up-sampling is a sub-pixel convolution (``conv3x3`` then :class:`torch.nn.PixelShuffle`):
  the ``sr`` initial low -> high resolution step, each decoder level of ``U``, and the final
  un-shuffle back to full resolution; down-sampling is a 2x2 stride-2 convolution; skip
  connections are added (not concatenated); no normalisation layers (batch size 1 works and eval
  is deterministic).

Features for distillation (``return_features=True``): the decoder maps of ``U`` in the **last**
iteration, coarse to fine: ``[bottleneck, decoder level L-1, ..., decoder level 0]`` with
channels ``channels[::-1]`` and sizes ``ceil(H/(u*2^l)) x ceil(W/(u*2^l))`` (cells that only
cover the internal padding are cropped). At ``u = 4`` the finest map has the size of the
teacher's token map at ``sr x4``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdmri_lib.core.errors import ConfigError, check_int
from kdmri_lib.models.common import ReconModel, crop_to, magnitude, pad_to_multiple, resolve_hparams, scale_init_
from kdmri_lib.mri.physics import Operator, channels_to_complex, complex_to_channels

#: student presets: K iterations, pixel-unshuffle factor u, U-Net channels per level
#: (len(channels) - 1 down-samplings), features of the sr sub-pixel up-sampler.
STUDENT_PRESETS: dict[str, dict] = {
    "tiny": dict(iterations=3, unshuffle=4, channels=[24, 32], upsampler_feats=16, delta_init=0.1, eta_init=0.9),
    "small": dict(iterations=4, unshuffle=4, channels=[32, 48, 64], upsampler_feats=32, delta_init=0.1, eta_init=0.9),
    "paper": dict(iterations=5, unshuffle=4, channels=[32, 64, 128], upsampler_feats=32, delta_init=0.1, eta_init=0.9),
}


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


class ResBlock(nn.Module):
    """``x + conv3x3(LReLU(conv3x3(x)))`` with ``c`` channels."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _act(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SubPixelUp(nn.Sequential):
    """Sub-pixel convolution: ``conv3x3(c_in -> r^2 c_out)`` then ``PixelShuffle(r)``."""

    def __init__(self, c_in: int, c_out: int, r: int = 2):
        super().__init__(nn.Conv2d(c_in, c_out * r * r, 3, padding=1), nn.PixelShuffle(r))


class UnshuffledUNet(nn.Module):
    """The denoiser ``D``: a small U-Net on the pixel-unshuffled 2-channel image.

    Input / output: real ``(B, 2, H, W)`` (real, imaginary); ``H, W`` multiples of
    :attr:`multiple` (the caller pads). Returns ``(residual, features)`` with ``D(x) = x + residual``.
    """

    def __init__(self, unshuffle: int, channels: list[int]):
        super().__init__()
        u = self.unshuffle = unshuffle
        self.channels = list(channels)
        c_in = 2 * u * u
        self.unshuffle_layer = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.head = nn.Sequential(nn.Conv2d(c_in, channels[0], 3, padding=1), _act())
        L = len(channels) - 1
        self.enc = nn.ModuleList(ResBlock(channels[l]) for l in range(L))
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(channels[l], channels[l + 1], 2, stride=2), _act())
                                  for l in range(L))
        self.bottleneck = ResBlock(channels[L])
        self.up = nn.ModuleList(nn.Sequential(SubPixelUp(channels[l + 1], channels[l]), _act()) for l in range(L))
        self.dec = nn.ModuleList(ResBlock(channels[l]) for l in range(L))
        self.tail = nn.Conv2d(channels[0], c_in, 3, padding=1)
        self.shuffle = nn.PixelShuffle(u) if u > 1 else nn.Identity()
        scale_init_(self.tail, 0.1)

    @property
    def multiple(self) -> int:
        return self.unshuffle * 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.head(self.unshuffle_layer(x))
        skips = []
        for enc, down in zip(self.enc, self.down):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.bottleneck(h)
        feats = [h]
        for l in reversed(range(len(self.dec))):
            h = self.dec[l](self.up[l](h) + skips[l])
            feats.append(h)
        return self.shuffle(self.tail(h)), feats


class UnrolledStudent(ReconModel):
    """Unrolled CNN student (see the module docstring).

    Args:
        preset: ``"tiny"``, ``"small"`` or ``"paper"`` (:data:`STUDENT_PRESETS`).
        task, factor: ``"sr"`` + scale or ``"cs"`` + acceleration.
        **overrides: any preset hyper-parameter (``iterations``, ``unshuffle``, ``channels``,
            ``upsampler_feats``, ``delta_init``, ``eta_init``).

    Attributes:
        delta, eta: learnable ``(K,)`` step sizes and denoiser weights.

    Features: the last iteration's U-Net decoder maps, coarse to fine (``feature_channels`` =
    ``channels[::-1]``).
    """

    kind = "student"

    def __init__(self, preset: str = "tiny", task: str = "sr", factor: int = 4, **overrides):
        hp = resolve_hparams("student", STUDENT_PRESETS, preset, overrides)
        super().__init__(preset, task, factor, hp, overrides)
        K = check_int("iterations", hp["iterations"], minimum=1)
        u = check_int("unshuffle", hp["unshuffle"], minimum=1)
        channels = [check_int("channels[i]", c, minimum=1) for c in hp["channels"]]
        if not channels:
            raise ConfigError("channels must list at least one level")
        self.iterations = K
        self.denoiser = UnshuffledUNet(u, channels)
        self.delta = nn.Parameter(torch.full((K,), float(hp["delta_init"])))
        self.eta = nn.Parameter(torch.full((K,), float(hp["eta_init"])))
        if self.task == "sr":
            nf = check_int("upsampler_feats", hp["upsampler_feats"], minimum=1)
            self.upsampler = nn.Sequential(
                nn.Conv2d(2, nf, 3, padding=1), _act(),
                nn.Conv2d(nf, 2 * self.factor ** 2, 3, padding=1), nn.PixelShuffle(self.factor),
            )
            scale_init_(self.upsampler[2], 0.1)
        else:
            self.upsampler = None

    @property
    def feature_channels(self) -> list[int]:
        return list(reversed(self.denoiser.channels))

    def initial_estimate(self, y: torch.Tensor, op: Operator) -> torch.Tensor:
        """``x_0`` (complex ``(B, 1, H, W)``): ``A^H y``, plus the learned sub-pixel correction for sr."""
        base = op.adjoint(y)
        if self.upsampler is None:
            return base
        return base + channels_to_complex(self.upsampler(complex_to_channels(op.initial(y))))

    def denoise(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``D(x)`` for a complex ``(B, 1, H, W)`` image (any size: padded internally), and the features."""
        H, W = x.shape[-2:]
        inp, _ = pad_to_multiple(complex_to_channels(x), self.denoiser.multiple)
        res, feats = self.denoiser(inp)
        res = crop_to(res, (H, W))
        cropped = []
        for f in feats:  # remove the cells that only cover padding
            r = inp.shape[-1] // f.shape[-1]
            cropped.append(crop_to(f, (math.ceil(H / r), math.ceil(W / r))))
        return x + channels_to_complex(res), cropped

    @torch.no_grad()
    def iterates(self, y: torch.Tensor, op: Operator) -> list[torch.Tensor]:
        """The magnitude of every iterate ``[x_0, x_1, ..., x_K]`` (each ``(B, 1, H, W)``), for the
        notebook: how the unrolled scheme refines the starting image step by step."""
        y = self.check_inputs(y, op)
        x = self.initial_estimate(y, op)
        out = [magnitude(x)]
        for k in range(self.iterations):
            d, _ = self.denoise(x)
            x = x - self.delta[k] * (op.data_grad(x, y) + self.eta[k] * (x - d))
            out.append(magnitude(x))
        return out

    def reconstruct(self, y: torch.Tensor, op: Operator, return_features: bool):
        x = self.initial_estimate(y, op)
        feats: list[torch.Tensor] = []
        for k in range(self.iterations):
            d, feats = self.denoise(x)
            x = x - self.delta[k] * (op.data_grad(x, y) + self.eta[k] * (x - d))
        return magnitude(x), (feats if return_features else [])
