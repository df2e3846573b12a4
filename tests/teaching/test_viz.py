"""The figures a learner reads (kdmri_lib.teaching.viz): what they plot, checked on their artists."""

from __future__ import annotations

import numpy as np

from kdmri_lib.teaching import viz


def test_step_curves_use_the_global_step_and_only_weighted_loss_terms():
    rows = [{"global_step": e * 3 + s + 1, "epoch": e + 1, "step": s + 1, "loss": 1.0 / (e * 3 + s + 1), "rec": 0.5,
             "kd": 0.2, "att": 0.8, "w_kd": 1.0, "w_att": 0.0, "grad_norm": 3.0, "train_PSNR": 20.0, "seconds": 0.1,
             "lr": 1e-3} for e in range(2) for s in range(3)]
    fig = viz.step_curves(rows, smooth=1)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"loss", "rec", "kd"}                      # att has weight 0; no grad norm, PSNR, time
    assert list(lines["loss"].get_xdata()) == [1, 2, 3, 4, 5, 6]   # one axis across epochs
    assert fig.axes[0].get_xlabel() == "global step"
    assert {ln.get_label() for ln in fig.axes[1].get_lines()} == {"w_kd", "w_att"}


def test_error_maps_share_one_colour_scale_with_a_bar():
    t = np.random.default_rng(0).random((32, 32))
    fig = viz.compare_reconstructions(t, {"a": t + 0.05, "b": t - 0.1}, err_vmax=0.15)
    err = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len(err) == 2 and {im.get_clim() for im in err} == {(0.0, 0.15)}
    bars = [ch for ax in fig.axes for ch in ax.child_axes]          # the bar, inset where the target has no error
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 0.15)


def test_tradeoff_draws_cost_only_models_as_lines():
    rows = [{"method": "student", "GFLOPs": 2.0, "PSNR": 23.0, "params": 1e5},
            {"method": "zero-filled", "GFLOPs": 0.0, "PSNR": 20.0, "params": 0}]
    fig = viz.tradeoff(rows, costs={"released": {"GFLOPs": 420.0}})
    vlines = [ln for ln in fig.axes[0].get_lines() if list(ln.get_xdata()) == [420.0, 420.0]]
    assert vlines and any("cost only" in t.get_text() for t in fig.axes[0].texts)
