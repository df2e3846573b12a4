"""A tiny folder laid out like the prepared fastMRI single-coil knee (``data_scripts/prepare_fastmri.py``):
raw k-space larger than the recon size (the knee's 640 x 368 -> 320 x 320, here 48 x 40 -> 32 x 32),
``singlecoil_train`` / ``singlecoil_val`` with ground truth, ``singlecoil_test`` as fastMRI publishes it
(masked k-space, its mask and acceleration, no ground truth; 4x and 8x files mixed)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from kdmri_lib.mri import physics
from kdmri_lib.mri.fastmri_format import ismrmrd_header, write_volume

KH, KW, REC = 48, 40, 32   # raw k-space larger than the recon size, as the knee's 640 x 368 -> 320 x 320


def _kspace(seed: int, slices: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:KH, :KW]
    imgs = []
    for s in range(slices):
        a, b = 12 + rng.integers(0, 4), 13 + s
        obj = (((y - KH / 2) / a) ** 2 + ((x - KW / 2) / b) ** 2 < 1).astype(np.float32)
        obj *= 1 + 0.3 * np.sin(x / (3 + s)) * np.cos(y / 5)
        imgs.append(obj * np.exp(1j * 0.01 * (x - KW / 2)))
    return physics.fft2c(torch.from_numpy(np.stack(imgs).astype(np.complex64))).numpy()


def knee_file(path: Path, seed: int, slices: int = 2, acceleration=None) -> np.ndarray:
    """A volume; ``acceleration``: a test-split file (masked k-space, its mask, no target)."""
    k = _kspace(seed, slices)
    header = ismrmrd_header((KH, KW, 1), (REC, REC, 1))
    if acceleration is None:
        target = physics.centre_crop(physics.ifft2c(torch.from_numpy(k)).abs(), (REC, REC)).numpy()
        write_volume(path, k, target, {"acquisition": "CORPD_FBK"}, header=header)
        return k
    mask = np.zeros(KW, dtype=bool)
    mask[seed % acceleration::acceleration] = True
    mask[KW // 2 - 2: KW // 2 + 2] = True
    write_volume(path, k * mask, None, {"acquisition": "CORPD_FBK", "acceleration": acceleration}, header=header)
    with h5py.File(path, "a") as hf:
        hf.create_dataset("mask", data=mask)
    return k * mask


def make_knee(root: Path) -> Path:
    """The tiny knee folder in ``root``: 4 training volumes, 1 validation volume, 3 test volumes (two 4x, one 8x)."""
    for split in ("train", "val", "test"):
        (root / f"singlecoil_{split}").mkdir()
    for i in range(4):
        knee_file(root / "singlecoil_train" / f"file10000{i}.h5", seed=i)
    knee_file(root / "singlecoil_val" / "file100100.h5", seed=10)
    knee_file(root / "singlecoil_test" / "file100200_v2.h5", seed=20, slices=3, acceleration=4)
    knee_file(root / "singlecoil_test" / "file100201_v2.h5", seed=21, acceleration=8)
    knee_file(root / "singlecoil_test" / "file100202_v2.h5", seed=22, acceleration=4)
    return root
