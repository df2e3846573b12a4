r"""Anatomical variety for training: a random geometric warp of a whole slice *before* it is measured.

The demo data hold one anatomy (the MNI152 template, in two contrasts and three orientations), so
a model can learn that one head. :func:`augment_slice` draws a random similarity transform
(left-right flip, rotation, isotropic scaling, shift) and applies it to the complex ground-truth
image and to its magnitude target alike; the acquisition is then simulated from the warped image
by :meth:`~kdmri_lib.datasets.data.SliceTransform.make_sample`, so every training sample stays the
measurement of a whole slice, with its own operator (no wrap-around, exact data consistency).

Conventions: ``image`` complex ``(H, W)``, ``target`` float ``(H, W)``; the warp samples bicubically
(:func:`torch.nn.functional.grid_sample`, ``align_corners=False``); outside the field of view it
repeats the border pixels (``padding_mode="border"``), so a neck that leaves the field of view does
not end in an edge no scanner would see.
Random numbers come from torch's global RNG, like the ``cs`` training masks and the natural-image
crops, so a seeded epoch draws the same warps again (exact resume).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdmri_lib.core.errors import ConfigError

#: default ranges: rotation in degrees (+-), scale factor, shift as a fraction of the field of view (+-)
ROTATION_DEG = 12.0
SCALE = (0.88, 1.12)
SHIFT = 0.05


def random_theta(rotation_deg: float = ROTATION_DEG, scale: tuple[float, float] = SCALE, shift: float = SHIFT,
                 flip: bool = True) -> torch.Tensor:
    """A random ``(2, 3)`` affine matrix for :func:`torch.nn.functional.affine_grid` (output -> input
    coordinates, normalised to [-1, 1]): flip (p = 0.5), rotation, isotropic scale, shift."""
    if rotation_deg < 0 or shift < 0 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"augmentation ranges: rotation_deg >= 0, shift >= 0 and 0 < scale[0] <= scale[1]; got "
                          f"rotation_deg={rotation_deg}, scale={scale}, shift={shift}")
    u = torch.rand(5)
    angle = math.radians(rotation_deg) * (2 * float(u[0]) - 1)
    s = scale[0] + (scale[1] - scale[0]) * float(u[1])
    tx, ty = (shift * (2 * float(u[2]) - 1), shift * (2 * float(u[3]) - 1))
    sign = -1.0 if (flip and float(u[4]) < 0.5) else 1.0
    c, si = math.cos(angle) / s, math.sin(angle) / s
    # input = R(angle) / s @ diag(sign, 1) @ output + shift
    return torch.tensor([[c * sign, -si, tx], [si * sign, c, ty]], dtype=torch.float32)


def warp(image: torch.Tensor, target: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a complex ``(H, W)`` image and its ``(H, W)`` magnitude target with one affine ``theta``.

    The real and imaginary parts are sampled separately (the phase of MR images is smooth); the
    target is clamped at 0 (bicubic sampling can undershoot at edges)."""
    if image.shape != target.shape or image.dim() != 2:
        raise ConfigError(f"warp needs an (H, W) image and a target of the same shape; got {tuple(image.shape)} "
                          f"and {tuple(target.shape)}")
    H, W = image.shape
    grid = F.affine_grid(theta[None].to(torch.float32), [1, 1, H, W], align_corners=False)
    stack = torch.stack([image.real, image.imag, target.to(image.real.dtype)])[None]
    out = F.grid_sample(stack, grid, mode="bicubic", padding_mode="border", align_corners=False)[0]
    return torch.complex(out[0], out[1]).to(torch.complex64), out[2].clamp_min(0.0)


def augment_slice(image: torch.Tensor, target: torch.Tensor, **ranges) -> tuple[torch.Tensor, torch.Tensor]:
    """One random warp (:func:`random_theta`, keyword ranges passed on) of a slice and its target."""
    return warp(image, target, random_theta(**ranges))
