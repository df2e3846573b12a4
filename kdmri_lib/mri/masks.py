"""Cartesian under-sampling masks: thin wrappers around ``fastmri.data.subsample``.

A mask selects k-space *columns* (phase-encoding lines, the last axis ``W`` of a ``(H, W)``
k-space). It is returned as a float32 tensor of shape ``(W,)`` with ones on measured columns.
fastMRI's conventions apply: the fully-sampled centre holds ``round(W * center_fraction)``
columns, and the "random" mask samples the other columns with the probability that makes the
*expected* acceleration equal the requested one.
"""

from __future__ import annotations

from typing import Optional

import torch
from fastmri.data import subsample

from kdmri_lib.core.errors import ConfigError, check_choice, check_float, check_int

MASK_TYPES = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")

#: fastMRI's default centre fraction for each acceleration.
DEFAULT_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's centre fraction: 0.08 for 4x, 0.04 for 8x; ``0.32 / acceleration`` otherwise."""
    if acceleration in DEFAULT_CENTER_FRACTIONS:
        return DEFAULT_CENTER_FRACTIONS[int(acceleration)]
    return 0.32 / float(acceleration)


def mask_func(mask_type: str, acceleration: int, center_fraction: Optional[float] = None) -> subsample.MaskFunc:
    """A fastMRI ``MaskFunc`` for one (acceleration, centre fraction) pair."""
    check_choice("mask_type", mask_type, MASK_TYPES)
    acceleration = check_int("acceleration", acceleration, minimum=1)
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    center_fraction = check_float("center_fraction", center_fraction, minimum=0.0, maximum=1.0)
    if center_fraction > 1.0 / acceleration:
        raise ConfigError(
            f"center_fraction {center_fraction} samples more than 1/acceleration = {1.0 / acceleration:.3f} "
            f"of the columns; choose center_fraction <= {1.0 / acceleration:.3f}"
        )
    return subsample.create_mask_for_mask_type(mask_type, [center_fraction], [acceleration])


def make_mask(
    width: int,
    acceleration: int = 4,
    center_fraction: Optional[float] = None,
    mask_type: str = "random",
    seed: Optional[int | tuple] = 0,
    offset: Optional[int] = None,
) -> torch.Tensor:
    """Sample one column mask.

    Args:
        width: number of k-space columns ``W``.
        acceleration: requested under-sampling factor (>= 1; 1 means fully sampled).
        center_fraction: fraction of fully-sampled central columns (fastMRI default if None).
        mask_type: one of :data:`MASK_TYPES`.
        seed: integer or tuple seed (fastMRI uses ``tuple(map(ord, fname))`` for validation);
            ``None`` draws a fresh random mask.
        offset: first sampled column of equispaced masks (random if None).

    Returns:
        float32 tensor ``(W,)`` of zeros and ones.
    """
    width = check_int("width", width, minimum=2)
    acceleration = check_int("acceleration", acceleration, minimum=1)
    seed = check_seed(seed)
    if acceleration == 1:
        return torch.ones(width, dtype=torch.float32)
    if acceleration > width:
        raise ConfigError(f"acceleration {acceleration} is larger than the number of k-space columns ({width}): "
                          f"it would measure less than one column; use a smaller acceleration or a larger image")
    func = mask_func(mask_type, acceleration, center_fraction)
    if mask_type.startswith("magic") and width % acceleration:
        raise ConfigError(f"the 'magic' masks need a width divisible by the acceleration; got width {width}, acceleration {acceleration}")
    mask, _ = func((1, width, 1), offset=offset, seed=seed)
    mask = mask.reshape(width).to(torch.float32)
    if not bool(mask.any()):
        cf = center_fraction if center_fraction is not None else default_center_fraction(acceleration)
        raise ConfigError(f"the {mask_type} mask for {width} columns at acceleration {acceleration} measures no column "
                          f"(its fully-sampled centre, round({width} x center_fraction {cf:g}), is empty); use a larger "
                          f"image or patch, a smaller acceleration or a larger center_fraction")
    return mask


def check_seed(seed):
    """A mask seed as fastMRI's ``MaskFunc`` takes it: ``None``, an integer in ``[0, 2**32)`` or a
    non-empty tuple of such integers (e.g. :func:`fname_seed`); else :class:`ConfigError`."""
    if seed is None:
        return None
    if isinstance(seed, (list, tuple)):
        if not seed or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in seed):
            raise ConfigError(f"mask seed must be None, an integer in [0, 2**32) or a non-empty tuple of them; got {seed!r}")
        return tuple(seed)
    return check_int("mask seed", seed, minimum=0, maximum=2**32 - 1)


def realised_acceleration(mask: torch.Tensor) -> float:
    """Columns / measured columns of a ``(..., W)`` mask (averaged over leading dims)."""
    m = mask.reshape(-1, mask.shape[-1]).float()
    return float((m.shape[-1] / m.sum(-1)).mean())


def fname_seed(fname: str) -> tuple:
    """fastMRI's deterministic per-file validation seed."""
    return tuple(map(ord, str(fname)))


def budget_mask(width: int, lines: int, center_lines: int, mask_type: str = "random", seed: int = 0) -> torch.Tensor:
    """A column mask that measures exactly ``lines`` columns (scan time is proportional to them):
    the ``center_lines`` central columns, and the rest spread over the outer columns — evenly
    (``"equispaced"``) or uniformly at random (``"random"``, seeded). fastMRI's masks at one nominal
    acceleration measure different numbers of columns (its equispaced x4 mask 31 % of them, its
    random one 25 % on average); this mask compares mask *shapes* at an equal budget.

    Returns:
        float32 tensor ``(W,)`` of zeros and ones with ``lines`` ones.
    """
    width = check_int("width", width, minimum=2)
    lines = check_int("lines", lines, minimum=1, maximum=width)
    center_lines = check_int("center_lines", center_lines, minimum=0, maximum=lines)
    check_choice("mask_type", mask_type, ("random", "equispaced"))
    mask = torch.zeros(width, dtype=torch.float32)
    start = (width - center_lines + 1) // 2
    mask[start:start + center_lines] = 1.0
    outer = torch.nonzero(mask == 0).reshape(-1)
    k = lines - center_lines
    if k:
        if mask_type == "equispaced":
            pick = ((2 * torch.arange(k) + 1) * len(outer)) // (2 * k)   # k distinct, evenly spaced
        else:
            g = torch.Generator().manual_seed(int(seed))
            pick = torch.randperm(len(outer), generator=g)[:k]
        mask[outer[pick]] = 1.0
    return mask


def point_spread(mask: torch.Tensor) -> torch.Tensor:
    """The point-spread function of a column mask along the phase-encode direction: ``|F^-1 m|``
    (centred, orthonormal), scaled to a peak of 1. A point in the image becomes this profile:
    equispaced gaps give sharp side peaks (coherent ghosts), random gaps a low, noise-like floor.

    Returns:
        float32 tensor ``(W,)``.
    """
    m = torch.as_tensor(mask, dtype=torch.float32).reshape(-1)
    p = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(m.to(torch.complex64)), norm="ortho")).abs()
    return (p / p.max().clamp_min(1e-12)).float()


def side_lobe(psf, main: int = 2) -> float:
    """The largest side lobe of a point-spread function (:func:`point_spread`), relative to its peak:
    the maximum outside the ``2 * main + 1`` samples around the peak. High (near 1): coherent ghosts;
    low: incoherent aliasing."""
    p = torch.as_tensor(psf, dtype=torch.float32).reshape(-1)
    c = int(p.argmax())
    rest = torch.cat([p[: max(c - main, 0)], p[c + main + 1:]])
    return float(rest.max() / p.max()) if rest.numel() else 0.0
