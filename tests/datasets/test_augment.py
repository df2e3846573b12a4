"""Random warps of training slices (kdmri_lib.datasets.augment): exact at the identity, flips and
quarter turns against NumPy, and the augmented sample is still the measurement of a whole slice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdmri_lib.core.errors import ConfigError
from kdmri_lib.datasets import augment as A
from kdmri_lib.datasets import data
from kdmri_lib.engine.run_config import TrainConfig
from kdmri_lib.mri import physics


def _slice(H=32, W=32, seed=0):
    g = np.random.default_rng(seed)
    mag = np.zeros((H, W), np.float32)
    mag[6:H - 6, 8:W - 8] = g.uniform(0.2, 1.0, (H - 12, W - 16))
    phase = np.linspace(0, 1.2, W, dtype=np.float32)[None]
    img = torch.from_numpy((mag * np.exp(1j * phase)).astype(np.complex64))
    return img, torch.from_numpy(mag)


def test_identity_warp_is_exact():
    img, tgt = _slice()
    w, t = A.warp(img, tgt, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert torch.allclose(w, img, atol=1e-5) and torch.allclose(t, tgt, atol=1e-5)


def test_flip_and_quarter_turn_match_numpy():
    img, tgt = _slice()
    w, t = A.warp(img, tgt, torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]))
    assert np.allclose(w.numpy(), img.numpy()[:, ::-1], atol=1e-5) and np.allclose(t.numpy(), tgt.numpy()[:, ::-1], atol=1e-5)
    # input = R(90 deg) @ output: output(y, x) = input(x, -y), i.e. a quarter turn
    w, t = A.warp(img, tgt, torch.tensor([[0.0, -1.0, 0], [1.0, 0.0, 0]]))
    turned = [np.rot90(tgt.numpy(), k) for k in (1, -1)]
    assert min(np.abs(t.numpy() - r).max() for r in turned) < 1e-5
    assert not np.allclose(t.numpy(), tgt.numpy(), atol=1e-2)


def test_random_theta_stays_in_its_ranges():
    torch.manual_seed(0)
    flips, scales, angles = 0, [], []
    for _ in range(400):
        th = A.random_theta(rotation_deg=10.0, scale=(0.9, 1.1), shift=0.05)
        m = th[:, :2]
        det = float(torch.det(m))
        flips += det < 0
        s = 1.0 / math.sqrt(abs(det))
        scales.append(s)
        angles.append(math.degrees(math.atan2(-float(m[0, 1]), float(m[1, 1]))))
        assert th[:, 2].abs().max() <= 0.05 + 1e-6
    assert 0.9 - 1e-4 <= min(scales) and max(scales) <= 1.1 + 1e-4 and max(scales) - min(scales) > 0.15
    assert 150 < flips < 250
    assert max(abs(a) for a in angles) <= 10.0 + 1e-3 and max(angles) - min(angles) > 15
    with pytest.raises(ConfigError, match="scale"):
        A.random_theta(scale=(1.2, 1.0))
    with pytest.raises(ConfigError, match="same shape"):
        A.warp(*_slice(32, 32)[:1], torch.zeros(16, 16), torch.eye(2, 3))


def test_augmented_sample_is_the_measurement_of_the_warped_whole_slice():
    img, tgt = _slice(64, 64)
    tf = data.SliceTransform("sr", 4, augment=True)
    kspace = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(img), norm="ortho")).numpy()
    torch.manual_seed(3)
    s = tf(kspace, None, tgt.numpy(), {"max": float(tgt.max())}, "x.h5", 0)
    torch.manual_seed(3)
    w, t = A.warp(img, tgt, A.random_theta())
    op = physics.build_operator("sr", 4, (64, 64))
    scale = float(op.initial(op.forward(w[None, None])).abs().max())
    assert float(s["scale"]) == pytest.approx(scale, rel=1e-4)
    assert torch.allclose(s["y"], op.forward(w[None, None] / scale)[0], atol=1e-5)
    assert torch.allclose(s["target"], (t / scale)[None], atol=1e-5)
    # another draw is another warp; without augment the slice is as stored
    assert not torch.allclose(tf(kspace, None, tgt.numpy(), {}, "x.h5", 0)["target"], s["target"], atol=1e-3)
    plain = data.SliceTransform("sr", 4)(kspace, None, tgt.numpy(), {}, "x.h5", 0)
    assert torch.allclose(plain["target"] * plain["scale"], tgt[None], atol=1e-4)


def test_train_config_checks_augment(tmp_path):
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "r"), augment="yes").validate(check_paths=False)
    from kdmri_lib.distill.teacher_cache import usable
    from kdmri_lib.models import build_model

    t = build_model("teacher", "tiny", "sr", 4)
    assert usable("sr", False, t) and not usable("sr", True, t)


def test_an_augmented_run_resumes_exactly_and_differs_from_a_plain_one(demo_dir, tmp_path):
    """The warps come from torch's global RNG, seeded per epoch: a run stopped after its first
    epoch and resumed ends with the weights of the uninterrupted run."""
    from kdmri_lib.engine import train as T
    from _train_utils import assert_same_weights, state_of, tiny_cfg

    kw = dict(epochs=2, steps_per_epoch=2, val_slices=1, augment=True)
    T.fit(tiny_cfg(demo_dir, tmp_path / "full", **kw))
    T.fit(tiny_cfg(demo_dir, tmp_path / "part", epoch_limit=1, **kw))
    T.fit(tiny_cfg(demo_dir, tmp_path / "part", resume=True, **kw))
    assert_same_weights(state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "part" / "last.pt"))
    T.fit(tiny_cfg(demo_dir, tmp_path / "plain", **(kw | {"augment": False})))
    a, b = state_of(tmp_path / "full" / "last.pt"), state_of(tmp_path / "plain" / "last.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)
