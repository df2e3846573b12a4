"""Small helpers shared by the training / distillation / reconstruction tests (tiny, fast configs)."""

from __future__ import annotations

from pathlib import Path

import torch

from kdmri_lib.train import TrainConfig


def tiny_cfg(demo_dir, out, **kw) -> TrainConfig:
    """A training config that runs in a few seconds on 2 CPU cores."""
    base = dict(mode="student", data_dir=str(demo_dir), out_dir=str(out), task="sr", factor=4, preset="tiny",
                epochs=1, batch_size=2, patch_size=32, steps_per_epoch=3, val_slices=2, device="cpu",
                progress=False, verbose=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def state_of(path) -> dict:
    """The model weights stored in a checkpoint."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f"{k} differs (max |diff| {float((a[k] - b[k]).abs().max()):.3g})"
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
