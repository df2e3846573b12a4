"""Property tests over the model registry, plus the teacher/student specifics and an overfit test."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kdmri_lib import models as M
from kdmri_lib.core.errors import ConfigError
from kdmri_lib.mri.physics import build_operator

LEARNED_ALL = [s for s in M.registry() if s.kind in M.MODEL_KINDS]
TINY = [s for s in M.registry(presets=["tiny"])]

#: small sizes each task takes (sr: divisible by the scale; odd low-res / odd cs sizes on purpose)
ODD_SIZES = {("sr", 2): (34, 38), ("sr", 4): (36, 44), ("cs", 4): (33, 45), ("cs", 8): (33, 45)}
SMALL_SIZES = {("sr", 2): (32, 24), ("sr", 4): (32, 48), ("cs", 4): (24, 20), ("cs", 8): (24, 20)}


def _id(spec):
    return spec.id


def measurement(task, factor, shape, batch=2, seed=0, per_sample_masks=False):
    """A measurement of a random smooth-ish complex image and its operator."""
    g = torch.Generator().manual_seed(seed)
    img = torch.complex(torch.rand(batch, 1, *shape, generator=g), 0.2 * torch.randn(batch, 1, *shape, generator=g))
    if task == "cs" and per_sample_masks:
        from kdmri_lib.mri.masks import make_mask

        mask = torch.stack([make_mask(shape[1], factor, seed=i) for i in range(batch)]).reshape(batch, 1, 1, -1)
        op = build_operator(task, factor, shape, mask=mask)
    else:
        op = build_operator(task, factor, shape, seed=seed)
    return op.forward(img), op


# --------------------------------------------------------------------------------------------
# registry properties
# --------------------------------------------------------------------------------------------

def test_registry_lists_every_model():
    specs = list(M.registry())
    assert len(specs) == 3 * 3 * 4 + 4 + 2 + 2  # learned x presets x task-factors + baselines where defined
    assert {s.kind for s in specs} == set(M.ALL_KINDS)
    assert all(s.kind != "bicubic" or s.task == "sr" for s in specs)


@pytest.mark.parametrize("spec", LEARNED_ALL + [s for s in M.registry() if s.kind in M.BASELINES], ids=_id)
def test_forward_contract(spec):
    """Shape, dtype, finiteness, features: every kind x preset x task, batch 2, small image."""
    torch.manual_seed(0)
    model = spec.build()
    H, W = SMALL_SIZES[(spec.task, spec.factor)]
    y, op = measurement(spec.task, spec.factor, (H, W))
    out, feats = model(y, op, return_features=True)
    assert out.shape == (2, 1, H, W) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert isinstance(feats, list) and len(feats) == len(model.feature_channels)
    for f, c in zip(feats, model.feature_channels):
        assert f.dim() == 4 and f.shape[:2] == (2, c) and torch.isfinite(f).all()
    assert model(y, op).shape == out.shape  # plain call returns the image only
    assert json.loads(json.dumps(model.config)) == model.config


@pytest.mark.parametrize("spec", TINY, ids=_id)
def test_batches_and_odd_sizes(spec):
    """Batch 1 and 3 at odd sizes; each sample of a batch reconstructed as if alone (cs: own mask)."""
    torch.manual_seed(0)
    model = spec.build().eval()
    H, W = ODD_SIZES[(spec.task, spec.factor)]
    y, op = measurement(spec.task, spec.factor, (H, W), batch=3, per_sample_masks=True)
    with torch.no_grad():
        out = model(y, op)
        assert out.shape == (3, 1, H, W) and torch.isfinite(out).all()
        op1 = build_operator(spec.task, spec.factor, (H, W), mask=op.mask[1]) if spec.task == "cs" else op
        one = model(y[1:2], op1)
    assert one.shape == (1, 1, H, W)
    torch.testing.assert_close(one, out[1:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", LEARNED_ALL, ids=_id)
def test_gradients_reach_every_parameter(spec):
    """No unused layers: every parameter gets a non-zero gradient from the image loss."""
    torch.manual_seed(0)
    model = spec.build()
    H, W = SMALL_SIZES[(spec.task, spec.factor)]
    y, op = measurement(spec.task, spec.factor, (H, W), seed=1)
    target = torch.rand(2, 1, H, W)
    loss = (model(y, op) - target).abs().mean()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("spec", [s for s in TINY if s.kind in M.MODEL_KINDS], ids=_id)
def test_eval_is_deterministic(spec):
    torch.manual_seed(0)
    model = spec.build().eval()
    y, op = measurement(spec.task, spec.factor, ODD_SIZES[(spec.task, spec.factor)])
    with torch.no_grad():
        a, fa = model(y, op, return_features=True)
        b, fb = model(y, op, return_features=True)
    assert torch.equal(a, b)
    assert all(torch.equal(u, v) for u, v in zip(fa, fb))


@pytest.mark.parametrize("kind", M.MODEL_KINDS)
def test_config_rebuilds_the_model(kind):
    torch.manual_seed(0)
    model = M.build_model(kind, "tiny", "sr", 4).eval()
    clone = M.build_model(**model.config).eval()
    clone.load_state_dict(model.state_dict())
    y, op = measurement("sr", 4, (32, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(y, op), clone(y, op))


def test_overrides_are_recorded_and_checked():
    m = M.build_model("student", "tiny", "cs", 4, iterations=2, channels=(8, 16, 16))
    assert m.config["iterations"] == 2 and m.iterations == 2 and m.feature_channels == [16, 16, 8]
    assert json.loads(json.dumps(m.config)) == m.config
    assert M.build_model(**m.config).iterations == 2
    with pytest.raises(ConfigError, match="valid: .*iterations"):
        M.build_model("student", "tiny", "cs", 4, iteration=2)


# --------------------------------------------------------------------------------------------
# bad input: clear errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", M.MODEL_KINDS + ("zero_filled",))
def test_wrong_channel_count(kind):
    model = M.build_model(kind, "tiny", "sr", 4)
    y, op = measurement("sr", 4, (32, 32))
    with pytest.raises(ConfigError, match=r"\(B, 1, 8, 8\)"):
        model(torch.cat([y, y], dim=1), op)
    with pytest.raises(ConfigError, match=r"\(B, 1, 8, 8\)"):
        model(y[:, 0], op)


def test_wrong_spatial_size():
    model = M.build_model("student", "tiny", "sr", 4)
    op = build_operator("sr", 4, (32, 32))
    with pytest.raises(ConfigError, match=r"\(B, 1, 8, 8\).*got \(1, 1, 9, 8\)"):
        model(torch.zeros(1, 1, 9, 8, dtype=torch.complex64), op)
    # a size the task cannot take: the sr operator itself refuses it
    with pytest.raises(ConfigError, match="divisible by the scale"):
        build_operator("sr", 4, (34, 32))


def test_operator_of_another_task_or_scale():
    model = M.build_model("teacher", "tiny", "sr", 4)
    y, op = measurement("cs", 4, (32, 32))
    with pytest.raises(ConfigError, match="task 'sr'"):
        model(y, op)
    y2, op2 = measurement("sr", 2, (32, 32))
    with pytest.raises(ConfigError, match="scale 4"):
        model(y2, op2)


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError, match="'tiny', 'small', 'paper'"):
        M.build_model("student", "huge", "sr", 4)
    with pytest.raises(ConfigError, match="'teacher', 'student', 'unet'"):
        M.build_model("resnet", "tiny", "sr", 4)
    with pytest.raises(ConfigError, match="'sr', 'cs'"):
        M.build_model("student", "tiny", "mri", 4)
    with pytest.raises(ConfigError, match="2, 3, 4, 8"):
        M.build_model("teacher", "tiny", "sr", 5)
    with pytest.raises(ConfigError, match="'sr' only"):
        M.build_model("bicubic", "tiny", "cs", 4)


# --------------------------------------------------------------------------------------------
# model specifics
# --------------------------------------------------------------------------------------------

def test_paper_parameter_counts():
    n_teacher = sum(p.numel() for p in M.build_model("teacher", "paper", "sr", 4).parameters())
    assert abs(n_teacher - 11.8e6) / 11.8e6 < 0.05, n_teacher
    for task, factor in M.TASK_FACTORS:
        n_student = sum(p.numel() for p in M.build_model("student", "paper", task, factor).parameters())
        assert n_student <= 1.0e6, (task, factor, n_student)


def test_student_structure():
    m = M.build_model("student", "small", "sr", 4)
    assert torch.allclose(m.delta, torch.full((4,), 0.1)) and torch.allclose(m.eta, torch.full((4,), 0.9))
    assert not any(isinstance(x, nn.ConvTranspose2d) for x in m.modules())
    assert isinstance(m.upsampler[-1], nn.PixelShuffle)
    assert sum(isinstance(x, nn.PixelShuffle) for x in m.denoiser.modules()) == len(m.denoiser.channels)


def test_student_uses_the_exact_data_term():
    """With D = identity (eta = 0) the student is plain gradient descent on ||Ax - y||^2."""
    m = M.build_model("student", "tiny", "cs", 4, iterations=2, eta_init=0.0, delta_init=1.0).eval()
    y, op = measurement("cs", 4, (24, 24), batch=1)
    x = op.adjoint(y)
    for _ in range(2):
        x = x - op.data_grad(x, y)
    with torch.no_grad():
        torch.testing.assert_close(m(y, op), x.abs(), rtol=1e-4, atol=1e-5)


def test_teacher_attention_maps():
    torch.manual_seed(0)
    model = M.build_model("teacher", "tiny", "sr", 2).eval()
    y, op = measurement("sr", 2, (40, 36), batch=2)  # 20 x 18 tokens -> padded 24 x 24
    # expected support of token (5, 17) (window rows x cols, cropped to the 20 x 18 grid), and of
    # token (1, 1) whose shifted window wraps around: the shift mask keeps it to rows/cols 0..3
    supports = {0: {(5, 17): (range(0, 8), range(16, 18)), (1, 1): (range(0, 8), range(0, 8))},
                1: {(5, 17): (range(4, 12), range(12, 18)), (1, 1): (range(0, 4), range(0, 4))}}
    for layer, shift in ((0, 0), (1, 4)):
        maps = model.attention_maps(y, op, group=1, layer=layer)
        assert maps.weights.shape == (2, 3, 3, 2, 64, 64) and maps.shift == shift
        torch.testing.assert_close(maps.weights.sum(-1), torch.ones(2, 3, 3, 2, 64))
        for (r, c), (rows, cols) in supports[layer].items():
            q = maps.query(r, c, batch=1)
            assert q.shape == (20, 18) and q[r, c] > 0
            expected = torch.zeros(20, 18, dtype=torch.bool)
            expected[rows.start:rows.stop, cols.start:cols.stop] = True
            assert torch.equal(q > 0, expected), (layer, r, c)
            assert float(q.sum()) <= 1.0 + 1e-5
    with pytest.raises(ConfigError, match="group"):
        model.attention_maps(y, op, group=7)


def test_window_attention_matches_explicit_softmax():
    """The fused SDPA path equals softmax(q k^T / sqrt(d) + bias + shift mask) v."""
    from kdmri_lib.models.teacher import WindowAttention, shift_mask, window_partition

    torch.manual_seed(0)
    attn = WindowAttention(dim=8, window_size=4, num_heads=2).eval()
    x = torch.randn(2, 8, 12, 8)  # B, H, W, C: 2 x 3 windows per image
    mask = shift_mask(8, 12, 4, 2, x.device)
    tokens = window_partition(x, 4)
    attn.store_attention = True
    out = attn(tokens, mask)
    a = attn.last_attention
    qkv = attn.qkv(tokens).reshape(12, 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
    ref = attn.proj((a @ qkv[2]).transpose(1, 2).reshape(12, 16, 8))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (a[mask.isinf().unsqueeze(1).repeat(2, 2, 1, 1)] == 0).all()


def test_student_feature_sizes():
    model = M.build_model("student", "small", "cs", 4)
    y, op = measurement("cs", 4, (33, 45), batch=1)
    _, feats = model(y, op, return_features=True)
    # unshuffle 4, three levels: ceil(33/4) x ceil(45/4), then /2, /4 (coarse to fine)
    assert [tuple(f.shape[-2:]) for f in feats] == [(3, 3), (5, 6), (9, 12)]


def test_baseline_definitions():
    y, op = measurement("sr", 4, (32, 32), batch=1)
    zf = M.build_model("zero_filled", "paper", "sr", 4)
    torch.testing.assert_close(zf(y, op), op.adjoint(y).abs(), rtol=1e-5, atol=1e-5)
    low = op.initial(y).abs()
    lowres = M.build_model("lowres", "none", "sr", 4)(y, op)
    torch.testing.assert_close(lowres[..., ::4, ::4], low, rtol=1e-5, atol=1e-5)
    bicubic = M.build_model("bicubic", "none", "sr", 4)(y, op)
    assert (bicubic >= 0).all()
    torch.testing.assert_close(bicubic[..., ::4, ::4], low, rtol=1e-4, atol=1e-4)  # interpolates, on the grid
    # a smooth image (band-limited well inside the measured block): bicubic close to the truth,
    # much closer than the half-pixel-centred F.interpolate would be (sampling geometry test)
    r = torch.arange(64.0)
    smooth = (torch.sin(2 * torch.pi * r / 64)[:, None] * torch.cos(2 * torch.pi * r / 64)[None] + 2)[None, None]
    op64 = build_operator("sr", 4, (64, 64))
    y64 = op64.forward(smooth.to(torch.complex64))
    inner = (..., slice(8, -8), slice(8, -8))  # away from the border padding
    err = (M.build_model("bicubic", "none", "sr", 4)(y64, op64) - smooth)[inner].abs().max()
    naive = (torch.nn.functional.interpolate(op64.initial(y64).abs(), scale_factor=4, mode="bicubic") - smooth)
    assert err < 0.03 and naive[inner].abs().max() > 5 * err, (err, naive[inner].abs().max())
    # a fully sampled cs acquisition: the zero-filled image is the image
    img = torch.rand(1, 1, 16, 16).to(torch.complex64)
    op1 = build_operator("cs", 1, (16, 16))
    torch.testing.assert_close(M.build_model("zero_filled", "none", "cs", 1)(op1.forward(img), op1), img.abs(),
                               rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in zf.parameters()) == 0


# --------------------------------------------------------------------------------------------
# the models can learn: overfit a fixed batch of whole demo slices, with their training recipes' lr
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,task,factor", [("student", "sr", 4), ("teacher", "sr", 4), ("unet", "sr", 4),
                                              ("student", "cs", 4)])
def test_tiny_model_overfits_demo_slices(demo_dir, kind, task, factor):
    """MSE falls >= 4x (+6 dB; from the untrained model, which starts near the zero-filled image)
    within 300 Adam steps at 3x the recipe's lr on 2 fixed whole demo slices; stops at 10x."""
    from torch.utils.data import default_collate

    from kdmri_lib.datasets.data import MRISliceDataset, batch_operator
    from kdmri_lib.engine.train import RECIPES

    torch.manual_seed(0)
    ds = MRISliceDataset(demo_dir / "singlecoil_train", task, factor)
    batch = default_collate([ds[i] for i in (20, 60)])
    op = batch_operator(batch, task, factor)
    model = M.build_model(kind, "tiny", task, factor)
    opt = torch.optim.Adam(model.parameters(), lr=3 * RECIPES[kind]["lr"])

    def mse():
        return torch.mean((model(batch["y"], op) - batch["target"]) ** 2)

    with torch.no_grad():
        start = float(mse())
    for _ in range(300):
        loss = mse()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < start / 10:
            break
    with torch.no_grad():
        end = float(mse())
    assert end <= start / 4, (start, end)


# --------------------------------------------------------------------------------------------
# CUDA (skipped where there is none)
# --------------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", M.MODEL_KINDS)
def test_cuda_matches_cpu_and_trains_under_autocast(kind):
    from kdmri_lib.core.device import autocast

    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = M.build_model(kind, "tiny", "cs", 4).eval()
    y, op = measurement("cs", 4, (40, 48))
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # compare true float32
    try:
        with torch.no_grad():
            ref = model(y, op)
            model.to(dev)
            out = model(y.to(dev), op.to(dev))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert out.device.type == "cuda" and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-3, atol=1e-3)
    model.train().to(memory_format=torch.channels_last)
    with autocast(dev):
        out = model(y.to(dev), op.to(dev))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("task,factor", [("sr", 4), ("cs", 4)])
def test_teacher_variants_dc_output_and_magnitude_domain(task, factor):
    """``dc_output`` projects the complex estimate onto the measurements; ``domain="magnitude"``
    works on the normalised magnitude; contradictory or unknown settings are clear errors."""
    from kdmri_lib.core.errors import ConfigError

    torch.manual_seed(0)
    y, op = measurement(task, factor, (48, 48), batch=2)
    for overrides in ({"dc_output": True}, {"domain": "magnitude"}):
        m = M.build_model("teacher", "tiny", task, factor, **overrides)
        out = m(y, op)
        assert out.shape == (2, 1, 48, 48) and torch.isfinite(out).all() and (out >= 0).all()
    from kdmri_lib.models.teacher import project_onto_measurements

    z = torch.randn(2, 1, 48, 48, dtype=torch.complex64)
    p = project_onto_measurements(z, y, op)
    torch.testing.assert_close(op.forward(p), y, atol=1e-5, rtol=1e-5)           # consistent with y
    torch.testing.assert_close(project_onto_measurements(p, y, op), p, atol=1e-5, rtol=1e-5)   # idempotent
    assert not torch.allclose(p, op.adjoint(y), atol=1e-3)                      # the unmeasured part is z's
    with pytest.raises(ConfigError, match="dc_output needs domain='complex'"):
        M.build_model("teacher", "tiny", task, factor, dc_output=True, domain="magnitude")
    with pytest.raises(ConfigError, match="domain must be 'complex' or 'magnitude'"):
        M.build_model("teacher", "tiny", task, factor, domain="phase")
