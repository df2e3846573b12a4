"""Physics: centred FFTs against NumPy, adjointness of every operator, masks, low-res exactness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdmri_lib.core.errors import ConfigError
from kdmri_lib.mri import physics
from kdmri_lib.mri.masks import make_mask, realised_acceleration


def np_fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def np_ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def rand_complex(shape, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("shape", [(8, 8), (9, 12), (17, 31), (64, 48)])
def test_fft_matches_numpy_centred_orthonormal(shape):
    x = rand_complex((2, 1) + shape, dtype=torch.complex128)
    k = physics.fft2c(x)
    np.testing.assert_allclose(k.numpy(), np_fft2c(x.numpy()), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(physics.ifft2c(k).numpy(), x.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(physics.ifft2c(x).numpy(), np_ifft2c(x.numpy()), rtol=1e-10, atol=1e-10)
    # orthonormal: energy preserved
    assert torch.allclose(k.abs().pow(2).sum(), x.abs().pow(2).sum())


def test_fft_of_real_input_equals_complex_with_zero_imag():
    x = torch.randn(1, 1, 16, 16)
    assert torch.allclose(physics.fft2c(x), physics.fft2c(torch.complex(x, torch.zeros_like(x))))


# ---------------------------------------------------------------------------------------------
# a registry of operators: both tasks, several sizes, factors, mask types, per-sample masks
# ---------------------------------------------------------------------------------------------

def _registry():
    ops = []
    for shape in [(32, 32), (48, 64), (36, 20)]:
        for s in (2, 4):
            if shape[0] % s == 0 and shape[1] % s == 0:
                ops.append((f"sr-x{s}-{shape}", lambda shape=shape, s=s: physics.build_operator("sr", s, shape)))
        for a in (4, 8):
            ops.append((f"cs-x{a}-{shape}", lambda shape=shape, a=a: physics.build_operator("cs", a, shape, seed=3)))
    ops.append(("cs-equispaced", lambda: physics.build_operator("cs", 4, (32, 40), mask_type="equispaced")))
    ops.append(("cs-per-sample-masks", lambda: physics.build_operator(
        "cs", 4, (32, 32), mask=torch.stack([make_mask(32, 4, seed=i) for i in range(3)]).reshape(3, 1, 1, 32))))
    ops.append(("sr-x1-identity", lambda: physics.build_operator("sr", 1, (16, 16))))
    return ops


REGISTRY = _registry()


@pytest.mark.parametrize("name,make", REGISTRY, ids=[n for n, _ in REGISTRY])
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_adjointness(name, make, kind):
    op = make()
    B = 3
    H, W = op.shape
    x = (rand_complex((B, 1, H, W), seed=1) if kind == "complex"
         else torch.randn(B, 1, H, W, generator=torch.Generator().manual_seed(1)))
    y = rand_complex((B, 1) + op.meas_shape, seed=2)
    lhs = torch.vdot(op.forward(x).flatten(), y.flatten())        # <Ax, y>
    rhs = torch.vdot(physics.to_complex(x).flatten(), op.adjoint(y).flatten())  # <x, A^H y>
    # float32 rounding of an inner product scales with the norms of its factors, not with its value
    # (which can be small by cancellation)
    scale = float(op.forward(x).abs().norm() * y.abs().norm())
    assert abs(lhs - rhs) <= 1e-5 * scale


@pytest.mark.parametrize("name,make", REGISTRY, ids=[n for n, _ in REGISTRY])
def test_operator_shapes_dtypes(name, make):
    op = make()
    x = torch.randn(3, 1, *op.shape)
    y = op.simulate(x)
    assert y.shape == (3, 1) + tuple(op.meas_shape) and y.dtype == torch.complex64
    x0 = op.initial(y)
    assert x0.shape == (3, 1) + tuple(op.initial_shape) and x0.is_complex()
    assert op.adjoint(y).shape == (3, 1) + tuple(op.shape)
    # A is a partial isometry: A A^H = I on the measured samples, so ||A^H y|| = ||y|| for y = A x
    assert torch.allclose(op.adjoint(y).abs().norm(), y.abs().norm(), rtol=1e-5)
    # float64 in, complex128 out
    assert op.forward(x.double()).dtype == torch.complex128


def test_cs_forward_is_masked_kspace_and_initial_is_zero_filled():
    op = physics.build_operator("cs", 4, (32, 32), seed=0)
    x = rand_complex((2, 1, 32, 32))
    k = physics.fft2c(x)
    assert torch.allclose(op.forward(x), k * op.mask)
    assert torch.allclose(op.initial(op.forward(x)), physics.ifft2c(k * op.mask))
    # unmeasured columns of y are exactly zero
    assert (op.forward(x)[..., op.mask[0, 0, 0] == 0] == 0).all()


def test_sr_low_res_of_band_limited_image_is_exact():
    """An image whose spectrum lies in the measured block is recovered exactly: its low-res image
    is the image sampled every s-th pixel, and A^H A x = x."""
    H, W, s = 48, 64, 4
    op = physics.build_operator("sr", s, (H, W))
    block = rand_complex((2, 1, H // s, W // s), seed=5, dtype=torch.complex128)
    x = physics.ifft2c(physics.centre_pad(block, (H, W)))     # band-limited to the central block
    y = op.forward(x)
    assert torch.allclose(y, block, atol=1e-12)
    x_lr = op.initial(y)
    assert x_lr.shape == (2, 1, H // s, W // s)
    assert torch.allclose(x_lr, x[..., ::s, ::s], atol=1e-12)
    assert torch.allclose(op.normal(x), x, atol=1e-12)
    assert torch.allclose(op.upsample(x_lr), x, atol=1e-12)


def test_sr_initial_keeps_intensity_scale():
    op = physics.build_operator("sr", 2, (32, 32))
    x = torch.full((1, 1, 32, 32), 3.0)
    assert torch.allclose(op.initial(op.forward(x)).real, torch.full((1, 1, 16, 16), 3.0), atol=1e-5)


@pytest.mark.parametrize("mask_type", ["random", "equispaced_fraction"])
@pytest.mark.parametrize("acc", [4, 8])
def test_mask_realised_acceleration_matches_request(mask_type, acc):
    # fastMRI's random mask matches the acceleration in expectation; average over seeds
    masks = torch.stack([make_mask(368, acc, mask_type=mask_type, seed=s) for s in range(50)])
    assert masks.shape == (50, 368)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert realised_acceleration(masks) == pytest.approx(acc, rel=0.08)
    # centre fraction of fastMRI: 0.08 for 4x, 0.04 for 8x, fully sampled
    n_low = round(368 * {4: 0.08, 8: 0.04}[acc])
    pad = (368 - n_low + 1) // 2
    assert (masks[:, pad: pad + n_low] == 1).all()


def test_masks_deterministic_for_seed_and_match_fastmri():
    from fastmri.data.subsample import RandomMaskFunc

    a = make_mask(64, 4, seed=7)
    b = make_mask(64, 4, seed=7)
    assert torch.equal(a, b)
    ref, _ = RandomMaskFunc([0.08], [4])((1, 64, 1), seed=7)
    assert torch.equal(a, ref.reshape(64))
    assert not torch.equal(make_mask(64, 4, seed=8), a)


def test_simulate_noise_level():
    op = physics.build_operator("cs", 1, (64, 64))
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 64, 64)
    y = op.simulate(x, noise_std=0.5, generator=g)
    assert y.abs().pow(2).mean().sqrt().item() == pytest.approx(0.5, rel=0.03)
    # cs noise only on measured columns
    op4 = physics.build_operator("cs", 4, (64, 64))
    y4 = op4.simulate(x, noise_std=0.5, generator=g)
    assert (y4[..., op4.mask[0, 0, 0] == 0] == 0).all()


def test_operator_to_device_cpu_and_cuda_if_available():
    op = physics.build_operator("cs", 4, (16, 16))
    assert op.to("cpu").mask.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        opc = op.to("cuda")
        x = torch.randn(2, 1, 16, 16, device="cuda")
        assert torch.allclose(opc.forward(x).cpu(), op.forward(x.cpu()), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# bad input: one clear error naming the parameter
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,match", [
    (("sr", 3, (32, 32)), {}, "scale 3 does not divide the image size 32x32"),
    (("sr", 4, (30, 32)), {}, "does not divide"),
    (("cs", 0, (32, 32)), {}, "acceleration must be >= 1"),
    (("cs", -4, (32, 32)), {}, "acceleration must be >= 1"),
    (("xx", 4, (32, 32)), {}, "task must be one of 'sr', 'cs'"),
    (("cs", 4, (32,)), {}, "shape must be a pair"),
    (("cs", 4, (32, 32)), {"mask_type": "spiral"}, "mask_type must be one of"),
    (("cs", 4, (32, 32)), {"center_fraction": 0.5}, "center_fraction"),
    (("cs", "four", (32, 32)), {}, "acceleration must be an integer"),
])
def test_build_operator_errors(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        physics.build_operator(*args, **kwargs)


def test_wrong_image_shape_names_expected_shape():
    op = physics.build_operator("sr", 4, (32, 32))
    with pytest.raises(ConfigError, match=r"\(B, 1, 32, 32\)"):
        op.forward(torch.randn(1, 2, 32, 32))
    with pytest.raises(ConfigError, match=r"\(B, 1, 8, 8\)"):
        op.adjoint(torch.randn(1, 1, 16, 16, dtype=torch.complex64))
