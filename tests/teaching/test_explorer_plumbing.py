"""The explorers' plumbing without a browser: CSS classes, layout fixes, greyed-out controls, threads.

What a person sees in JupyterLab is checked by tests/teaching/test_browser.py; these run everywhere."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("ipywidgets")

from kdmri_lib.teaching import widgets  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    g = torch.Generator().manual_seed(0)
    image = torch.complex(torch.rand(64, 64, generator=g), 0.1 * torch.rand(64, 64, generator=g))
    return widgets.MaskExplorer(image, acceleration=4, center_fraction=0.08)


def test_stable_css_classes(explorer):
    assert {"kdmri-explorer", "kdmri-mask-explorer"} <= set(explorer.box._dom_classes)
    assert "kdmri-metrics" in explorer.metrics_html._dom_classes
    assert "kdmri-figure" in explorer.image._dom_classes


def test_layout_fixes(explorer):
    import ipywidgets as w

    # ToggleButtons: description on the buttons' line; no description cut at the default width
    assert "widget-inline-hbox" in explorer.task._dom_classes
    for c in (explorer.task, explorer.mask_type, explorer.acceleration, explorer.center_fraction, explorer.seed,
              explorer.scale, explorer.noise):
        assert c.style.description_width, c.description
    # the figure at its natural size (not stretched by the VBox), never wider than the output
    assert explorer.image.layout.align_self == "flex-start" and explorer.image.layout.max_width == "100%"
    rows = [c for c in explorer.box.children if isinstance(c, w.HBox)]
    assert sum(len(r.children) for r in rows) == 8            # six acquisition controls, equal budget, noise


def test_controls_that_do_not_apply_are_greyed_out(explorer):
    cs_controls = (explorer.mask_type, explorer.acceleration, explorer.center_fraction, explorer.seed,
                   explorer.equal_budget)
    try:
        explorer.task.value = "sr"
        assert all(c.disabled for c in cs_controls) and not explorer.scale.disabled
        assert explorer.metrics_html.value.startswith("<b>sr x")
    finally:
        explorer.task.value = "cs"
    assert not any(c.disabled for c in cs_controls) and explorer.scale.disabled
    assert math.isfinite(explorer.last_update_s) and explorer.png[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_thread_restores_the_setting():
    n = torch.get_num_threads()
    with widgets.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
    with pytest.raises(RuntimeError):
        with widgets.single_thread():
            raise RuntimeError("boom")
    assert torch.get_num_threads() == n


def test_acquisition_view_same_result_on_one_thread():
    g = torch.Generator().manual_seed(1)
    image = torch.complex(torch.rand(32, 48, generator=g), torch.rand(32, 48, generator=g))
    v = widgets.acquisition_view(image, "cs", acceleration=4, mask_type="equispaced", center_fraction=0.08)
    ref = widgets._acquisition_view(image, "cs", 4, 4, "equispaced", 0.08, 0, None)
    assert v["metrics"] == pytest.approx(ref["metrics"])
    assert (v["sampling"] == ref["sampling"]).all()


def test_equal_budget_noise_and_scan_time(explorer):
    W = explorer.view["columns"]
    try:
        explorer.equal_budget.value = True
        v = explorer.view
        assert v["lines"] == round(W / explorer.acceleration.value)
        assert f"scan time: {v['lines']} of {W} lines" in explorer.metrics_html.value
        assert "equal budget" in explorer.metrics_html.value
        clean = v["metrics"]["PSNR"]
        explorer.noise.value = 0.3
        assert explorer.view["metrics"]["PSNR"] < clean and "noise 0.30" in explorer.metrics_html.value
        assert explorer.view["lines"] == v["lines"]                        # noise costs no scan time
    finally:
        explorer.noise.value = 0.0
        explorer.equal_budget.value = False
    assert explorer.view["psf"].shape == (W,) and float(explorer.view["psf"].max()) == pytest.approx(1.0)
