r"""Loss terms of corrective heterogeneous distillation, each one switchable and differentiable.

Notation (all images ``(B, 1, H, W)`` magnitudes, normalised as the datasets yield them):
``x`` ground truth, ``S`` student output, ``T`` teacher output.

Student terms
-------------
* reconstruction :math:`\mathcal{L}_{rec} = \|S - x\|_1` (mean absolute error);
* edge :math:`\mathcal{L}_{edge} = \| |\nabla S| - |\nabla x| \|_1` with Sobel gradients —
  differentiable, unlike the released code's Canny loss computed in NumPy on detached copies;
* output distillation :math:`\mathcal{L}_{kd} = \operatorname{mean}(w \odot |S - T|)` with the
  teacher detached and per-pixel confidence weights ``w`` (:func:`confidence_weights`): the
  teacher teaches only where it is right;
* feature distillation: student feature maps go through adapters (1x1 conv + resize,
  :mod:`kdmri_lib.models.adapters`) to the teacher's token maps; the loss compares them after a
  per-channel normalisation (:func:`feature_distillation`), and spatial *attention maps*
  :math:`a(F) = \operatorname{mean}_c F_c^2` — architecture-agnostic — are matched as well
  (:func:`attention_transfer`, Zagoruyko & Komodakis 2017).

Teacher correction (the teacher keeps learning while it teaches)
----------------------------------------------------------------
:func:`teacher_correction_loss` = its own reconstruction + edge loss, where pixels on which the
student currently beats the teacher (the teacher's knowledge is *erroneous* there) weigh
``1 + beta``, plus a feedback term that pulls the teacher's token maps towards what the
student's adapted features can express (student-friendly teacher, cf. SFT-KD-Recon).

Dynamic weighting
-----------------
:func:`dynamic_weight` scales the distillation terms with the student/teacher error ratio
``r = e_S / e_T``: ``lambda = clamp(1 - 1/r, 0, 1)`` — close to 1 while the student lags far
behind, 0 once the student is as good as the teacher (no teaching where the teacher is worse).

The released code's distillation term, :func:`released_kl_term`, is kept for teaching: a
softmax over the channel axis of a one-channel image is identically 1, so the KL divergence is
exactly 0 and has zero gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from kdmri_lib.core.errors import check_choice

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradients ``(B, C, H, W) -> (B, C, 2, H, W)`` (d/dy, d/dx), replicate padding."""
    B, C, H, W = x.shape
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    k = torch.stack([kx.t(), kx])[:, None]                      # (2, 1, 3, 3)
    g = F.conv2d(F.pad(x.reshape(B * C, 1, H, W), (1, 1, 1, 1), mode="replicate"), k)
    return g.reshape(B, C, 2, H, W)


def gradient_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Sobel gradient magnitude ``(B, C, H, W)`` (smooth at zero thanks to ``eps``)."""
    g = sobel(x)
    return torch.sqrt(g.pow(2).sum(2) + eps * eps)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (L1), the reconstruction loss of SwinIR and CHPNet."""
    return (pred - target).abs().mean()


def edge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradient magnitudes of ``pred`` and ``target`` (differentiable)."""
    return (gradient_magnitude(pred) - gradient_magnitude(target)).abs().mean()


def confidence_weights(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                       mode: str = "soft", eps: float = 1e-8) -> torch.Tensor:
    """Per-pixel confidence of the teacher: where it is right, it teaches.

    With ``e_S = |S - x|`` and ``e_T = |T - x|`` (detached):

    * ``"hard"``: ``w = 1[e_T < e_S]``;
    * ``"soft"``: ``w = clamp((e_S - e_T) / (e_S + eps), 0, 1)`` — 0 where the teacher is no
      better than the student, approaching 1 where the teacher is much better;
    * ``"none"``: ``w = 1`` everywhere (vanilla distillation).

    Returns:
        ``(B, 1, H, W)`` weights in [0, 1], no gradient.
    """
    check_choice("confidence mode", mode, ("none", "hard", "soft"))   # "uncertainty": uncertainty_weights
    with torch.no_grad():
        if mode == "none":
            return torch.ones_like(student)
        e_s = (student - target).abs()
        e_t = (teacher - target).abs()
        if mode == "hard":
            return (e_t < e_s).to(student.dtype)
        return ((e_s - e_t) / (e_s + eps)).clamp(0.0, 1.0)


def output_distillation(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None,
                        loss: str = "l1", delta: float = 0.02) -> torch.Tensor:
    """``mean(w * rho(S - T))`` with the teacher detached (the student moves towards the teacher).

    ``loss="l1"``: ``rho(r) = |r|``, whose gradient ``sign(S - T)`` has the same size on every
    pixel, also where the student already agrees with the teacher up to noise; ``"huber"``:
    ``rho(r) = r^2 / (2 delta)`` for ``|r| < delta``, ``|r| - delta / 2`` beyond (PyTorch's
    smooth L1), quiet where the two agree and an L1 pull where they differ by more than ``delta``.
    """
    check_choice("output distillation loss", loss, ("l1", "huber"))
    r = student - teacher.detach()
    d = r.abs() if loss == "l1" else F.smooth_l1_loss(student, teacher.detach(), beta=delta, reduction="none")
    return (d * weights).mean() if weights is not None else d.mean()


def _channel_norm(f: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel of ``(B, C, h, w)`` to zero mean, unit variance over space."""
    mu = f.mean(dim=(-2, -1), keepdim=True)
    sd = f.var(dim=(-2, -1), keepdim=True, unbiased=False).add(eps).sqrt()
    return (f - mu) / sd


def feature_distillation(adapted: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over pairs of the MSE between channel-normalised adapted student features and
    teacher features (teacher detached). Shapes must match pairwise: ``(B, C_T, h_T, w_T)``."""
    if len(adapted) != len(teacher_feats) or not adapted:
        raise ValueError(f"feature_distillation needs matching non-empty lists; got {len(adapted)} and {len(teacher_feats)}")
    losses = [F.mse_loss(_channel_norm(a), _channel_norm(t.detach())) for a, t in zip(adapted, teacher_feats)]
    return torch.stack(losses).mean()


def attention_map(f: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Spatial attention map ``mean_c f^2`` of ``(B, C, h, w)``, resized to ``size`` if given,
    flattened and L2-normalised per sample: ``(B, h*w)``. Works for CNN and ViT features alike."""
    a = f.pow(2).mean(1, keepdim=True)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    a = a.flatten(1)
    return F.normalize(a, dim=1)


def attention_transfer(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention transfer between architectures: the student's spatial attention maps (resized to
    the teacher's token grid) match the teacher's. Pairs are matched in order (teacher
    detached); the loss is the mean squared distance of the normalised maps."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"attention_transfer needs matching non-empty lists; got {len(student_feats)} and {len(teacher_feats)}")
    losses = []
    for s, t in zip(student_feats, teacher_feats):
        at = attention_map(t.detach())
        as_ = attention_map(s, size=t.shape[-2:])
        losses.append((as_ - at).pow(2).sum(1).mean())
    return torch.stack(losses).mean()


def released_kl_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """The released CHPNet distillation term, kept to show why it cannot teach anything:
    ``KLDiv(log_softmax(S / t, dim=1), softmax(T / t, dim=1)) * t^2`` over the channel axis of a
    one-channel image. The softmax of one channel is identically 1, so the term is exactly 0 and
    its gradient with respect to the student is exactly 0."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature ** 2


def dynamic_weight(student_error: torch.Tensor | float, teacher_error: torch.Tensor | float, eps: float = 1e-12,
                   floor: float = 0.0) -> float:
    """Distillation strength from the student/teacher error ratio ``r = e_S / e_T``:
    ``clamp(1 - 1/r, floor, 1) = clamp((e_S - e_T) / e_S, floor, 1)``. Increases with the student's
    lag; without a ``floor`` it is 0 once the student is as good as the teacher *on the references*
    — which switched distillation off for 75 % of a demo run, although the teacher still knew the
    measurement-only slices better. ``floor`` keeps that much teaching on."""
    es = float(student_error)
    et = float(teacher_error)
    return float(min(max((es - et) / (es + eps), float(floor)), 1.0))


def uncertainty_weights(spread: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Confidence of the teacher from its own uncertainty, no ground truth involved.

    ``spread``: ``(B, 1, H, W)`` per-pixel standard deviation of the teacher's predictions under
    test-time augmentation (:func:`kdmri_lib.distill.teacher_tta`). With ``u`` its per-image mean,
    ``w = 1 / (1 + (spread / u)^2)``, rescaled to mean 1 per image: where the teacher's augmented
    predictions disagree, it teaches less. Returns ``(B, 1, H, W)``, no gradient.
    """
    with torch.no_grad():
        u = spread.mean(dim=(-2, -1), keepdim=True).clamp_min(eps)
        w = 1.0 / (1.0 + (spread / u) ** 2)
        return w / w.mean(dim=(-2, -1), keepdim=True).clamp_min(eps)


def anchor_penalty(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2-SP (Li et al., ICML 2018): ``sum ||p - p0||^2`` over the parameters, ``p0`` the
    pre-trained values (detached). Keeps a corrected teacher near what it learnt on the source
    domain while it adapts to a few target references."""
    params, anchor = list(params), list(anchor)
    if len(params) != len(anchor) or not params:
        raise ValueError(f"anchor_penalty needs matching non-empty lists; got {len(params)} and {len(anchor)}")
    return torch.stack([(p.float() - a.detach().float()).pow(2).sum() for p, a in zip(params, anchor)]).sum()


class EMA:
    """Exponential moving average of a scalar (smooths the per-batch errors of dynamic weighting)."""

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self.value: float | None = None

    def update(self, v: float) -> float:
        v = float(v)
        self.value = v if self.value is None else self.decay * self.value + (1 - self.decay) * v
        return self.value

    def state_dict(self) -> dict:
        return {"decay": self.decay, "value": self.value}

    def load_state_dict(self, d: dict) -> None:
        self.decay, self.value = d["decay"], d["value"]


def feedback_loss(teacher_feats: Sequence[torch.Tensor], adapted_student: Sequence[torch.Tensor]) -> torch.Tensor:
    """The teacher's feedback term: mean over pairs of the MSE between the teacher's channel-normalised
    token maps and the (detached) adapted student features. Gradients reach the teacher only."""
    if len(teacher_feats) != len(adapted_student) or not teacher_feats:
        raise ValueError(f"feedback_loss needs matching non-empty lists; got {len(teacher_feats)} and {len(adapted_student)}")
    return torch.stack([F.mse_loss(_channel_norm(t), _channel_norm(a.detach()))
                        for t, a in zip(teacher_feats, adapted_student)]).mean()


def teacher_correction_loss(teacher_out: torch.Tensor, student_out: torch.Tensor, target: torch.Tensor,
                            teacher_feats: Sequence[torch.Tensor] = (), adapted_student: Sequence[torch.Tensor] = (),
                            edge_weight: float = 0.1, error_focus: float = 1.0, feedback_weight: float = 0.05) -> dict:
    """The teacher's loss while it teaches (gradients flow to the teacher only).

    * ``rec``: L1 to the ground truth, weighted ``1 + error_focus`` on pixels where the student
      is currently better than the teacher (the teacher's erroneous knowledge gets corrected first);
    * ``edge``: Sobel edge loss to the ground truth;
    * ``feedback``: MSE between the teacher's channel-normalised token maps and the (detached)
      adapted student features — the teacher drifts towards knowledge the student can express.

    Returns:
        dict with ``loss`` (total) and the terms ``rec``, ``edge``, ``feedback`` (tensors).
    """
    with torch.no_grad():
        wrong = ((teacher_out - target).abs() > (student_out - target).abs()).to(teacher_out.dtype)
        w = 1.0 + error_focus * wrong
    rec = ((teacher_out - target).abs() * w).mean()
    edge = edge_loss(teacher_out, target)
    if teacher_feats and adapted_student:
        fb = feedback_loss(teacher_feats, adapted_student)
    else:
        fb = teacher_out.new_zeros(())
    total = rec + edge_weight * edge + feedback_weight * fb
    return {"loss": total, "rec": rec.detach(), "edge": edge.detach(), "feedback": fb.detach(),
            "wrong_fraction": wrong.mean()}
