"""Small, tested demonstrations that the notebooks show (the logic stays out of the notebooks).

* :func:`upsampling_artefacts` — why the student up-samples with sub-pixel convolution
  (PixelShuffle) rather than zero insertion or a transposed convolution: at initialisation the
  latter two imprint a periodic "checkerboard" pattern on a flat image, PixelShuffle with ICNR
  initialisation (Aitken et al. 2017) does not.
* :func:`checkerboard_score` — how strongly an up-sampled image depends on the sub-pixel phase.
* :func:`data_consistency_steps` — gradient steps on ``0.5 ||A x - y||^2`` alone: the data term
  pulls the estimate towards the measurement, but cannot fill in what was not measured.
* :func:`classic_kd`, :func:`temperature_sweep` — classic distillation of class logits with a
  temperature (its premise: several classes), against the same term on one channel (always 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdmri_lib.mri.physics import Operator


def checkerboard_score(x: torch.Tensor, s: int) -> float:
    """Spread of the mean over the ``s x s`` sub-pixel phases, relative to the overall mean.

    For ``x`` ``(..., H, W)``: ``std_{i,j}( mean(x[..., i::s, j::s]) ) / |mean(x)|``. A flat image
    up-sampled without artefacts scores ~0; a checkerboard scores high.
    """
    phases = torch.stack([x[..., i::s, j::s].mean() for i in range(s) for j in range(s)])
    return float(phases.std() / (x.mean().abs() + 1e-12))


def icnr_(conv: nn.Conv2d, r: int) -> None:
    """ICNR initialisation: the ``r*r`` sub-pixel filters of each output channel start equal, so
    conv + PixelShuffle(r) begins as nearest-neighbour up-sampling of a convolution."""
    out_c, in_c, kh, kw = conv.weight.shape
    base = torch.empty(out_c // (r * r), in_c, kh, kw)
    nn.init.kaiming_normal_(base)
    with torch.no_grad():
        conv.weight.copy_(base.repeat_interleave(r * r, dim=0))
        if conv.bias is not None:
            conv.bias.zero_()


def _positive(layer: nn.Module) -> nn.Module:
    """Random but non-negative filters (smoothing kernels), so the outputs stay recognisable
    images and only the up-sampling's own pattern differs between methods."""
    with torch.no_grad():
        layer.weight.abs_()
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


@torch.no_grad()
def upsampling_artefacts(image: torch.Tensor, s: int = 2, channels: int = 8, seed: int = 0) -> dict:
    """Up-sample ``image`` ``(H, W)`` by ``s`` with three *untrained* (randomly initialised) layers.

    Each method maps 1 -> ``channels`` -> 1 channels with random non-negative 3x3 filters:

    * ``"zero insertion + conv"``: insert ``s-1`` zeros between pixels, then a 3x3 convolution;
    * ``"transposed conv"``: ``ConvTranspose2d(kernel 3, stride s)`` (kernel not divisible by the
      stride: uneven overlap);
    * ``"sub-pixel conv (PixelShuffle)"``: a 3x3 convolution to ``s*s`` times the channels at low
      resolution, then PixelShuffle, ICNR-initialised.

    Returns:
        dict name -> ``{"image": (sH, sW) tensor, "checkerboard": score}``; the outputs are made
        positive (absolute value) and normalised to mean 1 so the scores compare.
    """
    g = torch.Generator().manual_seed(seed)
    x = image.float()[None, None]
    H, W = x.shape[-2:]
    torch.manual_seed(seed)
    mix = torch.rand(1, channels, 1, 1, generator=g)

    def finish(y: torch.Tensor) -> torch.Tensor:
        y = (y * mix).sum(1).abs()[0]
        return y / y.mean()

    out = {}
    # zero insertion + conv
    z = torch.zeros(1, 1, H * s, W * s)
    z[..., ::s, ::s] = x
    conv = _positive(nn.Conv2d(1, channels, 3, padding=1))
    out["zero insertion + conv"] = finish(conv(z))
    # transposed convolution
    tconv = _positive(nn.ConvTranspose2d(1, channels, 3, stride=s, padding=1, output_padding=s - 1))
    out["transposed conv"] = finish(tconv(x))
    # sub-pixel convolution
    sconv = nn.Conv2d(1, channels * s * s, 3, padding=1)
    icnr_(sconv, s)
    _positive(sconv)
    out["sub-pixel conv (PixelShuffle)"] = finish(F.pixel_shuffle(sconv(x), s))
    return {k: {"image": v, "checkerboard": checkerboard_score(v, s)} for k, v in out.items()}


@torch.no_grad()
def data_consistency_steps(op: Operator, y: torch.Tensor, x0: torch.Tensor, target: torch.Tensor,
                           steps: int = 5, step_size: float = 1.0) -> list[dict]:
    """Plain gradient descent on ``0.5 ||A x - y||^2`` from ``x0`` (complex ``(B, 1, H, W)``).

    Returns one dict per iterate: ``residual`` ``||A x - y|| / ||y||`` and ``error``
    ``|| |x| - target || / ||target||``. With an orthonormal FFT and step 1 the first step
    already makes the measured samples exact; the unmeasured ones never change: the data term
    alone cannot reconstruct, a learned prior must fill in.
    """
    x = x0.clone()
    rows = []
    for k in range(steps + 1):
        r = (op.forward(x) - y).abs().norm() / y.abs().norm()
        e = (x.abs() - target).norm() / target.norm()
        rows.append({"step": k, "residual": float(r), "error": float(e)})
        x = x - step_size * op.data_grad(x, y)
    return rows


def gradient(loss: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    """``d loss / d wrt`` (zeros where ``loss`` does not depend on ``wrt``); the graph is kept."""
    (g,) = torch.autograd.grad(loss, wrt, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def classic_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton et al.'s distillation term for classifiers: ``tau^2 KL(softmax(t / tau) || softmax(s / tau))``
    over the class axis (dim 1), batch mean. The temperature ``tau`` softens the teacher's
    probabilities so that the small ones — which wrong classes it finds plausible — carry signal."""
    log_p = torch.log_softmax(student_logits / tau, dim=1)
    q = torch.softmax(teacher_logits / tau, dim=1)
    return torch.nn.functional.kl_div(log_p, q, reduction="batchmean") * tau ** 2


def temperature_sweep(student_logits: torch.Tensor, teacher_logits: torch.Tensor, taus=(1.0, 2.0, 4.0, 8.0)) -> list:
    """For each temperature: the entropy of the teacher's soft targets (nats), the classic KD term
    and the norm of its gradient w.r.t. the student's logits — on the given class logits ``(B, C)``
    and on a one-channel "image" of the same numbers (``(B * C, 1)``: one channel per pixel, as the
    released code applies it), where the softmax is 1 whatever the logit, so the term and its
    gradient are 0 at every temperature. Returns one dict per ``tau``."""
    rows = []
    for tau in taus:
        s = student_logits.detach().clone().requires_grad_(True)
        q = torch.softmax(teacher_logits / tau, dim=1)
        kl = classic_kd(s, teacher_logits, tau)
        s1 = student_logits.detach().reshape(-1, 1).clone().requires_grad_(True)
        kl1 = classic_kd(s1, teacher_logits.reshape(-1, 1), tau)
        rows.append({"tau": float(tau), "soft-target entropy": float(-(q * q.clamp_min(1e-12).log()).sum(1).mean()),
                     "KD (classes)": float(kl.detach()), "|grad| (classes)": float(gradient(kl, s).norm()),
                     "KD (one channel)": float(kl1.detach()), "|grad| (one channel)": float(gradient(kl1, s1).norm())})
    return rows
