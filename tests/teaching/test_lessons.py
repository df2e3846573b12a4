"""The notebooks' demonstrations hold what the notebooks claim."""

from __future__ import annotations

import pytest
import torch

from kdmri_lib.models import build_model
from kdmri_lib.mri import physics
from kdmri_lib.teaching import lessons


def test_pixelshuffle_has_no_checkerboard_but_transposed_and_zero_insertion_do():
    flat = torch.ones(24, 24)
    for seed in range(3):
        res = lessons.upsampling_artefacts(flat, s=2, seed=seed)
        ps = res["sub-pixel conv (PixelShuffle)"]["checkerboard"]
        assert ps < 1e-6
        assert res["transposed conv"]["checkerboard"] > 0.05
        assert res["zero insertion + conv"]["checkerboard"] > 0.05
        assert all(v["image"].shape == (48, 48) for v in res.values())


def test_data_consistency_alone_fits_the_data_but_not_the_image():
    op = physics.build_operator("cs", 4, (32, 32), seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 32, 32, generator=g)
    y = op.forward(x)
    rows = lessons.data_consistency_steps(op, y, torch.zeros(1, 1, 32, 32, dtype=torch.complex64), x, steps=3)
    assert rows[0]["residual"] == 1.0 and rows[1]["residual"] < 1e-5
    assert rows[-1]["error"] > 0.1          # unmeasured k-space stays empty


def test_student_iterates_end_at_the_output():
    torch.manual_seed(0)
    m = build_model("student", "tiny", "cs", 4).eval()
    op = physics.build_operator("cs", 4, (32, 32))
    y = op.simulate(torch.rand(2, 1, 32, 32))
    its = m.iterates(y, op)
    assert len(its) == m.iterations + 1
    assert torch.allclose(its[-1], m(y, op), atol=1e-6)


def test_classic_kd_needs_classes_and_a_temperature_the_one_channel_term_is_zero():
    t = torch.tensor([[6.0, 2.0, 1.0, -1.0]])
    s = torch.tensor([[2.0, 3.0, 0.0, 0.0]])
    rows = lessons.temperature_sweep(s, t, taus=(1.0, 4.0, 16.0))
    ent = [r["soft-target entropy"] for r in rows]
    assert ent[0] < ent[1] < ent[2] <= float(torch.log(torch.tensor(4.0))) + 1e-6   # softer with tau
    assert all(r["KD (classes)"] > 0 and r["|grad| (classes)"] > 0 for r in rows)
    assert all(r["KD (one channel)"] == 0.0 and r["|grad| (one channel)"] == 0.0 for r in rows)
    # the classic term is Hinton's: tau^2 KL(q || p), checked by hand at tau = 4
    q, p = torch.softmax(t / 4, 1), torch.softmax(s / 4, 1)
    assert rows[1]["KD (classes)"] == pytest.approx(float(16 * (q * (q.log() - p.log())).sum()), rel=1e-5)
