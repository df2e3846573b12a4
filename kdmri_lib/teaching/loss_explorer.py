"""The distillation-loss explorer of notebook 04: :func:`loss_view` (every term on one batch, with
its weights, maps and gradients; tested without widgets), :func:`loss_figure` and
:class:`LossExplorer`."""

from __future__ import annotations

import time

import numpy as np
import torch

from kdmri_lib.teaching.explorer_base import _Explorer, _widgets, single_thread
from kdmri_lib.teaching.viz import _figure, fig_to_png


def loss_view(student, teacher, adapters, batch: dict, op, cfg) -> dict:
    """Every distillation term on one batch, with its weight, maps and gradients (notebook 04).

    Runs :func:`kdmri_lib.distill.distill_losses` with ``cfg`` (a ``DistillConfig``), then
    back-propagates the student's total loss and (in correction mode) the teacher's, and reads
    the gradient w.r.t. the student's output image and the gradient norms of both networks.
    Nothing is updated: gradients are cleared afterwards.

    Returns:
        dict with ``terms`` (name -> value), ``weights`` (name -> effective weight), ``total``,
        ``teacher_total`` (or None), ``grad_norm_student``, ``grad_norm_teacher``, and ``maps``:
        ``student``, ``teacher``, ``target``, ``confidence`` and ``grad`` (``dL/dS``, signed), each
        ``(H, W)`` of the first sample; ``term_grad_norms`` (each weighted student term's gradient
        norm w.r.t. the student, :func:`kdmri_lib.distill.gradient_norms`), ``angle_kd_rec`` (degrees
        between the output distillation's and the ground-truth term's gradients w.r.t. the student,
        :func:`kdmri_lib.distill.gradient_angle`; None when either is off) and ``grad_pool``
        (``dL/dS`` of the first measurement-only sample of a protocol batch, or None).
    """
    from kdmri_lib.core.resources import catch_oom
    from kdmri_lib.distill import distill_losses, gradient_angle, gradient_norms

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
            angle = gradient_angle(out, student) if out.total.requires_grad else None
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
            "angle_kd_rec": angle,
            "grad_pool": g_img.detach()[pool[0], 0].float().cpu() if pool else None,
            "terms": {k: float(v.detach()) for k, v in out.terms.items()},
            "weights": dict(out.weights),
            "total": float(out.total.detach()),
            "teacher_total": None if out.teacher_total is None else float(out.teacher_total.detach()),
            "grad_norm_student": gn_s,
            "grad_norm_teacher": gn_t,
            "maps": {"student": first(out.maps["student"]), "teacher": first(out.maps["teacher"]),
                     "target": first(batch["target"]), "confidence": first(out.maps["confidence"]),
                     "grad": first(g_img)},
        }


def _batch_psnr(model, batch: dict, op, keep) -> float:
    """Mean PSNR (dB, each slice against its own maximum) of ``model`` on the batch's slices ``keep``."""
    with torch.no_grad():
        out = model(batch["y"], op).float()[keep]
    x = batch["target"].float()[keep]
    mse = (out - x).pow(2).mean(dim=(-2, -1)).clamp_min(1e-12)
    peak = x.amax(dim=(-2, -1)).clamp_min(1e-12)
    return float((10 * torch.log10(peak ** 2 / mse)).mean())


def one_step(student, teacher, adapters, batch: dict, op, cfg, lr: float = 1e-3) -> dict:
    """Take one optimiser step of the distillation ``cfg`` on ``batch`` — on *copies* of the models,
    which are then discarded — and report what it did (the explorer's "take one step" button).

    The student's AdamW step uses ``lr``, the teacher's (correction on) ``cfg.teacher_lr`` (or 0.1 x
    ``lr``); the teacher's rehearsal (``t_rehearsal``) needs its source-domain slices, which one
    batch does not have, so it is left out here. PSNR is measured on the batch's slices with a
    ground truth (the references of a protocol batch: training data, so it shows the direction of
    one step, not generalisation).

    Returns:
        ``{"student": (before, after), "teacher": (before, after), "teacher_changed": bool}`` in dB.
    """
    import copy

    from kdmri_lib.distill import distill_losses

    lab = batch.get("labelled")
    keep = torch.ones(batch["y"].shape[0], dtype=torch.bool) if lab is None else lab.reshape(-1) > 0.5
    if not bool(keep.any()):
        raise ValueError("one_step needs a batch with at least one slice that has a ground truth")
    s, t, a = (copy.deepcopy(m) for m in (student, teacher, adapters))
    before = {"student": _batch_psnr(s.eval(), batch, op, keep), "teacher": _batch_psnr(t.eval(), batch, op, keep)}
    with single_thread():
        s.train()
        t.train() if cfg.correction else t.eval()
        t.requires_grad_(bool(cfg.correction))
        if cfg.correction and cfg.t_params == "head" and hasattr(t, "head_parameters"):
            t.requires_grad_(False)            # as in training: the body stays, the head learns
            for p in t.head_parameters():
                p.requires_grad_(True)
        s_params = [p for p in list(s.parameters()) + list(a.parameters()) if p.requires_grad]
        opt = torch.optim.AdamW(s_params, lr=lr)
        t_opt = (torch.optim.AdamW([p for p in t.parameters() if p.requires_grad],
                                   lr=cfg.teacher_lr if cfg.teacher_lr is not None else 0.1 * lr)
                 if cfg.correction else None)
        out = distill_losses(s, t, a, batch["y"], op, batch["target"], cfg, teacher_grad=bool(cfg.correction),
                             labelled=lab)
        total = out.total if out.teacher_total is None else out.total + out.teacher_total
        total.backward()
        opt.step()
        if t_opt is not None:
            t_opt.step()
    after = {"student": _batch_psnr(s.eval(), batch, op, keep), "teacher": _batch_psnr(t.eval(), batch, op, keep)}
    changed = any(not torch.equal(p0, p1) for p0, p1 in zip(teacher.state_dict().values(), t.state_dict().values()))
    return {"student": (before["student"], after["student"]), "teacher": (before["teacher"], after["teacher"]),
            "teacher_changed": changed}


def loss_figure(view: dict, size: float = 2.3):
    """Five panels: target, student, teacher, confidence weights (where the teacher teaches) and the
    gradient ``dL/dS`` that reaches the student's output (signed: red where the loss pushes the
    student down, blue where up); a sixth, ``dL/dS`` of a measurement-only slice, for a protocol batch.
    The gradient panels share one colour scale, so their sizes compare (under L1 terms a gradient is
    a constant magnitude with a sign: the pattern of signs is the picture)."""
    pool = view.get("grad_pool") is not None
    fig, axes = _figure(1, 6 if pool else 5, size)
    m = view["maps"]
    vmax = float(m["target"].max())
    for ax, key, title in zip(axes[0], ("target", "student", "teacher"), ("target", "student S", "teacher T")):
        ax.imshow(m[key].numpy(), cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    axes[0, 3].imshow(m["confidence"].numpy(), cmap="viridis", vmin=0, vmax=1)
    axes[0, 3].set_title(f"confidence w (mean {float(m['confidence'].mean()):.2f})", fontsize=9)
    grads = [m["grad"].numpy()] + ([view["grad_pool"].numpy()] if pool else [])
    g_max = max(float(np.percentile(np.abs(g), 99.5)) for g in grads) or 1e-12
    titles = ["dL/dS, a reference slice", "dL/dS, a slice without truth"] if pool else ["dL/dS (student's gradient)"]
    for k, (g, title) in enumerate(zip(grads, titles)):
        axes[0, 4 + k].imshow(g, cmap="RdBu_r", vmin=-g_max, vmax=g_max)
        axes[0, 4 + k].set_title(f"{title}\n(one scale: +-{g_max:.1e})", fontsize=8)
    fig.tight_layout()
    return fig


#: the explorer's recipes: the ablation's rows, the paper's stated method and the released code
def _recipes() -> dict:
    from kdmri_lib.distill import ABLATION_ROWS, PAPER_METHOD, RELEASED_RECIPE

    return {**{k: dict(v) for k, v in ABLATION_ROWS.items()}, "paper (as stated)": dict(PAPER_METHOD),
            "released code": dict(RELEASED_RECIPE)}


class LossExplorer(_Explorer):
    """Interactive distillation-loss explorer for notebook 04: switch terms on and off, change
    their weights, and see on one batch the loss values, the confidence map and the gradient that
    reaches the student (and the teacher, in correction mode).

    Controls: a recipe (the ablation's rows, the paper's stated method, the released code's),
    the term weights and switches, the confidence and where output distillation applies, which
    student (``students``), and a *take one step* button (:func:`one_step`: the PSNR change of student
    and teacher after one optimiser step, on copies). The metrics line gives every term with its
    weight, the gradient norms per term and the angle between the distillation and ground-truth
    gradients.

    Args:
        student, teacher, adapters: the models (``kdmri_lib.models``) and feature adapters.
        batch: one collated batch (``y``, ``target``, ...) on the models' device; ``op`` its operator.
        cfg: the starting ``DistillConfig``.
        students: optional ``{label: student}`` to choose from (e.g. untrained / trained alone /
            distilled); ``student`` is the first choice when it is not among them.
    """

    css_class = "kdmri-loss-explorer"

    def __init__(self, student, teacher, adapters, batch: dict, op, cfg, dpi: int = 96, students=None):
        import dataclasses

        w = _widgets()
        self.teacher, self.adapters, self.batch, self.op = teacher, adapters, batch, op
        self.students = dict(students or {})
        if not any(m is student for m in self.students.values()):
            self.students = {"this notebook's student": student, **self.students}
        self.base_cfg, self.dpi, self._replace = cfg, dpi, dataclasses.replace
        self._quiet = False
        style = {"description_width": "125px"}
        lay = w.Layout(width="330px")

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
        self.recipe = w.Dropdown(options=["(as set)"] + list(_recipes()), value="(as set)", description="recipe",
                                 style=style, layout=w.Layout(width="300px"))
        self.student_choice = w.Dropdown(options=list(self.students), value=next(iter(self.students)),
                                         description="student", style=style, layout=w.Layout(width="300px"))
        self.step_button = w.Button(description="take one step", tooltip="one optimiser step on copies of the models")
        self.step_button.add_class("kdmri-step")
        self.step_html = w.HTML(layout=w.Layout(min_height="1.4em"))
        self.step_html.add_class("kdmri-step-result")
        self.step_button.on_click(lambda _b: self.take_step())
        controls = list(self.sliders.values()) + [self.confidence, self.kd_on] + list(self.switches.values())
        self.last_update_s = float("nan")
        self.view: dict = {}
        self._build_box(controls + [self.recipe, self.student_choice, self.step_button, self.step_html],
                        rows=[[self.recipe, self.student_choice],
                              [self.sliders["w_kd"], self.sliders["w_feat"]],
                              [self.sliders["w_att"], self.sliders["w_edge"]],
                              [self.confidence], [self.kd_on], list(self.switches.values()),
                              [self.step_button, self.step_html]],
                        note="<small>Loss values and gradients of one batch; nothing is trained here (the "
                             "step button trains copies). Confidence <i>w</i> is 0 where the teacher is no better "
                             "than the student. Angle: between the gradients of output distillation and of the "
                             "ground-truth term (0 = the same pull, 90 = independent, 180 = opposed).</small>")
        for c in controls + [self.student_choice]:
            c.observe(self._on_change, names="value")
        self.recipe.observe(self._on_recipe, names="value")
        self.update()

    @property
    def student(self):
        return self.students[self.student_choice.value]

    def config(self):
        """The ``DistillConfig`` the controls describe."""
        kw = {k: s.value for k, s in self.sliders.items()}
        kw.update({k: c.value for k, c in self.switches.items()})
        kw["confidence"] = self.confidence.value
        kw["kd_on"] = self.kd_on.value
        kw["teacher_tta"] = self.base_cfg.teacher_tta or kw["confidence"] == "uncertainty"
        return self._replace(self.base_cfg, **kw)

    def set_recipe(self, name: str) -> None:
        """Set every control to recipe ``name`` (:func:`_recipes`), with one update."""
        r = _recipes()[name]
        self._quiet = True
        try:
            for k, c in self.switches.items():
                c.value = bool(r.get(k, getattr(self.base_cfg, k)))
            self.confidence.value = r.get("confidence", self.base_cfg.confidence)
            self.kd_on.value = r.get("kd_on", self.base_cfg.kd_on)
            self.base_cfg = self._replace(self.base_cfg, **{k: v for k, v in r.items()
                                                             if k not in self.switches and k not in self.sliders})
        finally:
            self._quiet = False
        self.update()

    def _on_recipe(self, change=None):
        if self.recipe.value != "(as set)":
            self.set_recipe(self.recipe.value)

    def _on_change(self, _change=None):
        if not self._quiet:
            self.update()

    def take_step(self) -> dict:
        """One optimiser step on copies (:func:`one_step`); the result goes to the step line."""
        r = one_step(self.student, self.teacher, self.adapters, self.batch, self.op, self.config())
        (s0, s1), (t0, t1) = r["student"], r["teacher"]
        teacher = (f"teacher {t0:.2f} &rarr; {t1:.2f} dB ({t1 - t0:+.3f})" if r["teacher_changed"]
                   else "teacher unchanged (frozen)")
        self.step_html.value = (f"one step ({self.student_choice.value}): student {s0:.2f} &rarr; {s1:.2f} dB "
                                f"(<b>{s1 - s0:+.3f}</b>), {teacher}, on this batch's references")
        self.last_step = r
        return r

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
        angle = v.get("angle_kd_rec")
        angle = f"; angle(KD, truth) <b>{angle:.0f}&deg;</b>" if angle is not None else ""
        self.metrics_html.value = (f"student loss <b>{v['total']:.4f}</b> = {terms}; |grad| "
                                   f"<b>{v['grad_norm_student']:.3g}</b> (per term: {norms}){angle}{teacher}; "
                                   f"released KL term {v['terms'].get('kl', 0.0):.1f}")
        return v
