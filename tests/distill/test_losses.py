"""Loss terms: every distillation term teaches (non-zero gradient), the released KL term cannot."""

from __future__ import annotations

import pytest
import torch

from kdmri_lib.distill import losses


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 24, 24, generator=g)
    S = (x + 0.3 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    T = x + 0.1 * torch.randn(x.shape, generator=g)
    return x, S, T


def _grad(loss, t):
    (g,) = torch.autograd.grad(loss, t, retain_graph=True, allow_unused=True)
    return torch.zeros_like(t) if g is None else g


@pytest.mark.parametrize("term", ["rec", "edge", "kd", "kd_hard", "kd_soft", "feature", "attention"])
def test_each_student_term_has_a_nonzero_gradient(batch, term):
    x, S, T = batch
    fs = torch.randn(2, 8, 12, 12, requires_grad=True)      # student feature
    ft = torch.randn(2, 16, 6, 6)                            # teacher token map
    adapter = torch.nn.Conv2d(8, 16, 1)
    if term == "rec":
        loss, wrt = losses.reconstruction_loss(S, x), S
    elif term == "edge":
        loss, wrt = losses.edge_loss(S, x), S
    elif term.startswith("kd"):
        mode = {"kd": "none", "kd_hard": "hard", "kd_soft": "soft"}[term]
        loss, wrt = losses.output_distillation(S, T, losses.confidence_weights(S, T, x, mode)), S
    elif term == "feature":
        a = torch.nn.functional.interpolate(adapter(fs), size=(6, 6), mode="bilinear")
        loss, wrt = losses.feature_distillation([a], [ft]), fs
    else:
        loss, wrt = losses.attention_transfer([fs], [ft]), fs
    assert loss.item() > 0
    assert _grad(loss, wrt).abs().sum() > 0


def test_released_one_channel_kl_is_exactly_zero_with_zero_gradient(batch):
    """The released training script's distillation term: softmax over one channel == 1."""
    x, S, T = batch
    kl = losses.released_kl_term(S, T, temperature=4.0)
    assert kl.item() == 0.0
    assert torch.equal(_grad(kl, S), torch.zeros_like(S))
    # with several channels the same formula is a real loss (so the zero is the one-channel's fault)
    S3 = torch.randn(2, 3, 8, 8, requires_grad=True)
    kl3 = losses.released_kl_term(S3, torch.randn(2, 3, 8, 8))
    assert kl3.item() > 0 and _grad(kl3, S3).abs().sum() > 0


def test_canny_like_detached_edge_loss_has_no_gradient_but_ours_does(batch):
    x, S, T = batch
    detached = (losses.gradient_magnitude(S.detach()) - losses.gradient_magnitude(x)).abs().mean()
    assert not detached.requires_grad
    assert _grad(losses.edge_loss(S, x), S).abs().sum() > 0


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_confidence_weights_are_zero_where_the_teacher_is_worse(batch, mode):
    x, S, T = batch
    T = T.clone()
    T[..., :12] = x[..., :12] + 5.0          # teacher much worse on the left half
    w = losses.confidence_weights(S, T, x, mode)
    worse = (T - x).abs() >= (S - x).abs()
    assert (w[worse] == 0).all()
    assert (w[~worse] > 0).all() and (w <= 1).all() and (w >= 0).all()
    assert not w.requires_grad
    # the distillation gradient vanishes exactly where the teacher is worse
    g = _grad(losses.output_distillation(S, T, w), S)
    assert (g[worse] == 0).all() and g[~worse].abs().sum() > 0


def test_dynamic_weight_direction():
    # more teaching while the student lags, none once it is as good as the teacher
    assert losses.dynamic_weight(0.4, 0.1) > losses.dynamic_weight(0.2, 0.1) > 0
    assert losses.dynamic_weight(0.1, 0.1) == 0.0
    assert losses.dynamic_weight(0.05, 0.1) == 0.0
    assert 0 <= losses.dynamic_weight(1e6, 1e-6) <= 1.0
    ema = losses.EMA(0.5)
    assert ema.update(1.0) == 1.0 and ema.update(0.0) == 0.5


def test_teacher_correction_loss_reaches_the_teacher_only(batch):
    x, S, _ = batch
    T = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    tf = torch.randn(2, 16, 6, 6, requires_grad=True)
    sa = torch.randn(2, 16, 6, 6, requires_grad=True)
    out = losses.teacher_correction_loss(T, S, x, [tf], [sa], feedback_weight=0.1)
    loss = out["loss"]
    assert _grad(loss, T).abs().sum() > 0 and _grad(loss, tf).abs().sum() > 0
    assert _grad(loss, S).abs().sum() == 0 and _grad(loss, sa).abs().sum() == 0
    assert 0 <= float(out["wrong_fraction"]) <= 1
    # error focus: pixels where the student is better weigh more
    plain = losses.teacher_correction_loss(T, S, x, error_focus=0.0, edge_weight=0.0)["rec"]
    focused = losses.teacher_correction_loss(T, S, x, error_focus=1.0, edge_weight=0.0)["rec"]
    assert focused > plain
