"""Under-sampled acquisitions without ground truth: fastMRI's test split as a measurement-only pool.

fastMRI publishes its test split as it was acquired: each file stores the under-sampled k-space
(zero in the columns not measured), its column ``mask`` and ``attrs["acceleration"]`` (4 or 8), and
no ``reconstruction_esc``. :func:`pool_files` picks the files of such a split that can be the pool of
the few-references protocol (:func:`kdmri_lib.datasets.data.pool_dataset` opens them;
``TrainConfig.pool_split``); :func:`measured_sample` is
what :class:`~kdmri_lib.datasets.data.SliceTransform` yields for one of its slices (the stored mask,
not a new one: masking it again would measure a subset of a subset). Shapes as in
:mod:`kdmri_lib.datasets.data`: ``y`` ``(1, Hk, Wk)`` complex, ``initial`` / ``target`` ``(1, H, W)``,
``mask`` ``(1, 1, Wk)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np
import torch

from kdmri_lib.core.errors import DataError, check_choice, check_int, first_line
from kdmri_lib.datasets.data_files import READ_ERRORS as _READ_ERRORS
from kdmri_lib.datasets.data_files import check_patterns, list_h5, select_files, split_dir
from kdmri_lib.datasets.data_files import scaled_sample
from kdmri_lib.mri.fastmri_format import check_file
from kdmri_lib.mri.physics import TASKS, build_operator

__all__ = ["measured_sample", "pool_files"]


def measured_sample(kspace, mask, attrs, fname: str, slice_num: int, task: str, factor: int, recon=None) -> dict:
    """The sample of one slice of a file that stores an under-sampled acquisition, for ``cs`` x ``factor``.

    fastMRI's test split: ``kspace`` ``(Hk, Wk)`` already zero in the columns not measured, ``mask``
    ``(Wk,)``, ``attrs["acceleration"]``; ``recon``: the header's recon size (the image is the
    centre crop). The sample is the measurement as acquired (the stored mask, not a new one:
    masking it again would measure a subset of a subset); the file holds no ground truth, so ``target`` is zeros of the image shape, ``max`` 0 and ``labelled``
    0 (a measurement-only sample, :class:`kdmri_lib.datasets.protocol.MeasurementOnly`).

    Raises:
        DataError: the task is not ``cs``; the file's acceleration is not the task's; the mask
            does not have one 0/1 entry per k-space column.
    """
    if task != "cs":
        raise DataError(f"{fname}: its k-space is under-sampled (the file stores a mask, as fastMRI's test split "
                        f"does); task {task!r} needs fully-sampled k-space: use it with task 'cs'")
    acc = attrs.get("acceleration")
    if acc is not None and int(acc) != factor:
        raise DataError(f"{fname}: acquired at acceleration {int(acc)}; the task is cs x{factor} "
                        f"(pool_dataset keeps only the files of that acceleration)")
    k = np.asarray(kspace)
    if not np.isfinite(k).all():
        raise DataError(f"{fname}: k-space slice {slice_num} contains NaN or Inf values")
    m = np.asarray(mask).astype(np.float32).reshape(-1)
    if m.size != k.shape[-1] or not np.isin(m, (0.0, 1.0)).all() or not m.any():
        raise DataError(f"{fname}: its mask has {m.size} entries; expected {k.shape[-1]} values of 0/1 (one per "
                        f"k-space column), at least one of them 1")
    kspace_t = torch.from_numpy(k.astype(np.complex64))
    shape = tuple(kspace_t.shape)
    if recon is not None:
        rh, rw = int(recon[0]), int(recon[1])
        if rh <= shape[0] and rw <= shape[1]:
            shape = (rh, rw)
    mask_t = torch.from_numpy(m)
    op = build_operator("cs", factor, shape, mask=mask_t, kspace_shape=tuple(kspace_t.shape))
    y = kspace_t[None, None] * mask_t
    sample = scaled_sample(op, y, torch.zeros(shape), 0.0, fname, slice_num)
    sample["labelled"] = torch.tensor(0.0)
    return sample


def pool_files(data_dir: str | os.PathLike, split: str, task: str, factor: int,
               include: Optional[Sequence[str]] = None, verbose: bool = False) -> tuple[Path, list[str]]:
    """The folder of split ``split`` and the names of its files that can be the task's pool.

    Files that store an under-sampled acquisition (a ``mask``: fastMRI's test split) are used as
    acquired (:func:`measured_sample`); fastMRI's test split mixes 4x and 8x volumes, so only the
    files whose ``acceleration`` attribute is the task's are kept. Files with fully-sampled k-space
    are kept (they are under-sampled with their fixed per-file mask, as validation files are).

    Raises:
        DataError: no file of the split has the task's acceleration (the accelerations found are
            named); ``sr`` on a split that stores under-sampled k-space.
    """
    check_choice("task", task, TASKS)
    factor = check_int("scale" if task == "sr" else "acceleration", factor, minimum=1)
    folder = split_dir(data_dir, split)
    files = list_h5(folder)
    if include is not None:
        keep = select_files([f.name for f in files], check_patterns("include", include), where=str(folder))
        files = [f for f in files if f.name in keep]
    kept, found, masked = [], set(), []
    for f in files:
        check_file(f, require_target=False)
        try:
            with h5py.File(f, "r") as hf:
                acc = hf.attrs.get("acceleration")
                has_mask = "mask" in hf
        except _READ_ERRORS as e:
            raise DataError(f"{f}: unreadable ({type(e).__name__}: {first_line(e)}); the file may be truncated or corrupt") from None
        if has_mask:
            masked.append(f.name)
        if acc is not None:
            found.add(int(acc))
        if task == "cs" and acc is not None and int(acc) != factor:
            continue
        kept.append(f.name)
    if task == "sr" and masked:
        raise DataError(f"{folder}: {len(masked)} file(s) store under-sampled k-space ({masked[0]}, ...); an sr pool "
                        f"needs fully-sampled k-space (use task 'cs', or another split)")
    if not kept:
        raise DataError(f"{folder}: no file acquired at acceleration {factor} (found: "
                        f"{', '.join(map(str, sorted(found))) or 'none'}); the pool must match the task's cs x{factor}")
    if verbose and len(kept) < len(files):
        print(f"[data] {folder}: {len(kept)} of {len(files)} files are acquired at acceleration {factor} (the others "
              f"are left out of the pool)", flush=True)
    return folder, kept
