"""What the paper's released training script really does, run literally (notebook 04's demonstrations).

The released CHPNet recipe, reduced to the parts that decide what is learned:

* the teacher is put in ``eval()`` and is in no optimiser: :func:`released_step` runs one step of
  that recipe and returns the teacher's weight hash before and after (unchanged: no correction);
* its distillation term is :func:`kdmri_lib.distill.losses.released_kl_term`, a KL divergence over the
  channel axis of a one-channel image (exactly 0, with a zero gradient);
* its edge loss compares Canny edge maps computed in NumPy on *detached* copies
  (:func:`released_canny_loss`, with scikit-image's Canny instead of OpenCV's): a number with no
  gradient. :func:`canny_ab` trains two students from identical weights, with and without it, and
  finds identical weights.

Two findings about kdmri's own first recipe, as measurements on a batch:

* :func:`dead_zone_fraction`: with ``L1(S, x) + L1(S, T)`` the per-pixel gradient is
  ``sign(S - x) + sign(S - T)``, zero wherever the student lies between the truth and the teacher;
* :func:`confidence_agreement`: where ``|T - x| < |S - x|`` (the teacher is "right"),
  ``sign(S - T) == sign(S - x)`` always, so confidence-weighted output distillation pulls exactly as
  the ground truth does there: it adds no teacher information.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Callable

import numpy as np
import torch
from torch import nn

from kdmri_lib.distill.losses import released_kl_term
from kdmri_lib.mri.physics import Operator


def weights_hash(model: nn.Module) -> str:
    """sha256 (16 hex digits) of every parameter and buffer of ``model``, in state-dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def released_canny_loss(student: torch.Tensor, target: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The released edge loss: ``mean |canny(S) - canny(x)|`` with both edge maps computed in NumPy
    on detached copies (``skimage.feature.canny`` on each ``(H, W)`` image scaled to [0, 1]).

    Returns a float32 scalar tensor that is not connected to ``student``: ``requires_grad`` is
    False, so ``backward()`` through a loss that adds it changes nothing."""
    from skimage.feature import canny

    def edges(t: torch.Tensor) -> np.ndarray:
        a = t.detach().float().cpu().numpy()            # what the released code does: leave the graph
        out = np.zeros(a.shape, dtype=np.float32)
        for idx in np.ndindex(a.shape[:-2]):
            im = a[idx]
            im = (im - im.min()) / max(float(im.max() - im.min()), 1e-12)
            out[idx] = canny(im, sigma=sigma).astype(np.float32)
        return out

    return torch.tensor(float(np.abs(edges(student) - edges(target)).mean()), dtype=torch.float32)


def released_step(student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer, y: torch.Tensor,
                  op: Operator, target: torch.Tensor, temperature: float = 4.0, w_kl: float = 1.0,
                  w_edge: float = 0.1) -> dict:
    """One step of the released recipe, literally: frozen teacher (``eval()``, no gradient, not in
    ``optimizer``), loss ``L1(S, x) + w_kl * KL_channel(S, T) + w_edge * Canny(S, x)``.

    Returns:
        ``teacher_before`` / ``teacher_after`` and ``student_before`` / ``student_after`` weight hashes,
        ``kl`` (the KL term's value), ``kl_grad_norm`` (its gradient with respect to the student's
        output), ``canny`` (the edge term) and ``canny_requires_grad``, ``loss``.
    """
    teacher.eval()
    t_before, s_before = weights_hash(teacher), weights_hash(student)
    with torch.no_grad():
        T = teacher(y, op)
    S = student(y, op)
    kl = released_kl_term(S, T, temperature)
    (kl_grad,) = torch.autograd.grad(kl, S, retain_graph=True, allow_unused=True)
    edge = released_canny_loss(S, target)
    loss = (S - target).abs().mean() + w_kl * kl + w_edge * edge
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"teacher_before": t_before, "teacher_after": weights_hash(teacher), "student_before": s_before,
            "student_after": weights_hash(student), "kl": float(kl.detach()),
            "kl_grad_norm": 0.0 if kl_grad is None else float(kl_grad.norm()), "canny": float(edge),
            "canny_requires_grad": bool(edge.requires_grad), "loss": float(loss.detach())}


def canny_ab(student: nn.Module, batches: Callable[[int], tuple], steps: int = 50, lr: float = 1e-3,
             w_edge: float = 0.1) -> dict:
    """Train two copies of ``student`` from identical weights for ``steps`` steps on the same batches
    (``batches(i) -> (y, op, target)``), A with ``L1`` alone, B with ``L1 + w_edge * released Canny``.

    Returns ``max_weight_difference`` between A and B after training (0.0: the Canny term changed
    nothing), the mean Canny loss B saw, and both final hashes."""
    a, b = copy.deepcopy(student), copy.deepcopy(student)
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=lr), torch.optim.Adam(b.parameters(), lr=lr)
    canny_values = []
    for i in range(steps):
        y, op, x = batches(i)
        for model, opt, with_edge in ((a, opt_a, False), (b, opt_b, True)):
            S = model(y, op)
            loss = (S - x).abs().mean()
            if with_edge:
                e = released_canny_loss(S, x)
                canny_values.append(float(e))
                loss = loss + w_edge * e
            opt.zero_grad()
            loss.backward()
            opt.step()
    diff = max(float((pa.detach() - pb.detach()).abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))
    return {"max_weight_difference": diff, "canny_mean": float(np.mean(canny_values)), "hash_a": weights_hash(a),
            "hash_b": weights_hash(b), "steps": steps}


def dead_zone_fraction(S: torch.Tensor, T: torch.Tensor, x: torch.Tensor, foreground: float = 0.05) -> float:
    """Fraction of foreground pixels (``x > foreground * max x``) where the gradient of
    ``|S - x| + |S - T|`` with respect to ``S``, ``sign(S - x) + sign(S - T)``, is zero: the student
    lies between the truth and the teacher and the two L1 terms cancel."""
    fg = x > foreground * x.max()
    g = torch.sign(S - x) + torch.sign(S - T)
    return float(((g == 0) & fg).sum() / fg.sum().clamp_min(1))


def confidence_agreement(S: torch.Tensor, T: torch.Tensor, x: torch.Tensor) -> dict:
    """Where the teacher is closer to the truth than the student (``|T - x| < |S - x|``), how often
    the distillation gradient ``sign(S - T)`` equals the ground-truth gradient ``sign(S - x)``.

    Returns ``{"agreement": fraction in [0, 1], "weighted_fraction": share of pixels where the
    teacher is closer}``. Agreement is 1 by construction: if ``T`` is closer to ``x`` than ``S`` is,
    ``T`` lies on the same side of ``S`` as ``x``."""
    closer = (T - x).abs() < (S - x).abs()
    same = torch.sign(S - T) == torch.sign(S - x)
    n = closer.sum()
    return {"agreement": float((same & closer).sum() / n.clamp_min(1)), "weighted_fraction": float(n / closer.numel())}
