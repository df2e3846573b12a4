"""Figures for the notebooks (matplotlib, headless-safe).

All functions take NumPy arrays or tensors (``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)``),
return a ``matplotlib.figure.Figure`` and never call ``plt.show()``: a notebook displays the
returned figure, a script saves it with :func:`save_figure` (atomic write).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        a = a.abs() if a.is_complex() else a
        a = a.float().numpy()
    a = np.asarray(a)
    if np.iscomplexobj(a):
        a = np.abs(a)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _figure(nrows: int, ncols: int, size: float = 2.6, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * ncols, size * nrows + 0.5), **kw)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def kspace_log(k) -> np.ndarray:
    """``log(1 + |k| / median)`` for displaying k-space (a dynamic range the eye can read)."""
    if hasattr(k, "detach"):
        k = k.detach().cpu().numpy()
    a = np.abs(np.asarray(k))
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    ref = np.median(a[a > 0]) if (a > 0).any() else 1.0
    return np.log1p(a / ref)


def show_images(images: Mapping[str, object], ncols: Optional[int] = None, cmap: str = "gray",
                vmax: Optional[float] = None, size: float = 2.6, suptitle: Optional[str] = None):
    """A grid of images with titles; magnitudes of complex inputs. ``vmax`` shared if given."""
    names = list(images)
    ncols = ncols or len(names)
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = _figure(nrows, ncols, size)
    for ax, name in zip(axes.flat, names):
        img = _np(images[name])
        ax.imshow(img, cmap=cmap, vmin=0 if vmax is not None else None, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def sobel_magnitude(img) -> np.ndarray:
    """Gradient magnitude (Sobel) of an image, for edge maps."""
    from scipy import ndimage

    a = _np(img).astype(np.float64)
    return np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))


def compare_reconstructions(target, recons: Mapping[str, object], inset: Optional[Sequence[int]] = None,
                            metrics: Optional[Mapping[str, Mapping[str, float]]] = None, errors: bool = True,
                            edges: bool = False, size: float = 2.4, err_vmax: Optional[float] = None):
    """Reconstructions side by side, with a zoomed inset, error maps and (optionally) edge maps.

    Args:
        target: ground truth ``(H, W)``.
        recons: name -> reconstruction ``(H, W)``.
        inset: ``(top, left, height, width)`` of a zoom box drawn on every image (None: no zoom).
        metrics: name -> {"PSNR": .., "SSIM": ..} shown under the titles.
        errors: add a row of ``|recon - target|``; ``edges``: add a row of Sobel edge maps.
    """
    from matplotlib.patches import Rectangle

    t = _np(target)
    cols = {"target": t, **{k: _np(v) for k, v in recons.items()}}
    rows = 1 + int(inset is not None) + int(errors) + int(edges)
    fig, axes = _figure(rows, len(cols), size)
    vmax = float(t.max())
    err_vmax = err_vmax or 0.2 * vmax
    t_edges = sobel_magnitude(t) if edges else None
    for j, (name, img) in enumerate(cols.items()):
        r = 0
        ax = axes[r, j]
        ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
        title = name
        if metrics and name in metrics:
            m = metrics[name]
            title += f"\n{m.get('PSNR', float('nan')):.2f} dB / {m.get('SSIM', float('nan')):.3f}"
        ax.set_title(title, fontsize=8)
        if inset is not None:
            top, left, h, w = inset
            ax.add_patch(Rectangle((left, top), w, h, fill=False, ec="yellow", lw=1))
            r += 1
            axes[r, j].imshow(img[top: top + h, left: left + w], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            if j == 0:
                axes[r, j].set_ylabel("zoom", fontsize=8)
        if errors:
            r += 1
            if name == "target":
                axes[r, j].axis("off")
            else:
                err_im = axes[r, j].imshow(np.abs(img - t), cmap="inferno", vmin=0, vmax=err_vmax)
                err_row = r
                if j == 1:
                    axes[r, j].set_ylabel("|error|", fontsize=8)
        if edges:
            r += 1
            e = sobel_magnitude(img)
            axes[r, j].imshow(e if name == "target" else np.abs(e - t_edges), cmap="magma")
            if j <= 1:
                axes[r, j].set_ylabel("edges" if j == 0 else "|edge error|", fontsize=8)
    fig.tight_layout()
    if errors and len(cols) > 1:   # one colour scale for every error map: its bar where the target has none
        cax = axes[err_row, 0].inset_axes([0.5, 0.05, 0.08, 0.9])
        fig.colorbar(err_im, cax=cax)
        cax.tick_params(labelsize=7)
        axes[err_row, 0].text(0.42, 0.5, "|error|,\nshared\nscale", transform=axes[err_row, 0].transAxes,
                              ha="right", va="center", fontsize=7)
    return fig


def training_curves(history, keys: Sequence[str] = ("train_loss", "val_PSNR"), title: Optional[str] = None,
                    baselines: Optional[Mapping[str, Mapping[str, float]]] = None):
    """Line plots of per-epoch metrics.

    Args:
        history: one run's history (list of dicts with an ``epoch`` key), or ``{label: history}`` to
            overlay several runs (e.g. the student alone and the distilled student).
        keys: the metrics, one panel each (missing ones are skipped).
        title: figure title.
        baselines: ``{key: {label: value}}`` horizontal reference lines (e.g. the zero-filled and
            the teacher's validation PSNR), drawn dashed and labelled.
    """
    from matplotlib.figure import Figure

    runs = dict(history) if isinstance(history, Mapping) else {None: history}
    keys = [k for k in keys if any(k in h for hist in runs.values() for h in hist)]
    fig = Figure(figsize=(4 * max(len(keys), 1), 3))
    axes = fig.subplots(1, max(len(keys), 1), squeeze=False)[0]
    for ax, k in zip(axes, keys):
        for label, hist in runs.items():
            xs = [h.get("epoch", i + 1) for i, h in enumerate(hist) if k in h]
            ys = [h[k] for h in hist if k in h]
            ax.plot(xs, ys, marker="o", ms=3, label=label)
        for j, (label, v) in enumerate(((baselines or {}).get(k) or {}).items()):
            ax.axhline(v, ls="--", lw=0.9, color=f"C{len(runs) + j}", label=f"{label} ({v:.2f})")
        ax.set_xlabel("epoch")
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3)
        if len(runs) > 1 or (baselines or {}).get(k):
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_to_png(fig, dpi: int = 80) -> bytes:
    """Render a figure to PNG bytes (Agg canvas, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a figure atomically (temporary file in the same folder, then rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from kdmri_lib.core.atomic import atomic_write

    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return path


def table(rows: Sequence[Mapping[str, object]], digits: Optional[Mapping[str, int]] = None):
    """A pandas DataFrame from a list of dicts, numbers rounded per column (``digits``)."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for col, d in (digits or {}).items():
        if col in df:
            df[col] = df[col].astype(float).round(d)
    return df


def window_partitions(image, window: int = 8, shift: Optional[int] = None, size: float = 3.2):
    """The low-resolution input with the Swin windows drawn on it: regular (left) and shifted by
    ``shift`` (default ``window // 2``) tokens (right). One token = one pixel of the input."""
    from matplotlib.patches import Rectangle

    img = _np(image)
    h, w = img.shape
    shift = window // 2 if shift is None else shift
    fig, axes = _figure(1, 2, size)
    for ax, s, title in ((axes[0, 0], 0, f"windows of {window}x{window} tokens"),
                         (axes[0, 1], shift, f"shifted by {shift} (next layer)")):
        ax.imshow(img, cmap="gray")
        for top in range(-s, h, window):
            for left in range(-s, w, window):
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), window, window, fill=False, ec="yellow", lw=0.8))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def attention_overlay(image, maps: Mapping[str, object], queries: Sequence[Sequence[int]], ncols: int = 3,
                      size: float = 2.6):
    """Attention maps drawn over the token-grid image: one panel per map, the query marked.

    Args:
        image: ``(h, w)`` image on the token grid (e.g. the low-resolution input).
        maps: title -> ``(h, w)`` attention weights of one query (e.g. ``AttentionMaps.query``).
        queries: ``(row, col)`` of each map's query, in the same order.
    """
    names = list(maps)
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = _figure(nrows, ncols, size)
    img = _np(image)
    for ax, name, (r, c) in zip(axes.flat, names, queries):
        a = _np(maps[name])
        ax.imshow(img, cmap="gray")
        ax.imshow(np.ma.masked_where(a <= 0, a), cmap="magma", alpha=0.75)
        ax.plot([c], [r], marker="+", color="cyan", ms=10, mew=2)
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def step_curves(steps, keys: Optional[Sequence[str]] = None, smooth: int = 20, title: Optional[str] = None):
    """Per-step training logs (a ``steps.csv`` path or a list of dicts) on the run's global step
    axis: the loss terms (left: the student's ``loss`` and its terms that carry a weight, the
    teacher's ``t_*`` terms; ``keys`` chooses others) smoothed by a running mean over ``smooth`` steps, and every weight
    whose name starts with ``w_`` or equals ``dynamic`` (right)."""
    import pandas as pd
    from matplotlib.figure import Figure

    df = pd.read_csv(steps) if isinstance(steps, (str, os.PathLike)) else pd.DataFrame(list(steps))
    x = df["global_step"] if "global_step" in df else (df["step"] if "step" in df else np.arange(len(df)))
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    weights = [c for c in numeric if c.startswith("w_") or c in ("dynamic", "gamma")]
    terms = ("loss", "rec", "edge", "kd", "feat", "att", "t_loss", "t_rec", "t_edge", "t_feedback", "t_rehearsal")
    off = {c for c in terms if f"w_{c}" in df and not df[f"w_{c}"].abs().sum()}   # logged, but weight 0 throughout
    losses = [c for c in (keys or terms) if c in numeric and c not in weights and c not in off and df[c].abs().sum() > 0]
    fig = Figure(figsize=(10, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    for c in losses:
        ax1.plot(x, df[c].rolling(smooth, min_periods=1).mean(), label=c, lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("global step")
    ax1.set_title("loss terms (running mean)", fontsize=9)
    ax1.legend(fontsize=7, ncol=2)
    for c in weights:
        ax2.plot(x, df[c], label=c, lw=1)
    ax2.set_xlabel("global step")
    ax2.set_title("weights", fontsize=9)
    if weights:
        ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_psf(psfs: Mapping[str, object], size: float = 3.2):
    """Point-spread functions (:func:`kdmri_lib.mri.masks.point_spread`), one panel each, offset
    from the centre on the x axis, peak 1."""
    fig, axes = _figure(1, len(psfs), size)
    for ax, (name, psf) in zip(axes[0], psfs.items()):
        p = _np(psf).reshape(-1)
        ax.plot(np.arange(len(p)) - len(p) // 2, p, lw=0.9)
        ax.set_ylim(0, 1.05)
        ax.set_xticks([-(len(p) // 2), 0, len(p) // 2])
        ax.set_yticks([0, 0.5, 1])
        ax.set_xlabel("offset (pixels, phase-encode direction)", fontsize=8)
        ax.set_title(f"PSF: {name}", fontsize=9)
    fig.tight_layout()
    return fig


def metric_boxplot(values: Mapping[str, Sequence[float]], metric: str = "PSNR", title: Optional[str] = None):
    """Box plots of a per-slice metric for several methods (one box per method)."""
    from matplotlib.figure import Figure

    names = list(values)
    fig = Figure(figsize=(max(4.0, 1.1 * len(names) + 1), 3.4))
    ax = fig.subplots()
    ax.boxplot([list(values[n]) for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(metric + (" (dB)" if metric == "PSNR" else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"per-slice {metric} on the held-out slices", fontsize=9)
    fig.tight_layout()
    return fig


def tradeoff(rows: Sequence[Mapping], x: str = "GFLOPs", y: str = "PSNR", size: str = "params",
             title: Optional[str] = None, costs: Optional[Mapping[str, Mapping]] = None):
    """Quality against cost (the scatter of papers): one point per method, ``x`` on a log axis,
    marker area proportional to ``size``; methods without cost (baselines) are drawn at the left.
    ``costs``: ``{label: {x: value}}`` of models with a cost but no measured quality (not trained
    here), drawn as labelled dashed vertical lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    xs = [r.get(x) or 0.0 for r in rows]
    positive = [v for v in xs if v > 0]
    floor = min(positive) / 3 if positive else 1e-3
    smax = max((r.get(size) or 0) for r in rows) or 1
    ys = [r[y] for r in rows]
    yrange = (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for r, xv in zip(rows, xs):
        xv = xv if xv > 0 else floor
        area = 30 + 400 * (r.get(size) or 0) / smax
        ax.scatter([xv], [r[y]], s=area, alpha=0.6)
        # labels of (nearly) coinciding points are stacked instead of printed over each other
        near = sum(abs(px - xv) <= 0.05 * xv and abs(py - r[y]) <= 0.04 * yrange for px, py in placed)
        placed.append((xv, r[y]))
        ax.annotate(r.get("method", ""), (xv, r[y]), textcoords="offset points", xytext=(5, 4 - 9 * near), fontsize=7)
    for label, c in (costs or {}).items():
        ax.axvline(c[x], ls="--", lw=0.8, color="gray")
        ax.annotate(f"{label}\n(cost only, not trained here)", (c[x], min(ys)), textcoords="offset points",
                    xytext=(-3, 2), fontsize=6, rotation=90, ha="right", va="bottom", color="dimgray")
    ax.set_xscale("log")
    ax.set_xlabel(x + (" (log; baselines at the left edge)" if positive and len(positive) < len(xs) else " (log)"))
    ax.set_ylabel(y + (" (dB)" if y == "PSNR" else ""))
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{y} against {x} (marker area: {size})", fontsize=9)
    fig.tight_layout()
    return fig
