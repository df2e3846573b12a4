"""Equal-budget masks and the point-spread function (kdmri_lib.mri.masks), NumPy as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdmri_lib.core.errors import ConfigError
from kdmri_lib.mri import masks as M


@settings(max_examples=60, deadline=None)
@given(width=st.integers(8, 400), data=st.data(), mask_type=st.sampled_from(["random", "equispaced"]))
def test_budget_mask_measures_exactly_its_lines_with_its_centre(width, data, mask_type):
    lines = data.draw(st.integers(1, width))
    centre = data.draw(st.integers(0, lines))
    m = M.budget_mask(width, lines, centre, mask_type, seed=3)
    assert m.shape == (width,) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert int(m.sum()) == lines
    start = (width - centre + 1) // 2
    assert bool((m[start:start + centre] == 1).all())
    assert torch.equal(m, M.budget_mask(width, lines, centre, mask_type, seed=3))   # deterministic


def test_equal_budget_compares_shapes_not_line_counts():
    W = 224
    fastmri_eq = M.make_mask(W, 4, 0.08, "equispaced", seed=0)
    fastmri_rand = M.make_mask(W, 4, 0.08, "random", seed=0)
    assert int(fastmri_eq.sum()) > int(fastmri_rand.sum()) + 5           # fastMRI's: not the same budget
    eq, rnd = (M.budget_mask(W, W // 4, round(0.08 * W), t, seed=0) for t in ("equispaced", "random"))
    assert int(eq.sum()) == int(rnd.sum()) == W // 4
    centre = M.budget_mask(W, round(0.08 * W), round(0.08 * W)).numpy()
    outer = np.nonzero(centre == 0)[0]                                     # the columns outside the centre
    gaps = np.diff(np.nonzero(eq.numpy()[outer])[0])
    assert gaps.max() - gaps.min() <= 1                                   # evenly spread over them
    with pytest.raises(ConfigError, match="lines"):
        M.budget_mask(W, W + 1, 4)
    with pytest.raises(ConfigError, match="center_lines"):
        M.budget_mask(W, 10, 11)


def test_point_spread_is_numpys_and_shows_coherent_ghosts_only_for_equispaced():
    W = 256
    eq = M.budget_mask(W, 64, 16, "equispaced")
    p = M.point_spread(eq)
    ref = np.abs(np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(eq.numpy()), norm="ortho")))
    np.testing.assert_allclose(p.numpy(), ref / ref.max(), rtol=1e-5, atol=1e-6)
    assert float(p.max()) == pytest.approx(1.0) and int(p.argmax()) == W // 2
    side = lambda q: float(torch.cat([q[: W // 2 - 2], q[W // 2 + 3:]]).max())   # noqa: E731
    assert side(p) > 0.6                                                     # evenly spaced lines: tall ghosts
    assert side(M.point_spread(M.budget_mask(W, 64, 16, "random", seed=0))) < 0.4   # incoherent: low side lobes
    assert M.side_lobe(p) == pytest.approx(side(p), abs=1e-6)
    full = M.point_spread(torch.ones(W))
    assert M.side_lobe(full) < 1e-4
    assert float(full.sum()) == pytest.approx(1.0, abs=1e-4)                 # fully sampled: a delta
