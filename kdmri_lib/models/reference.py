r"""A CHPNet-like re-creation of the *released* student, for profiling only.

Written here from the architecture of the public CHPNet code (``model.py`` of the paper's
repository), so that ``make bench`` can *measure* what the released student costs next to ours
instead of quoting a number. It is not a reconstruction model of this toolkit (not in
:func:`kdmri_lib.models.build_model`, not trained anywhere) and it keeps the released layout,
including what we fix in :class:`~kdmri_lib.models.student.UnrolledStudent`:

* input: the low-resolution *magnitude* (1 channel); ``x_0 = PixelShuffle_s(conv3x3(1 -> s^2))``;
* 6 unrolled iterations of one shared 4-level U-Net that runs **at full resolution** with 64
  channels everywhere: per level three 3x3 convolutions and a stride-2 3x3 convolution; a 3x3
  bottleneck convolution; decoder levels up-sample with **transposed convolutions** (3x3,
  stride 2), concatenate the skip, then 1x1 + four 3x3 convolutions; a final 3x3 conv to 1 channel;
  ``v = U(x) + x``;
* the data term is the released approximation: ``PixelShuffle_s(conv3x3(bicubic_down(x) - lowres))``
  (shares the initial up-sampling conv), ``x <- x - delta_k (err + eta_k (x - v))``;
* the released code defines four down-sampling convolutions but its forward pass re-uses the
  first two on levels 3 and 4; the other two are kept (unused) so that the parameter count
  matches the released 1.36M.

For ``cs`` (which the released code does not handle) the same network runs with ``s = 1`` on the
zero-filled magnitude, and the data term uses ``|A^H y|`` as the "low-resolution" image: a
stand-in with the same cost, labelled as such in the benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdmri_lib.models.common import ReconModel, magnitude
from kdmri_lib.mri.physics import Operator


def _convs(c_in: int, n: int, c: int = 64, last_act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(c_in if i == 0 else c, c, 3, padding=1))
        if last_act or i < n - 1:
            layers.append(nn.ReLU())
    return layers


class CHPNetLike(ReconModel):
    """CHPNet-like re-creation of the released student (profiling reference; see the module docstring)."""

    kind = "chpnet_like"
    ITERATIONS = 6

    def __init__(self, task: str = "sr", factor: int = 4, preset: str = "released"):
        super().__init__("released", task, factor)
        self.s = self.factor if self.task == "sr" else 1
        c = 64
        self.enc = nn.ModuleList(nn.Sequential(*_convs(1 if l == 0 else c, 3)) for l in range(4))
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU()) for _ in range(4))
        self.encoder_end = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1) for _ in range(4))
        self.dec = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * c, c, 1), nn.ReLU(), *_convs(c, 4, last_act=False)) for _ in range(4))
        self.dec_end = nn.Conv2d(c, 1, 3, padding=1)
        self.conv_up = nn.Conv2d(1, self.s ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.s)
        self.delta = nn.Parameter(torch.full((self.ITERATIONS,), 0.1))
        self.eta = nn.Parameter(torch.full((self.ITERATIONS,), 0.9))

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for l in range(4):
            h = self.enc[l](h)
            skips.append(h)
            h = self.down[l % 2](h)  # as released: levels 3 and 4 re-use the first two down convs
        h = self.encoder_end(h)
        for l in reversed(range(4)):
            h = self.up[l](h, output_size=skips[l].shape)
            h = self.dec[l](torch.cat([h, skips[l]], dim=1))
        return self.dec_end(h)

    def reconstruct(self, y: torch.Tensor, op: Operator, return_features: bool):
        low = magnitude(op.initial(y)) if self.task == "sr" else magnitude(op.adjoint(y))
        x = self.shuffle(self.conv_up(low))
        for k in range(self.ITERATIONS):
            v = self._unet(x) + x
            down = F.interpolate(x, scale_factor=1 / self.s, mode="bicubic", align_corners=False) if self.s > 1 else x
            err = self.shuffle(self.conv_up(down - low))
            x = x - self.delta[k] * (err + self.eta[k] * (x - v))
        return x, []
