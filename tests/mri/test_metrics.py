"""Metrics equal fastMRI's own evaluate, on arrays and on files."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest
from fastmri import evaluate as fe
from fastmri import save_reconstructions

from kdmri_lib.mri import metrics


def _s(v):
    return float(np.asarray(v).reshape(-1)[0])


@pytest.fixture
def volumes():
    rng = np.random.default_rng(0)
    gt = rng.random((4, 40, 40)).astype(np.float32) * 3
    pred = (gt + 0.1 * rng.standard_normal(gt.shape)).astype(np.float32)
    return gt, pred


def test_volume_metrics_equal_fastmri(volumes):
    gt, pred = volumes
    m = metrics.volume_metrics(gt, pred)
    assert m["PSNR"] == pytest.approx(_s(fe.psnr(gt, pred)), rel=1e-9)
    assert m["SSIM"] == pytest.approx(_s(fe.ssim(gt, pred)), rel=1e-9)
    assert m["NMSE"] == pytest.approx(_s(fe.nmse(gt, pred)), rel=1e-9)
    # tensors of shape (slices, 1, H, W) give the same numbers
    import torch
    m2 = metrics.volume_metrics(torch.from_numpy(gt)[:, None], torch.from_numpy(pred)[:, None])
    assert m2 == pytest.approx(m)


def test_slice_metrics_use_volume_max(volumes):
    gt, pred = volumes
    per = metrics.slice_metrics(gt, pred)
    assert len(per) == 4
    for i, p in enumerate(per):
        assert p["PSNR"] == pytest.approx(_s(fe.psnr(gt[i:i + 1], pred[i:i + 1], maxval=gt.max())))
    assert np.mean([p["SSIM"] for p in per]) == pytest.approx(metrics.volume_metrics(gt, pred)["SSIM"], rel=1e-9)


def test_aggregator_equals_fastmri_evaluate_on_files(tmp_path, volumes):
    gt, pred = volumes
    tdir, pdir = tmp_path / "t", tmp_path / "p"
    tdir.mkdir()
    agg = metrics.MetricAggregator()
    recons = {}
    for i in range(3):
        g, p = gt * (i + 1), pred * (i + 1) + i * 0.01
        with h5py.File(tdir / f"v{i}.h5", "w") as hf:
            hf["reconstruction_esc"] = g
            hf.attrs["acquisition"] = "AXT1"
        recons[f"v{i}.h5"] = p
        agg.push(g, p)
    save_reconstructions(recons, pdir)
    args = argparse.Namespace(target_path=tdir, predictions_path=pdir, challenge="singlecoil",
                              acquisition=None, acceleration=None)
    ref = fe.evaluate(args, "reconstruction_esc")
    assert agg.means() == pytest.approx({k: _s(v) for k, v in ref.means().items()})


def test_shape_mismatch_is_clear(volumes):
    gt, pred = volumes
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.volume_metrics(gt, pred[:, :30])
