"""Self-checks for the notebooks' exercises: ``kd.check.<exercise>(answer, ...)`` prints feedback in
a second and returns True (right), False (wrong) or None (not attempted: ``answer is None``).

They never raise on a wrong answer (a headless run of a notebook with the exercises left blank
must finish); the feedback says what was expected and, when it can, why the answer differs.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

__all__ = ["zero_filled", "energy_fraction", "sr_time_saving", "dead_zone_gradient", "pool_kd"]


def _say(ok: Optional[bool], text: str) -> Optional[bool]:
    mark = {True: "right", False: "not yet", None: "not attempted"}[ok]
    print(f"[{mark}] {text}")
    return ok


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def zero_filled(answer, kspace: torch.Tensor, mask: torch.Tensor) -> Optional[bool]:
    """Exercise 01-1: the zero-filled magnitude image ``|ifft2c(mask * kspace)|`` (``mask`` over the
    columns, broadcast over rows)."""
    from .physics import ifft2c

    if answer is None:
        return _say(None, "set my_zero_filled to |ifft2c(kspace * mask)| (the solution is below)")
    want = ifft2c(kspace * mask).abs()
    a = _as_array(answer)
    if a.shape != tuple(want.shape):
        return _say(False, f"expected an image of shape {tuple(want.shape)}, got {a.shape}")
    if np.iscomplexobj(a):
        return _say(False, "that is the complex image: take its magnitude (.abs())")
    err = float(np.abs(a - want.numpy()).max() / max(float(want.max()), 1e-12))
    if err < 1e-4:
        return _say(True, "the zero-filled image: masked k-space, inverse centred FFT, magnitude")
    ref_uncentred = torch.fft.ifft2(kspace * mask, norm="ortho").abs()
    if np.abs(a - ref_uncentred.numpy()).max() / max(float(ref_uncentred.max()), 1e-12) < 1e-4:
        return _say(False, "use the centred transform kd.physics.ifft2c: k-space is stored with its centre in the middle")
    return _say(False, f"largest relative difference from |ifft2c(kspace * mask)| is {err:.3g}")


def energy_fraction(answer, kspace: torch.Tensor, keep: float = 0.10) -> Optional[bool]:
    """Exercise 01-2: the fraction of k-space energy ``sum |k|^2`` in the central ``keep`` of each axis."""
    from .physics import centre_crop

    if answer is None:
        return _say(None, "set centre_energy to the central block's share of sum |k|^2 (the solution is below)")
    H, W = kspace.shape[-2:]
    h, w = max(1, int(round(H * keep))), max(1, int(round(W * keep)))
    e = kspace.abs() ** 2
    want = float(centre_crop(e, (h, w)).sum() / e.sum())
    a = float(answer)
    if abs(a - want) < 0.01:
        return _say(True, f"{want:.1%} of the energy sits in {keep:.0%} x {keep:.0%} = {keep * keep:.1%} of the samples")
    if abs(a - keep * keep) < 1e-3:
        return _say(False, "that is the share of *samples* in the centre; the question asks for the share of energy")
    return _say(False, f"expected about {want:.3f} (the {h} x {w} central block of |k|^2 over the whole sum); got {a:.3f}")


def sr_time_saving(answer, scale: int = 4) -> Optional[bool]:
    """Exercise 01-3: by what factor a low-resolution (``sr`` x``scale``) scan shortens a Cartesian scan."""
    if answer is None:
        return _say(None, "set sr_saving to the factor by which sr x4 shortens the scan (the solution is below)")
    a = float(answer)
    if abs(a - scale) < 1e-6:
        return _say(True, f"x{scale}: scan time is proportional to the phase-encode lines (1/{scale} of them); "
                          f"the readout along each line is nearly free")
    if abs(a - scale * scale) < 1e-6:
        return _say(False, f"{scale * scale}x counts samples; but a line's samples are read out in milliseconds, "
                           f"the time goes into the repetitions, one per phase-encode line")
    return _say(False, f"expected {scale}; got {a:g}")


def dead_zone_gradient(answer) -> Optional[bool]:
    """Exercise 04-1: the per-pixel gradient of ``|S - x| + |S - T|`` when ``x < S < T``."""
    if answer is None:
        return _say(None, "set dz_gradient to d/dS (|S - x| + |S - T|) for x < S < T (the solution is below)")
    a = float(answer)
    if a == 0:
        return _say(True, "sign(S - x) + sign(S - T) = (+1) + (-1) = 0: no gradient at all between truth and teacher")
    return _say(False, f"with x < S < T, sign(S - x) = +1 and sign(S - T) = -1; their sum is not {a:g}")


def pool_kd(answer, S: torch.Tensor, T: torch.Tensor, labelled: torch.Tensor) -> Optional[bool]:
    """Exercise 04-2: ``mean |S - T|`` over the measurement-only samples (``labelled == 0``) only."""
    from .losses import output_distillation

    if answer is None:
        return _say(None, "set my_pool_kd to mean |S - T| over the samples with labelled == 0 (the solution is below)")
    idx = (labelled.reshape(-1) < 0.5).nonzero().flatten()
    if idx.numel() == 0:
        return _say(None, "this batch has no measurement-only sample")
    want = float(output_distillation(S[idx], T[idx]).detach())
    a = float(answer.detach() if isinstance(answer, torch.Tensor) else answer)
    if abs(a - want) <= 1e-6 + 1e-4 * abs(want):
        return _say(True, f"{want:.5f}: the teacher teaches only where there is no ground truth")
    every = float(output_distillation(S, T).detach())
    if abs(a - every) <= 1e-6 + 1e-4 * abs(every):
        return _say(False, "that is the mean over every sample; keep only those with labelled == 0")
    return _say(False, f"expected {want:.5f}; got {a:.5f}")
