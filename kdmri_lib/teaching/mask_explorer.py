"""The acquisition explorer of notebook 01: :func:`acquisition_view` (one simulated acquisition and
its simplest reconstruction, tested without widgets), :func:`acquisition_figure` and
:class:`MaskExplorer`."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from kdmri_lib.mri import metrics as _metrics
from kdmri_lib.mri import physics
from kdmri_lib.mri.masks import MASK_TYPES, budget_mask, default_center_fraction, point_spread
from kdmri_lib.teaching.explorer_base import _Explorer, _widgets, single_thread
from kdmri_lib.teaching.viz import _figure, fig_to_png, kspace_log


def acquisition_view(image: torch.Tensor, task: str = "cs", scale: int = 4, acceleration: int = 4,
                     mask_type: str = "random", center_fraction: Optional[float] = None, seed: int = 0,
                     target: Optional[torch.Tensor] = None, noise: float = 0.0, equal_budget: bool = False) -> dict:
    """Simulate one acquisition of a complex image and its simplest reconstruction.

    Args:
        image: complex (or real) ``(H, W)`` ground-truth image.
        task: ``"sr"`` (central k-space block, factor ``scale``) or ``"cs"`` (column mask,
            factor ``acceleration``, ``mask_type``, ``center_fraction``, ``seed``).
        target: magnitude ground truth for the metrics (``|image|`` if None).
        noise: standard deviation of complex Gaussian noise added to every measured sample, as a
            fraction of the image's RMS magnitude (the orthonormal FFT keeps that scale; seeded).
        equal_budget: ``cs`` only: measure exactly ``round(W / acceleration)`` columns
            (:func:`kdmri_lib.mri.masks.budget_mask`; random or equispaced outside the centre), so
            that two mask types are compared at the same scan time; fastMRI's masks measure
            different numbers of columns at one nominal acceleration.

    Returns:
        dict with ``sampling`` (H, W) 0/1 map of the measured k-space samples, ``kspace`` the
        measured k-space (zeros elsewhere, full size), ``recon`` the zero-filled magnitude
        (``sr``: the zero-padded, i.e. sinc-interpolated, low-res image), ``error``
        ``|recon - target|``, ``metrics`` (PSNR, SSIM, NMSE via fastMRI), ``acceleration``
        (realised: all samples / measured samples), ``lines`` / ``columns`` (measured phase-encode
        lines of ``W``: scan time is proportional to them), ``psf`` (``(W,)`` point-spread function
        along the phase-encode direction, peak 1) and ``op``.
    """
    with single_thread():
        return _acquisition_view(image, task, scale, acceleration, mask_type, center_fraction, seed, target,
                                 noise, equal_budget)


def _cs_operator(H, W, acceleration, mask_type, cf, seed, equal_budget):
    if not equal_budget:
        return physics.build_operator("cs", acceleration, (H, W), seed=seed, mask_type=mask_type, center_fraction=cf)
    kind = "equispaced" if mask_type.startswith("equispaced") else "random"
    lines = max(1, round(W / acceleration))
    mask = budget_mask(W, lines, min(round(W * cf), lines), kind, seed)
    return physics.build_operator("cs", acceleration, (H, W), mask=mask)


def _acquisition_view(image, task, scale, acceleration, mask_type, center_fraction, seed, target, noise=0.0,
                      equal_budget=False) -> dict:
    x = physics.to_complex(torch.as_tensor(image))[None, None]
    H, W = x.shape[-2:]
    tgt = (x.abs()[0, 0] if target is None else torch.as_tensor(target).float()).numpy()
    if task == "sr":
        op = physics.build_operator("sr", scale, (H, W))
        columns = physics.centre_pad(torch.ones(1, W // scale), (1, W))[0]
    else:
        cf = default_center_fraction(acceleration) if center_fraction is None else center_fraction
        op = _cs_operator(H, W, acceleration, mask_type, cf, seed, equal_budget)
        columns = op.mask.reshape(-1)
    y = op.forward(x)
    if noise > 0:
        g = torch.Generator().manual_seed(int(seed) + 7919)
        sigma = float(noise) * float(x.abs().pow(2).mean().sqrt()) / 2 ** 0.5
        y = y + sigma * torch.complex(torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g))
    if task == "sr":
        recon = op.adjoint(y).abs()[0, 0]
        kfull = physics.centre_pad(y, (H, W))[0, 0]
        sampling = physics.centre_pad(torch.ones(op.meas_shape), (H, W))
    else:
        y = y * op.mask
        recon = op.initial(y).abs()[0, 0]
        kfull = y[0, 0]
        sampling = op.mask[0, 0].expand(H, W)
    recon = recon.numpy()
    return {
        "sampling": sampling.numpy(),
        "kspace": kfull.numpy(),
        "recon": recon,
        "target": tgt,
        "error": np.abs(recon - tgt),
        "metrics": _metrics.volume_metrics(tgt[None], recon[None]),
        "acceleration": float(sampling.numel() / sampling.sum()),
        "lines": int(columns.sum()),
        "columns": int(W),
        "psf": point_spread(columns).numpy(),
        "op": op,
    }


#: the error maps' colour scale, as a fraction of the target's maximum: one scale for every setting,
#: so that two error maps compare by eye
ERROR_SCALE = 0.3


def acquisition_figure(view: dict, size: float = 2.4):
    """Five panels: sampling pattern, measured k-space, point-spread function along the
    phase-encode direction, reconstruction, error map (one fixed colour scale, with its bar)."""
    fig, axes = _figure(1, 5, size)
    # a fixed layout (no tight_layout: with square images it needs two passes, and one clips the
    # two-line title): room for two title lines above the panels, none wasted below
    height = size + 0.3
    fig.set_figheight(height)
    fig.subplots_adjust(left=0.01, right=0.96, bottom=0.04 / height, top=1 - 0.42 / height, wspace=0.16)
    vmax = float(view["target"].max())
    axes[0, 0].imshow(view["sampling"], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"sampled k-space\n{view['lines']} of {view['columns']} lines", fontsize=9)
    axes[0, 1].imshow(kspace_log(view["kspace"]), cmap="gray")
    axes[0, 1].set_title("measured k-space (log)", fontsize=9)
    psf, ax = view["psf"], axes[0, 2]
    ax.plot(np.arange(len(psf)) - len(psf) // 2, psf, lw=0.8, color="tab:blue")
    ax.set_ylim(0, 1.05)
    ax.set_box_aspect(1)
    ax.set_xticks([-(len(psf) // 2), 0, len(psf) // 2])
    ax.set_yticks([0, 0.5, 1])
    ax.tick_params(labelsize=7, pad=1)
    ax.set_title("point-spread function\n(phase-encode direction)", fontsize=9)
    axes[0, 3].imshow(view["recon"], cmap="gray", vmin=0, vmax=vmax)
    m = view["metrics"]
    axes[0, 3].set_title(f"reconstruction\n{m['PSNR']:.2f} dB, SSIM {m['SSIM']:.3f}", fontsize=9)
    im = axes[0, 4].imshow(view["error"], cmap="inferno", vmin=0, vmax=ERROR_SCALE * vmax)
    axes[0, 4].set_title(f"|error| (0 to {ERROR_SCALE:g} x max)", fontsize=9)
    fig.colorbar(im, ax=axes[0, 4], fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    return fig


class MaskExplorer(_Explorer):
    """Interactive acquisition explorer for notebook 01.

    Controls: task (``sr`` / ``cs``), mask type, acceleration, centre fraction, seed, ``sr`` scale,
    an *equal budget* switch (``cs``: exactly ``W / acceleration`` lines, so that mask types compare
    at the same scan time) and the noise level. View: sampling pattern, measured k-space, the
    point-spread function, zero-filled / low-res reconstruction, error map on one fixed scale, and
    the scan time (measured lines) with fastMRI's PSNR / SSIM. ``last_update_s`` holds the duration
    of the last update.
    """

    css_class = "kdmri-mask-explorer"

    def __init__(self, image: torch.Tensor, target: Optional[torch.Tensor] = None, task: str = "cs",
                 acceleration: int = 4, scale: int = 4, mask_type: str = "random",
                 center_fraction: Optional[float] = None, seed: int = 0, noise: float = 0.0,
                 equal_budget: bool = False, dpi: int = 96):
        w = _widgets()
        self.image_data, self.target_data, self.dpi = image, target, dpi
        H, W = image.shape[-2:]
        scales = [s for s in (2, 3, 4, 6, 8) if H % s == 0 and W % s == 0]
        # one description width for every control (the default 80px cuts "acceleration"), widths
        # that keep each row under ~620px: no wrapping inside a notebook next to the file browser
        style = {"description_width": "90px"}
        self.task = w.ToggleButtons(options=[("cs: under-sampling", "cs"), ("sr: low resolution", "sr")], value=task,
                                    description="task", style={**style, "button_width": "150px"})
        self.mask_type = w.Dropdown(options=list(MASK_TYPES[:3]), value=mask_type, description="mask type",
                                    style=style, layout=w.Layout(width="280px"))
        self.acceleration = w.IntSlider(value=acceleration, min=2, max=16, step=1, description="acceleration",
                                        continuous_update=False, style=style, layout=w.Layout(width="310px"))
        self.center_fraction = w.FloatSlider(value=center_fraction or default_center_fraction(acceleration),
                                             min=0.0, max=0.25, step=0.01, description="centre frac.",
                                             continuous_update=False, readout_format=".2f", style=style,
                                             layout=w.Layout(width="310px"))
        self.seed = w.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", style=style,
                                     layout=w.Layout(width="200px"))
        self.scale = w.Dropdown(options=scales, value=scale if scale in scales else scales[-1], description="sr scale",
                                style=style, layout=w.Layout(width="180px"))
        self.equal_budget = w.Checkbox(value=bool(equal_budget), description="equal budget (W/R lines)", indent=False,
                                       layout=w.Layout(width="220px"))
        self.noise = w.FloatSlider(value=float(noise), min=0.0, max=0.5, step=0.01, description="noise",
                                   continuous_update=False, readout_format=".2f", style=style,
                                   layout=w.Layout(width="310px"))
        self.last_update_s = float("nan")
        self.view: dict = {}
        controls = [self.task, self.mask_type, self.acceleration, self.center_fraction, self.seed, self.scale,
                    self.equal_budget, self.noise]
        self._build_box(controls,
                        note="<small>cs: mask, acceleration, centre fraction, seed and equal budget apply; "
                             "sr: the scale applies (the central k-space block is measured). "
                             "Controls that do not apply to the chosen task are greyed out. Noise: standard "
                             "deviation per measured sample, as a fraction of the image's RMS. Scan time is "
                             "proportional to the measured phase-encode lines.</small>",
                        rows=[[self.task, self.scale], [self.mask_type, self.seed],
                              [self.acceleration, self.center_fraction], [self.equal_budget, self.noise]])
        for c in controls:
            c.observe(self._on_change, names="value")
        self.update()

    def _on_change(self, _change=None):
        self.update()

    def update(self) -> dict:
        t0 = time.perf_counter()
        sr = self.task.value == "sr"
        for c in (self.mask_type, self.acceleration, self.center_fraction, self.seed, self.equal_budget):
            c.disabled = sr
        self.scale.disabled = not sr
        cf = min(self.center_fraction.value, 1.0 / self.acceleration.value)
        self.view = acquisition_view(self.image_data, task=self.task.value, scale=self.scale.value,
                                     acceleration=self.acceleration.value, mask_type=self.mask_type.value,
                                     center_fraction=cf, seed=self.seed.value, target=self.target_data,
                                     noise=self.noise.value, equal_budget=self.equal_budget.value)
        m, v = self.view["metrics"], self.view
        budget = ", equal budget" if (self.equal_budget.value and not sr) else ""
        label = (f"sr x{self.scale.value}" if sr else f"cs {self.mask_type.value} x{self.acceleration.value}, "
                 f"centre {cf:.2f}, seed {self.seed.value}{budget}")
        if self.noise.value > 0:
            label += f", noise {self.noise.value:.2f}"
        self.png = fig_to_png(acquisition_figure(self.view), dpi=self.dpi)
        self.image.value = self.png
        self.last_update_s = time.perf_counter() - t0
        self.metrics_html.value = (f"<b>{label}</b>: PSNR <b>{m['PSNR']:.2f} dB</b>, SSIM <b>{m['SSIM']:.4f}</b>, "
                                   f"NMSE {m['NMSE']:.4f} | scan time: {v['lines']} of {v['columns']} lines = "
                                   f"<b>{v['lines'] / v['columns']:.1%}</b> of a full scan "
                                   f"({v['columns'] / v['lines']:.2f}x faster)")
        return self.view


