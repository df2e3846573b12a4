"""Interactive widgets for the notebooks (ipywidgets), with a static fallback.

Each explorer is an ``ipywidgets.VBox`` of controls, a metrics line (``HTML``) and a figure
rendered to PNG (``Image``): a slider move recomputes the view and swaps the PNG, which stays
fast on a 2-core CPU and renders the same in JupyterLab, classic Notebook and Colab (no
``ipympl`` needed). The explorer runs its callback once on creation, and its rich display also
carries a plain ``image/png`` and ``text/plain`` copy of the current view, so headless runs
(papermill, nbval, GitHub's notebook viewer) show the figure and the numbers too.

The computations behind the widgets are plain functions (:func:`acquisition_view`,
:func:`loss_view`), tested without any widget.
"""

from __future__ import annotations

import base64
import contextlib
import time
from typing import Optional

import numpy as np
import torch

from kdmri_lib.mri import metrics as _metrics
from kdmri_lib.mri import physics
from kdmri_lib.mri.masks import MASK_TYPES, default_center_fraction
from kdmri_lib.teaching.viz import _figure, fig_to_png, kspace_log


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block (the previous setting restored after).

    The widgets' computations work on one slice, a few FFTs of a 200-600 pixel image: on a
    2-core machine that also runs the browser and the Jupyter server, two intra-op threads spend
    their time waiting for a core (measured: one 192x192 :func:`acquisition_view` 3 ms on one
    thread, about 190 ms on two while the machine was busy).
    """
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


def acquisition_view(image: torch.Tensor, task: str = "cs", scale: int = 4, acceleration: int = 4,
                     mask_type: str = "random", center_fraction: Optional[float] = None, seed: int = 0,
                     target: Optional[torch.Tensor] = None) -> dict:
    """Simulate one acquisition of a complex image and its simplest reconstruction.

    Args:
        image: complex (or real) ``(H, W)`` ground-truth image.
        task: ``"sr"`` (central k-space block, factor ``scale``) or ``"cs"`` (column mask,
            factor ``acceleration``, ``mask_type``, ``center_fraction``, ``seed``).
        target: magnitude ground truth for the metrics (``|image|`` if None).

    Returns:
        dict with ``sampling`` (H, W) 0/1 map of the measured k-space samples, ``kspace`` the
        measured k-space (zeros elsewhere, full size), ``recon`` the zero-filled magnitude
        (``sr``: the zero-padded, i.e. sinc-interpolated, low-res image), ``error``
        ``|recon - target|``, ``metrics`` (PSNR, SSIM, NMSE via fastMRI), ``acceleration``
        (realised: all samples / measured samples) and ``op``.
    """
    with single_thread():
        return _acquisition_view(image, task, scale, acceleration, mask_type, center_fraction, seed, target)


def _acquisition_view(image, task, scale, acceleration, mask_type, center_fraction, seed, target) -> dict:
    x = physics.to_complex(torch.as_tensor(image))[None, None]
    H, W = x.shape[-2:]
    tgt = (x.abs()[0, 0] if target is None else torch.as_tensor(target).float()).numpy()
    if task == "sr":
        op = physics.build_operator("sr", scale, (H, W))
        y = op.forward(x)
        recon = op.adjoint(y).abs()[0, 0]
        kfull = physics.centre_pad(y, (H, W))[0, 0]
        sampling = physics.centre_pad(torch.ones(op.meas_shape), (H, W))
    else:
        cf = default_center_fraction(acceleration) if center_fraction is None else center_fraction
        op = physics.build_operator("cs", acceleration, (H, W), seed=seed, mask_type=mask_type, center_fraction=cf)
        y = op.forward(x)
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
        "op": op,
    }


def acquisition_figure(view: dict, size: float = 2.4):
    """Four panels: sampling pattern, measured k-space, reconstruction, error map."""
    fig, axes = _figure(1, 4, size)
    # a fixed layout (no tight_layout: with square images it needs two passes, and one clips the
    # two-line title): room for two title lines above the panels, none wasted below
    height = size + 0.3
    fig.set_figheight(height)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.04 / height, top=1 - 0.42 / height, wspace=0.06)
    vmax = float(view["target"].max())
    axes[0, 0].imshow(view["sampling"], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"sampled k-space ({view['acceleration']:.1f}x)", fontsize=9)
    axes[0, 1].imshow(kspace_log(view["kspace"]), cmap="gray")
    axes[0, 1].set_title("measured k-space (log)", fontsize=9)
    axes[0, 2].imshow(view["recon"], cmap="gray", vmin=0, vmax=vmax)
    m = view["metrics"]
    axes[0, 2].set_title(f"reconstruction\n{m['PSNR']:.2f} dB, SSIM {m['SSIM']:.3f}", fontsize=9)
    axes[0, 3].imshow(view["error"], cmap="inferno", vmin=0, vmax=0.3 * vmax)
    axes[0, 3].set_title("|error|", fontsize=9)
    return fig


def _widgets():
    try:
        import ipywidgets as w
    except ImportError as e:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("the interactive explorers need ipywidgets: pip install ipywidgets") from e
    return w


class _Explorer:
    """Shared plumbing: a VBox with a static PNG/text fallback in its rich display.

    The box carries stable CSS classes, for styling and for browser tests: ``kdmri-explorer``
    plus ``css_class`` of the subclass (e.g. ``kdmri-mask-explorer``) on the box,
    ``kdmri-metrics`` on the metrics line, ``kdmri-figure`` on the image.
    """

    css_class = "kdmri-explorer"

    def _build_box(self, controls: list, note: str = "", rows: Optional[list] = None):
        """The explorer's VBox: rows of controls (``rows``, a list of lists of widgets; default: the
        first four controls, then the rest), the metrics line, the figure and a note.

        The figure is shown at its natural size (render it at about 96 dpi for sharp text),
        shrunk to the output's width on narrow screens. Descriptions are never cut (a control
        without a ``description_width`` gets ``"initial"``), and ToggleButtons keep their
        description on the buttons' line (ipywidgets 8 puts it on a line of its own)."""
        w = _widgets()
        for c in controls:
            if isinstance(c, w.ToggleButtons):
                c.add_class("widget-inline-hbox")
            style = getattr(c, "style", None)
            if getattr(c, "description", "") and hasattr(style, "description_width") and not style.description_width:
                style.description_width = "initial"
        self.metrics_html = w.HTML(layout=w.Layout(min_height="1.6em"))
        self.metrics_html.add_class("kdmri-metrics")
        # align_self: a VBox stretches its children to its width, which would upscale the PNG
        self.image = w.Image(format="png", layout=w.Layout(width="auto", max_width="100%", height="auto",
                                                           align_self="flex-start"))
        self.image.add_class("kdmri-figure")
        self.note = w.HTML(note)
        rows = rows if rows is not None else [controls[:4], controls[4:]]
        self.box = _FallbackVBox([w.HBox(r, layout=w.Layout(flex_flow="row wrap")) for r in rows if r]
                                 + [self.metrics_html, self.image, self.note])
        self.box.add_class("kdmri-explorer")
        if self.css_class != "kdmri-explorer":
            self.box.add_class(self.css_class)
        self.box._explorer = self
        return self.box

    def _ipython_display_(self):  # display(explorer) shows its box
        from IPython.display import display

        display(self.box)

    def static_text(self) -> str:
        return self.metrics_html.value if hasattr(self, "metrics_html") else ""


class MaskExplorer(_Explorer):
    """Interactive acquisition explorer for notebook 01.

    Controls: task (``sr`` / ``cs``), mask type, acceleration, centre fraction, seed, ``sr`` scale.
    View: sampling pattern, measured k-space, zero-filled / low-res reconstruction, error map,
    and fastMRI's PSNR / SSIM. ``last_update_s`` holds the duration of the last update.
    """

    css_class = "kdmri-mask-explorer"

    def __init__(self, image: torch.Tensor, target: Optional[torch.Tensor] = None, task: str = "cs",
                 acceleration: int = 4, scale: int = 4, mask_type: str = "random",
                 center_fraction: Optional[float] = None, seed: int = 0, dpi: int = 96):
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
        self.last_update_s = float("nan")
        self.view: dict = {}
        self._build_box([self.task, self.mask_type, self.acceleration, self.center_fraction, self.seed, self.scale],
                        note="<small>cs: mask, acceleration, centre fraction and seed apply; "
                             "sr: the scale applies (the central k-space block is measured). "
                             "Controls that do not apply to the chosen task are greyed out.</small>",
                        rows=[[self.task, self.scale], [self.mask_type, self.seed],
                              [self.acceleration, self.center_fraction]])
        for c in (self.task, self.mask_type, self.acceleration, self.center_fraction, self.seed, self.scale):
            c.observe(self._on_change, names="value")
        self.update()

    def _on_change(self, _change=None):
        self.update()

    def update(self) -> dict:
        t0 = time.perf_counter()
        sr = self.task.value == "sr"
        for c in (self.mask_type, self.acceleration, self.center_fraction, self.seed):
            c.disabled = sr
        self.scale.disabled = not sr
        cf = min(self.center_fraction.value, 1.0 / self.acceleration.value)
        self.view = acquisition_view(self.image_data, task=self.task.value, scale=self.scale.value,
                                     acceleration=self.acceleration.value, mask_type=self.mask_type.value,
                                     center_fraction=cf, seed=self.seed.value, target=self.target_data)
        m = self.view["metrics"]
        label = (f"sr x{self.scale.value}" if self.task.value == "sr"
                 else f"cs {self.mask_type.value} x{self.acceleration.value}, centre {cf:.2f}, seed {self.seed.value}")
        self.png = fig_to_png(acquisition_figure(self.view), dpi=self.dpi)
        self.image.value = self.png
        self.last_update_s = time.perf_counter() - t0
        self.metrics_html.value = (f"<b>{label}</b>: PSNR <b>{m['PSNR']:.2f} dB</b>, SSIM <b>{m['SSIM']:.4f}</b>, "
                                   f"NMSE {m['NMSE']:.4f} (realised {self.view['acceleration']:.2f}x)")
        return self.view


def loss_view(student, teacher, adapters, batch: dict, op, cfg) -> dict:
    """Every distillation term on one batch, with its weight, maps and gradients (notebook 04).

    Runs :func:`kdmri_lib.distill.distill_losses` with ``cfg`` (a ``DistillConfig``), then
    back-propagates the student's total loss and (in correction mode) the teacher's, and reads
    the gradient w.r.t. the student's output image and the gradient norms of both networks.
    Nothing is updated: gradients are cleared afterwards.

    Returns:
        dict with ``terms`` (name -> value), ``weights`` (name -> effective weight), ``total``,
        ``teacher_total`` (or None), ``grad_norm_student``, ``grad_norm_teacher``, and ``maps``:
        ``student``, ``teacher``, ``target``, ``confidence`` and ``grad`` (``|dL/dS|``), each
        ``(H, W)`` of the first sample; ``term_grad_norms`` (each weighted student term's gradient
        norm w.r.t. the student, :func:`kdmri_lib.distill.gradient_norms`) and ``grad_pool``
        (``|dL/dS|`` of the first measurement-only sample of a protocol batch, or None).
    """
    from kdmri_lib.core.resources import catch_oom
    from kdmri_lib.distill import distill_losses, gradient_norms

    oom = catch_oom("the loss explorer", batch["y"].device, note="It runs one batch forward and backward: give it a "
                    "smaller batch (fewer slices)", batch_size=int(batch["y"].shape[0]))
    with single_thread(), oom:
        params_s = [p for p in list(student.parameters()) + list(adapters.parameters()) if p.requires_grad]
        params_t = [p for p in teacher.parameters()]
        for p in params_s + params_t:
            p.grad = None
        t_req = [p.requires_grad for p in params_t]
        for p in params_t:
            p.requires_grad_(bool(cfg.correction))
        captured: list = []

        def keep_output(_module, _inputs, output):
            img = output[0] if isinstance(output, tuple) else output
            if img.requires_grad:
                img.retain_grad()
            captured.append(img)

        hook = student.register_forward_hook(keep_output)
        try:
            out = distill_losses(student, teacher, adapters, batch["y"], op, batch["target"], cfg,
                                 teacher_grad=bool(cfg.correction), labelled=batch.get("labelled"))
            hook.remove()
            term_norms = gradient_norms(out, student) if out.total.requires_grad else {}
            out.total.backward(retain_graph=out.teacher_total is not None)
            s_img = captured[-1] if captured else None
            g_img = s_img.grad if (s_img is not None and s_img.grad is not None) else torch.zeros_like(out.maps["student"])
            gn_s = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params_s if p.grad is not None) + 0.0))
            gn_t = 0.0
            if out.teacher_total is not None and out.teacher_total.requires_grad:
                for p in params_s:
                    p.grad = None
                out.teacher_total.backward()
                gn_t = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params_t if p.grad is not None) + 0.0))
        finally:
            hook.remove()
            for p, r in zip(params_t, t_req):
                p.requires_grad_(r)
                p.grad = None
            for p in params_s:
                p.grad = None
        first = lambda t: t.detach()[0, 0].float().cpu()  # noqa: E731
        lab = batch.get("labelled")
        pool = [i for i in range(int(batch["y"].shape[0])) if lab is not None and float(lab[i]) < 0.5]
        return {
            "term_grad_norms": term_norms,
            "grad_pool": g_img.detach()[pool[0], 0].float().cpu().abs() if pool else None,
            "terms": {k: float(v.detach()) for k, v in out.terms.items()},
            "weights": dict(out.weights),
            "total": float(out.total.detach()),
            "teacher_total": None if out.teacher_total is None else float(out.teacher_total.detach()),
            "grad_norm_student": gn_s,
            "grad_norm_teacher": gn_t,
            "maps": {"student": first(out.maps["student"]), "teacher": first(out.maps["teacher"]),
                     "target": first(batch["target"]), "confidence": first(out.maps["confidence"]),
                     "grad": first(g_img).abs()},
        }


def loss_figure(view: dict, size: float = 2.3):
    """Five panels: target, student, teacher, confidence weights (where the teacher teaches), |dL/dS|
    (a sixth, |dL/dS| of a measurement-only slice, for a protocol batch)."""
    pool = view.get("grad_pool") is not None
    fig, axes = _figure(1, 6 if pool else 5, size)
    m = view["maps"]
    vmax = float(m["target"].max())
    for ax, key, title in zip(axes[0], ("target", "student", "teacher"), ("target", "student S", "teacher T")):
        ax.imshow(m[key].numpy(), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    axes[0, 3].imshow(m["confidence"].numpy(), cmap="viridis", vmin=0, vmax=1)
    axes[0, 3].set_title(f"confidence w (mean {float(m['confidence'].mean()):.2f})", fontsize=9)
    g = m["grad"].numpy()
    axes[0, 4].imshow(g, cmap="magma", vmin=0, vmax=float(np.percentile(g, 99.5)) or None)
    axes[0, 4].set_title("|dL/dS| (student's gradient)", fontsize=9)
    if pool:
        gp = view["grad_pool"].numpy()
        axes[0, 5].imshow(gp, cmap="magma", vmin=0, vmax=float(np.percentile(gp, 99.5)) or None)
        axes[0, 5].set_title("|dL/dS|, a slice without truth", fontsize=9)
    fig.tight_layout()
    return fig


class LossExplorer(_Explorer):
    """Interactive distillation-loss explorer for notebook 04: switch terms on and off, change
    their weights, and see on one batch the loss values, the confidence map and the gradient that
    reaches the student (and the teacher, in correction mode).

    Args:
        student, teacher, adapters: the models (``kdmri_lib.models``) and feature adapters.
        batch: one collated batch (``y``, ``target``, ...) on the models' device; ``op`` its operator.
        cfg: the starting ``DistillConfig``.
    """

    css_class = "kdmri-loss-explorer"

    def __init__(self, student, teacher, adapters, batch: dict, op, cfg, dpi: int = 96):
        import dataclasses

        w = _widgets()
        self.student, self.teacher, self.adapters, self.batch, self.op = student, teacher, adapters, batch, op
        self.base_cfg, self.dpi, self._replace = cfg, dpi, dataclasses.replace
        style = {"description_width": "110px"}
        lay = w.Layout(width="300px")

        def slider(name, desc, maximum=2.0):
            return w.FloatSlider(value=float(getattr(cfg, name)), min=0.0, max=maximum, step=0.05, description=desc,
                                 continuous_update=False, readout_format=".2f", style=style, layout=lay)

        self.sliders = {"w_kd": slider("w_kd", "output KD weight"), "w_feat": slider("w_feat", "feature weight"),
                        "w_att": slider("w_att", "attention weight"), "w_edge": slider("w_edge", "edge weight")}
        self.switches = {k: w.Checkbox(value=bool(getattr(cfg, k)), description=d, indent=False,
                                       layout=w.Layout(width="170px"))
                         for k, d in (("output_kd", "output KD"), ("feature_kd", "feature KD"),
                                      ("attention_kd", "attention transfer"), ("edge", "edge loss"),
                                      ("correction", "teacher correction"), ("dynamic", "dynamic weights"))}
        self.confidence = w.ToggleButtons(options=["none", "hard", "soft", "uncertainty"], value=cfg.confidence,
                                          description="confidence", style={**style, "button_width": "80px"})
        self.kd_on = w.ToggleButtons(options=["all", "unlabelled"], value=cfg.kd_on, description="output KD on",
                                     style={**style, "button_width": "80px"})
        controls = list(self.sliders.values()) + [self.confidence, self.kd_on] + list(self.switches.values())
        self.last_update_s = float("nan")
        self.view: dict = {}
        self._build_box(controls, rows=[[self.sliders["w_kd"], self.sliders["w_feat"]],
                                        [self.sliders["w_att"], self.sliders["w_edge"]],
                                        [self.confidence], [self.kd_on], list(self.switches.values())],
                        note="<small>Loss values and gradients of one batch; nothing is trained here. "
                             "Confidence <i>w</i> is 0 where the teacher is no better than the student.</small>")
        for c in controls:
            c.observe(self._on_change, names="value")
        self.update()

    def config(self):
        """The ``DistillConfig`` the controls describe."""
        kw = {k: s.value for k, s in self.sliders.items()}
        kw.update({k: c.value for k, c in self.switches.items()})
        kw["confidence"] = self.confidence.value
        kw["kd_on"] = self.kd_on.value
        kw["teacher_tta"] = self.base_cfg.teacher_tta or kw["confidence"] == "uncertainty"
        return self._replace(self.base_cfg, **kw)

    def _on_change(self, _change=None):
        self.update()

    def update(self) -> dict:
        t0 = time.perf_counter()
        cfg = self.config()
        self.view = v = loss_view(self.student, self.teacher, self.adapters, self.batch, self.op, cfg)
        self.png = fig_to_png(loss_figure(v), dpi=self.dpi)
        self.image.value = self.png
        self.last_update_s = time.perf_counter() - t0
        terms = ", ".join(f"{k} {val:.4f}&times;{v['weights'].get(k, 1.0):.2f}" for k, val in v["terms"].items()
                          if k != "kl")
        teacher = (f" | teacher loss <b>{v['teacher_total']:.4f}</b>, |grad| {v['grad_norm_teacher']:.3g}"
                   if v["teacher_total"] is not None else " | teacher frozen")
        norms = ", ".join(f"{k} {g:.3g}" for k, g in v.get("term_grad_norms", {}).items())
        self.metrics_html.value = (f"student loss <b>{v['total']:.4f}</b> = {terms}; |grad| "
                                   f"<b>{v['grad_norm_student']:.3g}</b> (per term: {norms}){teacher}; released KL term "
                                   f"{v['terms'].get('kl', 0.0):.1f}")
        return v


def _strip_tags(html: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", html)


def _make_fallback_vbox():
    w = _widgets()

    class FallbackVBox(w.VBox):
        """A VBox whose display also carries a static PNG and text of its explorer's view."""

        def _repr_mimebundle_(self, **kwargs):
            data = super()._repr_mimebundle_(**kwargs) or {}
            exp = getattr(self, "_explorer", None)
            if exp is not None and getattr(exp, "png", None):
                data = dict(data)
                data["image/png"] = base64.b64encode(exp.png).decode()
                data["text/plain"] = _strip_tags(exp.static_text())
            return data

    return FallbackVBox


class _LazyFallback:
    _cls = None

    def __call__(self, *a, **k):
        if _LazyFallback._cls is None:
            _LazyFallback._cls = _make_fallback_vbox()
        return _LazyFallback._cls(*a, **k)


_FallbackVBox = _LazyFallback()
