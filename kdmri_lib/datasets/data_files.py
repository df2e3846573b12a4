"""Finding and reading fastMRI-format files: the ``.h5`` files of a folder or split, file-name
pattern selection, one fully-sampled slice as image + target (:func:`slice_image`,
:func:`load_slice`). The datasets built on them are in :mod:`kdmri_lib.datasets.data`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from kdmri_lib.core.errors import ConfigError, DataError, check_int
from kdmri_lib.mri.fastmri_format import check_file
from kdmri_lib.mri.physics import centre_crop, ifft2c

__all__ = ["list_h5", "split_dir", "check_patterns", "select_files", "slice_image", "load_slice"]


#: what h5py / the XML parser raise on a damaged file (HDF5 errors surface as OSError, RuntimeError,
#: KeyError or ValueError depending on where the damage is)
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, EOFError)


def scaled_sample(op, y: torch.Tensor, target: torch.Tensor, vol_max: float, fname: str, slice_num: int) -> dict:
    """The sample of a ``cs`` measurement ``y`` ``(1, 1, Hk, Wk)`` with its operator (raw k-space, masked):
    ``y`` and ``initial = op.initial(y)`` divided by the starting image's maximum (``scale``), the
    ``(H, W)`` ``target`` likewise, ``max`` = ``vol_max``, the operator's mask ``(1, 1, Wk)``.

    Raises:
        DataError: the starting image is empty (an all-zero slice).
    """
    init = op.initial(y)
    scale = float(init.abs().max())
    if not np.isfinite(scale) or scale <= 0:
        raise DataError(f"{fname}: slice {slice_num} is all zeros (its starting image is empty); nothing to reconstruct")
    return {
        "y": (y / scale)[0],
        "initial": (init / scale)[0],
        "target": (target[None] / scale).to(torch.float32),
        "scale": torch.tensor(scale, dtype=torch.float32),
        "max": torch.tensor(float(vol_max), dtype=torch.float32),
        "fname": str(fname),
        "slice_num": int(slice_num),
        "mask": op.mask.reshape(1, 1, -1).clone(),
    }


def list_h5(root: str | os.PathLike) -> list[Path]:
    """The ``.h5`` files of a folder, sorted; clear errors for a missing or empty folder."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder not found (run `make data` for the demo data, or see README 'Using real data')")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of fastMRI .h5 files, got a file")
    files = sorted(p for p in root.iterdir() if p.suffix == ".h5" and not p.name.startswith("."))
    if not files:
        raise DataError(f"{root}: no .h5 files in this folder; expected fastMRI single-coil volumes")
    return files


def split_dir(data_dir: str | os.PathLike, split: str) -> Path:
    """``data_dir/singlecoil_<split>`` if it exists, else ``data_dir`` itself if it holds .h5 files."""
    data_dir = Path(data_dir)
    sub = data_dir / f"singlecoil_{split}"
    if sub.is_dir():
        return sub
    if data_dir.is_dir() and any(p.suffix == ".h5" for p in data_dir.iterdir()):
        return data_dir
    raise DataError(f"{data_dir}: no singlecoil_{split}/ folder here (expected {sub}); run `make data` or point data_dir at a fastMRI-format folder")


def check_patterns(name: str, patterns) -> list[str]:
    """A list of file-name patterns (``fnmatch`` syntax, e.g. ``"*_sagittal_*"``); a single string is
    split at commas. Raises :class:`ConfigError` naming ``name`` for anything else or an empty list."""
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    if not isinstance(patterns, (list, tuple)) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"{name} must be a non-empty list of file-name patterns such as ['*_sagittal_*']; "
                          f"got {patterns!r}")
    return list(patterns)


def select_files(names: Sequence[str], patterns: Sequence[str], where: str = "data folder") -> set[str]:
    """The names matching any of ``patterns`` (``fnmatch``); :class:`DataError` when a pattern
    matches nothing (a typo would otherwise train on nothing or on everything)."""
    from fnmatch import fnmatch

    keep: set[str] = set()
    for pat in patterns:
        hit = {n for n in names if fnmatch(n, pat)}
        if not hit:
            raise DataError(f"{where}: no .h5 file matches the pattern {pat!r} (files: "
                            f"{', '.join(sorted(names)[:4])}{', ...' if len(names) > 4 else ''})")
        keep |= hit
    return keep


def slice_image(kspace, target=None, recon_size=None, where: str = "k-space") -> tuple[torch.Tensor, torch.Tensor]:
    """The complex ground-truth image and the magnitude target of one fully-sampled slice.

    Args:
        kspace: ``(H, W)`` complex k-space (NumPy or tensor).
        target: stored magnitude target (``reconstruction_esc``) or None (``|image|`` is used).
        recon_size: ``(h, w, ...)`` from the ISMRMRD header; when smaller than the k-space matrix
            (fastMRI knee: 640 x 368 -> 320 x 320) the complex image is centre-cropped to it.
        where: text naming the slice in error messages.

    Returns:
        ``image`` complex64 ``(h, w)`` and ``target`` float32 ``(h, w)``.
    """
    kspace = np.asarray(kspace)
    if not np.isfinite(kspace).all():
        raise DataError(f"{where} contains NaN or Inf values")
    image = ifft2c(torch.from_numpy(kspace.astype(np.complex64)))
    if recon_size is not None:
        rh, rw = int(recon_size[0]), int(recon_size[1])
        if (rh, rw) != tuple(image.shape) and rh <= image.shape[0] and rw <= image.shape[1]:
            image = centre_crop(image, (rh, rw))
    if target is not None:
        tgt = torch.from_numpy(np.asarray(target, dtype=np.float32))
        if tuple(tgt.shape) != tuple(image.shape):
            tgt = centre_crop(tgt, image.shape) if all(a >= b for a, b in zip(tgt.shape, image.shape)) else image.abs()
    else:
        tgt = image.abs()
    return image, tgt


def load_slice(folder: str | os.PathLike, volume: Optional[str] = None, slice_num: int = 0) -> dict:
    """One fully-sampled slice of a fastMRI-format folder, for demonstrations.

    Args:
        folder: folder of ``.h5`` files (e.g. ``data/demo/singlecoil_val``).
        volume: file name (the first file when None).
        slice_num: slice index in the volume.

    Returns:
        dict with ``image`` (complex64 ``(H, W)``), ``target`` (float32 ``(H, W)``), ``kspace``
        (complex64, as stored), ``fname``, ``slice_num``, ``attrs``.
    """
    import h5py

    files = list_h5(folder)
    path = files[0] if volume is None else Path(folder) / volume
    info = check_file(path)
    slice_num = check_int("slice_num", slice_num, minimum=0, maximum=info["slices"] - 1)
    with h5py.File(path, "r") as hf:
        kspace = hf["kspace"][slice_num]
        target = hf["reconstruction_esc"][slice_num] if "reconstruction_esc" in hf else None
        attrs = dict(hf.attrs)
        import xml.etree.ElementTree as etree

        from fastmri.data.mri_data import et_query
        root = etree.fromstring(hf["ismrmrd_header"][()])
        recon = [int(et_query(root, ["encoding", "reconSpace", "matrixSize", a])) for a in ("x", "y")]
    image, tgt = slice_image(kspace, target, recon, f"{path.name}: k-space slice {slice_num}")
    return {"image": image, "target": tgt, "kspace": torch.from_numpy(kspace), "fname": path.name,
            "slice_num": slice_num, "attrs": attrs}
