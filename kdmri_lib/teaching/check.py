"""Self-checks for the notebooks' exercises: ``kd.check.<exercise>(answer, ...)`` prints feedback in
a second and returns True (right), False (wrong) or None (not attempted: ``answer is None``).

They never raise on a wrong answer (a headless run of a notebook with the exercises left blank
must finish); the feedback says what was expected and, when it can, why the answer differs.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

__all__ = ["zero_filled", "energy_fraction", "sr_time_saving", "dead_zone_gradient", "pool_kd", "windows", "bias_table",
           "unshuffle_channels", "count", "best_model", "interval_excludes_zero"]


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
    from kdmri_lib.mri.physics import ifft2c

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
    from kdmri_lib.mri.physics import centre_crop

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
    from kdmri_lib.distill.losses import output_distillation

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


def windows(answer, tokens: tuple[int, int], window: int) -> Optional[bool]:
    """Exercise 02-1: attention windows per image on a ``tokens`` grid (padded up to a multiple of ``window``)."""
    if answer is None:
        return _say(None, "set n_windows to the number of attention windows of one image (the solution is below)")
    nh, nw = -(-tokens[0] // window), -(-tokens[1] // window)
    want = nh * nw
    if int(answer) == want:
        return _say(True, f"{nh} x {nw} = {want} windows of {window} x {window} tokens; attention costs "
                          f"{want} x {window ** 4:,} token pairs instead of {(tokens[0] * tokens[1]) ** 2:,}")
    if int(answer) == tokens[0] * tokens[1] // window:
        return _say(False, "windows are 2-D: divide each side by the window size")
    return _say(False, f"expected {want} (ceil({tokens[0]}/{window}) x ceil({tokens[1]}/{window})); got {answer}")


def bias_table(answer, window: int) -> Optional[bool]:
    """Exercise 02-2: entries (per head) of Swin's relative-position bias table for a ``window``."""
    if answer is None:
        return _say(None, "set n_bias to the number of relative offsets in one window (the solution is below)")
    want = (2 * window - 1) ** 2
    if int(answer) == want:
        return _say(True, f"offsets -{window - 1}..{window - 1} on each axis: (2 x {window} - 1)^2 = {want}")
    if int(answer) == window ** 4:
        return _say(False, "that is one bias per token pair; pairs with the same offset share one")
    return _say(False, f"expected {want}; got {answer}")


def unshuffle_channels(answer, r: int, channels: int = 2) -> Optional[bool]:
    """Exercise 03-1: channels of a ``channels``-channel image after ``PixelUnshuffle(r)``."""
    if answer is None:
        return _say(None, "set n_channels to the channel count after pixel-unshuffling (the solution is below)")
    want = channels * r * r
    if int(answer) == want:
        return _say(True, f"{channels} x {r}^2 = {want} channels at 1/{r} of the height and width: the same numbers, "
                          f"{r * r}x fewer positions for every convolution")
    return _say(False, f"each {r} x {r} block of each of the {channels} channels becomes {r * r} channels; got {answer}")


def count(answer, want: int, what: str) -> Optional[bool]:
    """A count read off a model (e.g. exercise 03-2: the learnable step sizes)."""
    if answer is None:
        return _say(None, f"set the answer to the number of {what} (the solution is below)")
    if int(answer) == int(want):
        return _say(True, f"{want} {what}")
    return _say(False, f"expected {want} {what}; got {answer}")


def best_model(answer, rows, metric: str = "PSNR", learned_only: bool = True,
               baselines: tuple = ("zero_filled", "lowres", "bicubic", "zero-filled", "low-res (nearest)")) -> Optional[bool]:
    """Exercise 05-1: the name of the best row (``{"method", metric}`` dicts) by ``metric``."""
    if answer is None:
        return _say(None, "set best to the name of the best learned model (the solution is below)")
    cand = [r for r in rows if not (learned_only and str(r["method"]) in baselines)]
    best = max(cand, key=lambda r: r[metric])
    if str(answer) == str(best["method"]):
        return _say(True, f"{best['method']} ({best[metric]:.2f} dB {metric})")
    names = [str(r["method"]) for r in cand]
    if str(answer) not in names:
        return _say(False, f"{answer!r} is not one of the learned models: {', '.join(names)}")
    return _say(False, f"{answer} has {next(r[metric] for r in cand if str(r['method']) == str(answer)):.2f} dB; "
                       f"another model is higher")


def interval_excludes_zero(answer, lo: float, hi: float) -> Optional[bool]:
    """Exercise 05-2: does a 95 % interval ``[lo, hi]`` of a difference exclude 0 (True / False)?"""
    if answer is None:
        return _say(None, "set significant to True or False (the solution is below)")
    want = bool(lo > 0 or hi < 0)
    if bool(answer) == want:
        return _say(True, f"[{lo:+.3f}, {hi:+.3f}] {'excludes' if want else 'contains'} 0")
    return _say(False, f"look at the signs of the two ends: [{lo:+.3f}, {hi:+.3f}]")
