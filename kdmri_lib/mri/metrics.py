"""Image-quality metrics, exactly as ``fastmri.evaluate`` defines them.

fastMRI's definitions (reused, not re-derived):

* ``nmse(gt, pred) = ||gt - pred||^2 / ||gt||^2`` over a whole volume;
* ``psnr(gt, pred)`` with ``data_range = gt.max()`` of the *volume*;
* ``ssim(gt, pred)`` = mean over slices of scikit-image's SSIM with ``data_range = gt.max()``
  of the volume (7x7 window).

Arrays are NumPy ``(slices, H, W)`` magnitude volumes. The per-slice variants keep the volume
maximum as data range, so their mean over slices is comparable with the volume figures.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from fastmri import evaluate as _fe

METRIC_NAMES = ("PSNR", "SSIM", "NMSE")


def _as_volume(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    a = np.asarray(a, dtype=np.float64 if np.asarray(a).dtype == np.float64 else np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must be a (slices, H, W) volume; got shape {a.shape}")
    return a


def _scalar(v) -> float:
    """fastMRI's ssim returns a 1-element array; NumPy 2 refuses float() on it."""
    return float(np.asarray(v, dtype=np.float64).reshape(-1)[0])


def volume_metrics(gt, pred, maxval: Optional[float] = None) -> dict[str, float]:
    """PSNR / SSIM / NMSE of one volume with fastMRI's functions.

    Args:
        gt, pred: ``(slices, H, W)`` (or ``(slices, 1, H, W)``, or one ``(H, W)`` slice) arrays or tensors.
        maxval: data range; the volume maximum of ``gt`` when None (fastMRI's choice).
    """
    gt, pred = _as_volume(gt, "gt"), _as_volume(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    maxval = float(gt.max()) if maxval is None else float(maxval)
    return {
        "PSNR": _scalar(_fe.psnr(gt, pred, maxval=maxval)),
        "SSIM": _scalar(_fe.ssim(gt, pred, maxval=maxval)),
        "NMSE": _scalar(_fe.nmse(gt, pred)),
    }


def slice_metrics(gt, pred, maxval: Optional[float] = None) -> list[dict[str, float]]:
    """Per-slice PSNR / SSIM / NMSE, each with the *volume* maximum as data range (for plots)."""
    gt, pred = _as_volume(gt, "gt"), _as_volume(pred, "pred")
    maxval = float(gt.max()) if maxval is None else float(maxval)
    out = []
    for i in range(gt.shape[0]):
        g, p = gt[i: i + 1], pred[i: i + 1]
        out.append({
            "PSNR": _scalar(_fe.psnr(g, p, maxval=maxval)),
            "SSIM": _scalar(_fe.ssim(g, p, maxval=maxval)),
            "NMSE": _scalar(_fe.nmse(g, p)),
        })
    return out


class MetricAggregator:
    """Mean and standard deviation of volume metrics over many volumes.

    Wraps ``fastmri.evaluate.Metrics`` (MSE, NMSE, PSNR, SSIM with running statistics), so the
    numbers are those of fastMRI's own ``evaluate``.
    """

    def __init__(self):
        self._metrics = _fe.Metrics(_fe.METRIC_FUNCS)
        self.count = 0

    def push(self, gt, pred) -> None:
        """Add one volume ``(slices, H, W)``."""
        gt, pred = _as_volume(gt, "gt"), _as_volume(pred, "pred")
        if gt.shape != pred.shape:
            raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
        self._metrics.push(gt, pred)
        self.count += 1

    def push_values(self, values) -> None:
        """Add one volume's precomputed metric values (a mapping with ``MSE``, ``NMSE``, ``PSNR``,
        ``SSIM``, as fastMRI's ``METRIC_FUNCS`` compute them). Pushing the values of the same volumes
        in the same order gives exactly the numbers of :meth:`push` (used to reduce metrics that
        several processes computed)."""
        missing = [k for k in self._metrics.metrics if k not in values]
        if missing:
            raise ValueError(f"push_values needs every metric ({', '.join(self._metrics.metrics)}); missing {missing}")
        for k, stat in self._metrics.metrics.items():
            stat.push(float(values[k]))
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: _scalar(v) for k, v in self._metrics.means().items()}

    def stddevs(self) -> dict[str, float]:
        return {k: _scalar(v) for k, v in self._metrics.stddevs().items()}

    def __repr__(self) -> str:
        return repr(self._metrics)
