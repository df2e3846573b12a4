"""The notebooks' exercise checks: right for the solution, 'not yet' for the typical mistakes, silent
about unattempted exercises, and never an exception (a headless run leaves them blank)."""

from __future__ import annotations

import torch

import kdmri_lib as kd


def _kspace():
    torch.manual_seed(0)
    img = torch.zeros(32, 32, dtype=torch.complex64)
    img[8:24, 10:22] = 1.0
    return kd.physics.fft2c(img + 0.01 * torch.randn(32, 32, dtype=torch.complex64))


def test_checks_accept_the_solutions_and_explain_the_usual_mistakes(capsys):
    k = _kspace()
    mask = kd.physics.build_operator("cs", 4, (32, 32), mask_type="equispaced").mask.reshape(-1)
    zf = kd.physics.ifft2c(k * mask)
    assert kd.check.zero_filled(zf.abs(), k, mask) is True
    assert kd.check.zero_filled(zf, k, mask) is False and "magnitude" in capsys.readouterr().out
    assert kd.check.zero_filled(torch.fft.ifft2(k * mask, norm="ortho").abs(), k, mask) is False
    assert "centred" in capsys.readouterr().out
    e = k.abs() ** 2
    frac = float(kd.physics.centre_crop(e, (3, 3)).sum() / e.sum())
    assert kd.check.energy_fraction(frac, k, keep=0.10) is True
    assert kd.check.energy_fraction(0.01, k, keep=0.10) is False and "samples" in capsys.readouterr().out
    assert kd.check.sr_time_saving(4) is True and kd.check.sr_time_saving(16) is False
    assert kd.check.dead_zone_gradient(0) is True and kd.check.dead_zone_gradient(2) is False
    S, T = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    lab = torch.tensor([1.0, 0.0])
    assert kd.check.pool_kd((S[1] - T[1]).abs().mean(), S, T, lab) is True
    assert kd.check.pool_kd((S - T).abs().mean(), S, T, lab) is False and "every sample" in capsys.readouterr().out


def test_unattempted_exercises_are_reported_not_raised(capsys):
    k = _kspace()
    for fn, args in ((kd.check.zero_filled, (k, torch.ones(32))), (kd.check.energy_fraction, (k,)),
                     (kd.check.sr_time_saving, ()), (kd.check.dead_zone_gradient, ()),
                     (kd.check.pool_kd, (torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1)))):
        assert fn(None, *args) is None
    assert capsys.readouterr().out.count("[not attempted]") == 5


def test_checks_of_notebooks_02_03_05(capsys):
    assert kd.check.windows(49, (56, 56), 8) is True and kd.check.windows(392, (56, 56), 8) is False
    assert kd.check.windows(4, (9, 9), 8) is True                     # padded up to whole windows
    assert kd.check.bias_table(225, 8) is True and kd.check.bias_table(8 ** 4, 8) is False
    assert kd.check.unshuffle_channels(32, 4) is True and kd.check.unshuffle_channels(16, 4) is False
    assert kd.check.count(3, 3, "steps") is True and kd.check.count(2, 3, "steps") is False
    rows = [{"method": "zero-filled", "PSNR": 30.0}, {"method": "student alone", "PSNR": 29.0},
            {"method": "teacher", "PSNR": 28.0}]
    assert kd.check.best_model("student alone", rows) is True          # the best *learned* model
    assert kd.check.best_model("teacher", rows) is False and kd.check.best_model("magic", rows) is False
    assert kd.check.interval_excludes_zero(True, 0.1, 0.4) is True
    assert kd.check.interval_excludes_zero(True, -0.1, 0.4) is False
    assert kd.check.interval_excludes_zero(False, -0.1, 0.4) is True
