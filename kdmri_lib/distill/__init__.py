r"""Corrective heterogeneous distillation: one batch's losses, their state and weighting (the switches
and the ablation's rows are in :mod:`kdmri_lib.distill.config`, re-exported here).

One function computes every term of one batch, for the training loop *and* for the notebook's
interactive loss widget::

    cfg = DistillConfig()                                   # the full method
    adapters = Adapters.for_models(student, teacher)
    lb = distill_losses(student, teacher, adapters, batch["y"], op, batch["target"], cfg)
    lb.total.backward()                                     # the student's loss
    lb.terms["kd"], lb.weights["kd"], lb.maps["confidence"]

The student's loss (notation of :mod:`kdmri_lib.distill.losses`; ``lambda`` the dynamic factor; ``R`` the
samples with a ground truth, ``P`` the measurement-only samples of a protocol batch,
:mod:`kdmri_lib.datasets.protocol`; without ``labelled`` every sample is in ``R``)::

    L_S = w_rec * L1_R(S, x) + w_edge * edge_R(S, x)
        + lambda * ( w_kd * mean_K(w ⊙ rho(S - T~)) + w_feat * feat(adapt(F_S), F_T) + w_att * AT(F_S, F_T) )

``K`` is every sample (``kd_on="all"``, the paper) or ``P`` only (``kd_on="unlabelled"``: where
there is a truth it teaches, where there is none the teacher does; no pixel gets both, so the
L1 + L1 dead zone cannot occur); ``T~`` is the teacher's output, or with ``teacher_tta`` the mean
of its predictions on flipped copies of the measurement (:func:`teacher_tta`); ``rho`` is L1 or
Huber (``kd_loss``); ``w`` the confidence: ``"none"``, the paper's ground-truth ``"hard"`` /
``"soft"`` maps (on ``R`` only), or ``"uncertainty"`` from the spread of the augmented
predictions (no ground truth needed).

With ``correction``, the teacher's own loss (it keeps learning while it teaches, with its own
optimiser): :func:`kdmri_lib.distill.losses.teacher_correction_loss` on ``R`` (its reconstruction loss
weighted ``1 + t_error_focus`` where the student beats it, ``t_edge_weight`` x edge loss),
``t_feedback_weight`` x the feedback term that pulls its token maps towards the student's
adapted features, and ``t_anchor`` x the L2-SP distance to its pre-trained weights. Gradients
never cross: the student's terms see the teacher detached, the teacher's terms see the student
detached, so one ``backward()`` of ``L_S + L_T`` gives each model its own gradient.

Switches (each piece can be turned off; :data:`ABLATION_ROWS` lists the ablation's configs, the
defaults of :class:`DistillConfig` are its ``full`` row).

Dynamic weighting: ``lambda = dynamic_weight(EMA(e_S), EMA(e_T), floor)`` with ``e = mean|. - x|``
on the references of each batch and :attr:`DistillConfig.ema_decay`; see
:func:`kdmri_lib.distill.losses.dynamic_weight`. The EMA lives in a :class:`DistillState`, saved in
checkpoints. Without dynamic weighting ``lambda = 1``.

Balance (``balance``): ``"magnitude"`` weighs the feature and attention terms (and the teacher's
feedback term) as fractions of the running L1 loss, ``w * EMA(L1) / EMA(term)``. Measured on the
protocol (output KD on the pool + feature terms, demo data, 600 steps): as the attention term
converged (0.35 -> 0.017) its effective weight rose 20x (0.013 -> 0.28), and the student never left
the zero-filled level (21.01 vs 20.99 dB on its references, 20.47 vs 20.49 on the scored slices).
``"gradnorm"``
instead rescales each distillation term every ``gradnorm_every`` steps so that its gradient norm
(w.r.t. the student) is ``w_k`` times the reconstruction term's.

Distillation warm-up (``kd_warmup_steps``): the distillation weights ramp linearly from 0 to their
value over the first steps of training (the state counts the steps), so that a fresh student first
learns the reconstruction task from the ground truth.

Attention-transfer pre-stage (``prestage_steps``, KD-MRI's first stage): the first steps train the
student on the feature and attention terms alone (the reconstruction, edge and output terms weigh
0), then those two weigh 0 and the others take over; the state counts the steps, so a resumed run
switches at the same step.

Terms that are switched off are still computed for the log when they are cheap (under
``torch.no_grad()``, weight 0), so that every run logs the same columns; the released code's
one-channel KL term is always logged: it is exactly 0.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from kdmri_lib.core.device import autocast
from kdmri_lib.core.errors import ConfigError
from kdmri_lib.distill import losses as L
from kdmri_lib.distill.config import (
    ABLATION_BASE,
    ABLATION_PIECES,
    ABLATION_ROWS,
    BALANCE_MODES,
    CANDIDATE_ROWS,
    CONFIDENCE_MODES,
    FIELD_CHOICES,
    FIELD_HELP,
    KD_ON,
    PAPER_METHOD,
    PREDATED,
    RELEASED_RECIPE,
    STUDENT_TERMS,
    T_PARAMS,
    DistillConfig,
)
from kdmri_lib.distill.state import DistillState, LossBreakdown
from kdmri_lib.distill.teacher_cache import TeacherCache, teacher_tta
from kdmri_lib.models.adapters import Adapters

__all__ = ["DistillConfig", "DistillState", "LossBreakdown", "distill_losses", "ABLATION_ROWS", "ABLATION_BASE",
           "ABLATION_PIECES", "PREDATED", "RELEASED_RECIPE", "CANDIDATE_ROWS", "PAPER_METHOD", "FIELD_HELP",
           "FIELD_CHOICES", "CONFIDENCE_MODES", "BALANCE_MODES", "KD_ON", "T_PARAMS", "STUDENT_TERMS", "Adapters",
           "gradient_norms", "gradient_angle", "teacher_tta", "unwrap", "student_terms", "teacher_terms"]


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return getattr(module, "module", module)


def _select(t: torch.Tensor, idx: Optional[torch.Tensor]) -> torch.Tensor:
    return t if idx is None else t[idx]


@dataclass
class Passes:
    """The forward passes of one batch (float32): student ``S`` and its feature maps ``fs``, teacher
    ``T`` (graph to the teacher when it is corrected) and its token maps ``ft``, the teacher's label
    ``T_label`` (``T`` or its test-time-augmented mean) and ``spread`` (None without augmentation), the
    target ``x``, and which samples have a ground truth (``lab_idx`` / ``unl_idx``: indices, None when
    every sample has one)."""

    S: torch.Tensor
    fs: list
    T: torch.Tensor
    ft: list
    T_label: torch.Tensor
    spread: Optional[torch.Tensor]
    x: torch.Tensor
    lab_idx: Optional[torch.Tensor]
    unl_idx: Optional[torch.Tensor]
    n_lab: int
    n_unl: int
    cached: bool

    @property
    def T_det(self) -> torch.Tensor:
        return self.T.detach()

    @property
    def ft_det(self) -> list:
        return [f.detach() for f in self.ft]


def forward_passes(student: nn.Module, teacher: nn.Module, y: torch.Tensor, op, target: torch.Tensor,
                   cfg: DistillConfig, teacher_grad: bool = False, amp: bool = False,
                   labelled: Optional[torch.Tensor] = None) -> Passes:
    """Run the student and the teacher on one batch (see :func:`distill_losses` for the arguments)."""
    B = y.shape[0]
    if labelled is None:
        lab_idx = unl_idx = None
        n_lab, n_unl = B, 0
    else:
        lab = labelled.reshape(-1).to(y.device) > 0.5
        lab_idx, unl_idx = lab.nonzero().flatten(), (~lab).nonzero().flatten()
        n_lab, n_unl = int(lab_idx.numel()), int(unl_idx.numel())
    cached = isinstance(teacher, TeacherCache)
    with autocast(y.device, amp):
        S, fs = student(y, op, return_features=True)
        # a memoised teacher runs its head live (with gradients) on the references only, in teacher_terms
        tctx = contextlib.nullcontext() if (teacher_grad and not cached) else torch.no_grad()
        with tctx:
            T, ft = teacher(y, op, return_features=True)
    S, T = S.float(), T.float()
    if cfg.teacher_tta and cached:   # memoised (until the head's next relabelling)
        T_label, spread = teacher.label(y, op, amp=amp)
    elif cfg.teacher_tta:   # the label: the mean of the teacher's augmented predictions
        T_label, spread = teacher_tta(teacher, y, op, first=T.detach(), amp=amp)
    else:
        T_label, spread = T.detach(), None
    return Passes(S=S, fs=[f.float() for f in fs], T=T, ft=[f.float() for f in ft], T_label=T_label, spread=spread,
                  x=target.float(), lab_idx=lab_idx, unl_idx=unl_idx, n_lab=n_lab, n_unl=n_unl, cached=cached)


def weighting(p: Passes, cfg: DistillConfig, state: DistillState, fresh_state: bool) -> tuple[float, float, dict]:
    """The dynamic factor ``lambda`` and the warm-up ramp of this batch (the state advances one step),
    and the error maps ``|S - x|``, ``|T - x|`` with their means on the references."""
    with torch.no_grad():
        err_s = (p.S - p.x).abs()
        err_t = (p.T_det - p.x).abs()
        e_s = float(_select(err_s, p.lab_idx).mean()) if p.n_lab else float("nan")
        e_t = float(_select(err_t, p.lab_idx).mean()) if p.n_lab else float("nan")
    if cfg.dynamic:
        lam = state.update(e_s, e_t) if p.n_lab else state.factor
    else:
        lam = 1.0
    ramp = min(1.0, (state.steps + 1) / cfg.kd_warmup_steps) if cfg.kd_warmup_steps > 0 and not fresh_state else 1.0
    state.steps += 1
    return lam, ramp, {"student_error": err_s, "teacher_error": err_t, "e_s": e_s, "e_t": e_t}


def _confidence(p: Passes, cfg: DistillConfig) -> torch.Tensor:
    """The per-pixel confidence ``w``: GT-based modes on labelled samples (1 elsewhere), the teacher's
    augmentation agreement everywhere."""
    if cfg.confidence == "uncertainty":
        return L.uncertainty_weights(p.spread)
    if cfg.confidence == "none" or p.lab_idx is None:
        return L.confidence_weights(p.S.detach(), p.T_label, p.x, cfg.confidence)
    w_map = torch.ones_like(p.S)
    if p.n_lab:
        w_map[p.lab_idx] = L.confidence_weights(_select(p.S, p.lab_idx).detach(), _select(p.T_label, p.lab_idx),
                                                _select(p.x, p.lab_idx), cfg.confidence)
    return w_map


def _switchable(on: bool, term, *args):
    """``term(*args)`` with its graph when ``on``, else under ``no_grad`` on detached inputs (logged, weight 0)."""
    if on:
        return term(*args)
    with torch.no_grad():
        return term(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])


def student_terms(p: Passes, cfg: DistillConfig, adapters: Optional[nn.Module], scale: float
                  ) -> tuple[dict, dict, torch.Tensor, list]:
    """The student's terms (unweighted, scalar tensors) and weights (``scale`` = lambda x ramp on the
    distillation terms), the confidence map and the adapted student features.

    ``rec`` and ``edge`` on the references; ``kd`` on every sample or on the pool (``kd_on``);
    ``feat`` / ``att`` through the adapters; ``kl``, the released one-channel term (always 0)."""
    S, x = p.S, p.x
    S_l, x_l = _select(S, p.lab_idx), _select(x, p.lab_idx)
    terms: dict[str, torch.Tensor] = {"rec": L.reconstruction_loss(S_l, x_l) if p.n_lab else S.sum() * 0.0}
    weights: dict[str, float] = {"rec": cfg.w_rec}
    terms["edge"] = _switchable(cfg.edge, L.edge_loss, S_l, x_l) if p.n_lab else S.new_zeros(())
    weights["edge"] = cfg.w_edge if cfg.edge else 0.0
    w_map = _confidence(p, cfg)
    kd_idx = p.unl_idx if cfg.kd_on == "unlabelled" else None
    if (S.shape[0] if kd_idx is None else p.n_unl):
        terms["kd"] = _switchable(cfg.output_kd, L.output_distillation, _select(S, kd_idx), _select(p.T_label, kd_idx),
                                  _select(w_map, kd_idx), cfg.kd_loss, cfg.kd_delta)
    else:
        terms["kd"] = S.sum() * 0.0
    weights["kd"] = cfg.w_kd * scale if cfg.output_kd else 0.0
    adapted: list[torch.Tensor] = []
    ft_det = p.ft_det
    if adapters is not None and p.ft:
        sizes = [tuple(f.shape[-2:]) for f in p.ft]
        if cfg.feature_kd:
            adapted = adapters(p.fs, sizes)
            terms["feat"] = L.feature_distillation(adapted, ft_det)
        else:
            with torch.no_grad():
                terms["feat"] = L.feature_distillation(adapters([f.detach() for f in p.fs], sizes), ft_det)
        weights["feat"] = cfg.w_feat * scale if cfg.feature_kd else 0.0
    elif cfg.feature_kd:
        raise ConfigError("feature_kd is on but no adapters were given; build them with Adapters.for_models(student, teacher)")
    if p.fs and p.ft:
        paired = unwrap(adapters).pair_student(p.fs) if adapters is not None else _default_pairs(p.fs, p.ft)
        terms["att"] = _switchable(cfg.attention_kd, L.attention_transfer, paired, ft_det)
        weights["att"] = cfg.w_att * scale if cfg.attention_kd else 0.0
    with torch.no_grad():
        terms["kl"] = L.released_kl_term(S.detach(), p.T_det)
    return terms, weights, w_map, adapted


def balance(terms: dict, weights: dict, cfg: DistillConfig, state: DistillState, p: Passes, student: nn.Module,
            adapters: Optional[nn.Module]) -> None:
    """Rescale the distillation weights in place: ``"magnitude"`` (feature-type terms relative to the
    running L1 loss) or ``"gradnorm"`` (each term's gradient norm a fraction of rec's)."""
    if cfg.balance == "magnitude":
        rec_m = state.track("rec", float(terms["rec"].detach())) if p.n_lab else (
            state.magnitudes["rec"].value if "rec" in state.magnitudes else 1.0)
        for k in ("feat", "att"):
            if k in terms:
                weights[k] = weights[k] * (rec_m / max(state.track(k, float(terms[k].detach())), 1e-12))
    elif cfg.balance == "gradnorm":
        if p.S.requires_grad and p.n_lab and (not state.grad_factors or state.steps % cfg.gradnorm_every == 1
                                              or cfg.gradnorm_every == 1):
            _update_grad_factors(state, terms, student, adapters)
        for k in ("kd", "feat", "att"):
            if k in weights:
                weights[k] = weights[k] * state.grad_factors.get(k, 1.0)


def teacher_terms(p: Passes, cfg: DistillConfig, state: DistillState, teacher: nn.Module, adapted: list,
                  y: torch.Tensor, op, teacher_grad: bool, amp: bool, teacher_anchor: Optional[list]
                  ) -> tuple[torch.Tensor, dict]:
    """The teacher's correction loss (graph to the teacher when ``teacher_grad``) and its logged terms:
    its reconstruction + edge loss on the references, the feedback term towards the student's adapted
    features (with ``feature_kd``), the L2-SP anchor."""
    T_src = p.T if teacher_grad else p.T_det
    if p.n_lab:
        if p.cached and teacher_grad:
            with autocast(y.device, amp):
                T_lab = teacher(_select(y, p.lab_idx), op).float()
        else:
            T_lab = _select(T_src, p.lab_idx)
        tl = L.teacher_correction_loss(T_lab, _select(p.S, p.lab_idx).detach(), _select(p.x, p.lab_idx),
                                       edge_weight=cfg.t_edge_weight, error_focus=cfg.t_error_focus, feedback_weight=0.0)
        total = tl["loss"]
        logged = {k: float(tl[k]) for k in ("rec", "edge", "wrong_fraction")}
    else:
        total = T_src.sum() * 0.0
        logged = {"rec": float("nan"), "edge": float("nan"), "wrong_fraction": float("nan")}
    fb_w = 0.0
    if cfg.feature_kd and bool(adapted) and cfg.t_feedback_weight > 0:
        fb = L.feedback_loss(p.ft if teacher_grad else p.ft_det, [a.detach() for a in adapted])
        fb_w = cfg.t_feedback_weight
        if cfg.balance != "none" and p.n_lab:
            fb_w *= state.track("t_rec", logged["rec"]) / max(state.track("t_feedback", float(fb.detach())), 1e-12)
        elif cfg.balance != "none" and "t_rec" in state.magnitudes and "t_feedback" in state.magnitudes:
            fb_w *= state.magnitudes["t_rec"].value / max(state.magnitudes["t_feedback"].value, 1e-12)
        total = total + fb_w * fb
        logged["feedback"] = float(fb.detach())
    else:
        logged["feedback"] = 0.0
    logged["w_feedback"] = float(fb_w)
    if cfg.t_anchor > 0 and teacher_anchor is not None and teacher_grad:
        pen = L.anchor_penalty([q for q in (teacher.teacher if p.cached else unwrap(teacher)).parameters()],
                               teacher_anchor)
        total = total + cfg.t_anchor * pen
        logged["anchor"] = float(pen.detach())
    return total, logged


def distill_losses(student: nn.Module, teacher: nn.Module, adapters: Optional[nn.Module], y: torch.Tensor, op,
                   target: torch.Tensor, cfg: Optional[DistillConfig] = None, state: Optional[DistillState] = None,
                   teacher_grad: bool = False, amp: bool = False, labelled: Optional[torch.Tensor] = None,
                   teacher_anchor: Optional[list] = None) -> LossBreakdown:
    """Every distillation term of one batch (see the module docstring): :func:`forward_passes`,
    :func:`weighting`, :func:`student_terms`, :func:`balance`, :func:`teacher_terms`.

    Args:
        student: the CNN student (or its DDP wrapper): ``student(y, op, return_features=True)``.
        teacher: the ViT teacher (or its DDP wrapper, or a :class:`~kdmri_lib.distill.teacher_cache.TeacherCache`).
        adapters: :class:`Adapters` (or DDP wrapper) from the student's maps to the teacher's;
            may be None when ``feature_kd`` is off.
        y, op, target: measurement ``(B, 1, h, w)`` complex, its operator, ground truth
            ``(B, 1, H, W)`` float32 (normalised as the datasets yield them).
        cfg: the switches and weights (default: the full method).
        state: running :class:`DistillState` (EMA of the errors, step count); updated in place. None:
            a fresh one (the dynamic factor then comes from this batch alone; no warm-up ramp).
        teacher_grad: run the teacher with gradients and return ``teacher_total`` with its graph
            (the training loop in correction mode). False: teacher under ``torch.no_grad()``.
        amp: run the forward passes under the device's autocast (CUDA bf16/fp16).
        labelled: ``(B,)`` 1 for a sample with ground truth, 0 for a measurement-only sample
            (whose ``target`` is never used: every ground-truth term, the errors of the dynamic
            weight, the GT-based confidence and the teacher's correction see labelled samples
            only). None: every sample is labelled.
        teacher_anchor: correction with ``t_anchor > 0``: the teacher's pre-trained parameters.

    Returns:
        a :class:`LossBreakdown`. Works with gradients on or under ``torch.no_grad()``.
    """
    cfg = cfg or DistillConfig()
    fresh_state = state is None
    state = state or DistillState(cfg.ema_decay, cfg.dynamic_floor)
    state.floor = cfg.dynamic_floor
    p = forward_passes(student, teacher, y, op, target, cfg, teacher_grad, amp, labelled)
    lam, ramp, errors = weighting(p, cfg, state, fresh_state)
    terms, weights, w_map, adapted = student_terms(p, cfg, adapters, lam * ramp)
    balance(terms, weights, cfg, state, p, student, adapters)
    if cfg.prestage_steps:   # state.steps counts this batch (weighting() advanced it)
        off = ("rec", "edge", "kd") if state.steps <= cfg.prestage_steps else ("feat", "att")
        for k in off:
            if k in weights:
                weights[k] = 0.0
    total = p.S.new_zeros(())
    for k in STUDENT_TERMS:
        if k in terms and weights.get(k, 0.0) > 0:
            total = total + weights[k] * terms[k]
    t_total, t_terms = (teacher_terms(p, cfg, state, teacher, adapted, y, op, teacher_grad, amp, teacher_anchor)
                        if cfg.correction else (None, {}))
    maps = {"confidence": w_map.detach(), "student": p.S.detach(), "teacher": p.T_det, "teacher_label": p.T_label,
            "student_error": errors["student_error"], "teacher_error": errors["teacher_error"]}
    if p.spread is not None:
        maps["teacher_spread"] = p.spread
    return LossBreakdown(total=total, terms=terms, weights=weights, maps=maps, teacher_total=t_total,
                         teacher_terms=t_terms, dynamic=float(lam), warmup=float(ramp),
                         student_error=errors["e_s"], teacher_error=errors["e_t"])


def _update_grad_factors(state: DistillState, terms: dict, student: nn.Module, adapters: Optional[nn.Module]) -> None:
    """``balance="gradnorm"``: factor_k = EMA(|grad rec| / |grad term_k|) over the student's (and
    adapters') parameters, so that ``w_k`` is term k's gradient norm as a fraction of rec's."""
    params = [p for p in unwrap(student).parameters() if p.requires_grad]
    if adapters is not None:
        params += [p for p in unwrap(adapters).parameters() if p.requires_grad]

    def norm(t):
        return _grad_norm(t, params) if t.requires_grad else 0.0

    g_rec = norm(terms["rec"])
    if not (g_rec > 0):
        return
    for k in ("kd", "feat", "att"):
        if k in terms:
            g = norm(terms[k])
            if g > 0:
                f = g_rec / g
                old = state.grad_factors.get(k)
                state.grad_factors[k] = f if old is None else state.decay * old + (1 - state.decay) * f


def _default_pairs(fs, ft):
    from kdmri_lib.models.adapters import pairing

    return [fs[i] for i in pairing(len(ft), len(fs))]


def gradient_norms(breakdown: LossBreakdown, module: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of each *weighted* student term w.r.t. ``module``'s parameters
    (for the notebook's loss widget; needs a breakdown computed with gradients). Terms with weight
    0 or without a graph give 0.0."""
    params = [p for p in module.parameters() if p.requires_grad]
    out = {}
    for k in STUDENT_TERMS:
        t = breakdown.terms.get(k)
        w = breakdown.weights.get(k, 0.0)
        if t is None or w == 0 or not t.requires_grad:
            out[k] = 0.0
            continue
        out[k] = _grad_norm(w * t, params)
    return out


def gradient_angle(breakdown: LossBreakdown, module: nn.Module, a: str = "kd", b: str = "rec") -> Optional[float]:
    """Angle in degrees between the gradients (w.r.t. ``module``'s parameters) of the weighted
    student terms ``a`` and ``b`` — 0: they pull the weights the same way, 90: independently, 180:
    against each other; None when either term has no gradient (weight 0, switched off)."""
    params = [p for p in module.parameters() if p.requires_grad]
    vecs = []
    for k in (a, b):
        t, w = breakdown.terms.get(k), breakdown.weights.get(k, 0.0)
        if t is None or w == 0 or not t.requires_grad:
            return None
        grads = torch.autograd.grad(w * t, params, retain_graph=True, allow_unused=True)
        vecs.append(torch.cat([(g if g is not None else torch.zeros_like(p)).float().reshape(-1)
                               for g, p in zip(grads, params)]))
    na, nb = float(vecs[0].norm()), float(vecs[1].norm())
    if na == 0 or nb == 0:
        return None
    cos = float(vecs[0] @ vecs[1]) / (na * nb)
    return float(torch.rad2deg(torch.arccos(torch.tensor(max(-1.0, min(1.0, cos))))))


def _grad_norm(t: torch.Tensor, params) -> float:
    """L2 norm of the gradient of scalar ``t`` w.r.t. ``params`` (graph kept; nothing accumulated)."""
    grads = torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)
    sq = [g.float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0
