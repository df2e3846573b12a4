r"""Datasets: fastMRI-format slices and natural images, through the toolkit's physics.

Every dataset yields a dict for one sample (``default_collate`` batches them)::

    y        complex64 (1, h, w)   measurement (sr: central k-space block; cs: masked k-space)
    initial  complex64 (1, h', w') the image a network starts from (low-res / zero-filled)
    target   float32   (1, H, W)   ground-truth magnitude
    mask     float32   (1, 1, W)   cs only: the column mask of this sample
    scale    float32   ()          normalisation: y, initial and target were divided by it
    max      float32   ()          volume maximum of the target, in file units (fastMRI's attrs['max'])
    fname    str                   file name (volume id)
    slice_num int                  slice index in the volume

Normalisation (the fastMRI way, adapted to physics-based models): fastMRI's U-Net transform
normalises each slice by statistics of its zero-filled image. Our unrolled models need the data
term to stay linear, so we divide k-space and target by one *scalar* per slice, the maximum
magnitude of the full-slice starting image (known at test time, no ground truth involved).
Metrics are scale-invariant (PSNR/SSIM use the volume maximum of the target, NMSE is a ratio),
so they are the same in normalised and file units.

``op = batch_operator(batch, task, factor)`` rebuilds the operator of a collated batch (for
``cs`` it carries each sample's mask) so that ``model(batch["y"], op)`` works.

Real fastMRI knee k-space (``640 x 368``, readout oversampling; the scored image is the central
``320 x 320`` crop, the header's recon size) is used per task as follows:

* ``sr``: the complex image ``ifft2c(kspace)`` is centre-cropped to ``320 x 320`` and the
  low-resolution acquisition is simulated from it (the measured block is the centre of the
  k-space *of the 320 x 320 image*).
* ``cs`` (full slices): the raw k-space is used as measured. The column mask (over the 368
  columns; validation masks are fastMRI's per-file ones) is applied to it, ``y`` is the masked
  ``640 x 368`` k-space and the starting image is fastMRI's zero-filled image, centre-cropped
  to ``320 x 320``. The operator is :class:`~kdmri_lib.mri.physics.CroppedCartesianMask`
  (``A = M F pad``, ``A^H = crop F^H M``), so data consistency uses the measured samples.
  ``raw_kspace=False`` simulates the full slices from the cropped image instead.

Every sample, for training as for evaluation, is the measurement of a whole slice: there are no
training patches (a patch measured with its own patch-sized operator wraps around at its borders,
see :func:`reject_patch_size`).

Files whose k-space already has the recon size (the demo data, the brain-tumor data) are not
affected. Raw k-space widths vary between fastMRI files (368, 372, ...): full-slice ``cs``
batches need ``batch_size=1`` (as fastMRI's own VarNet) or equal widths.

Training masks (``cs``) are drawn from torch's global RNG (so ``seed_everything`` makes them
reproducible, also in DataLoader workers); validation masks use fastMRI's per-file seed
``tuple(map(ord, fname))``, identical for every slice of a volume and every run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import h5py
import numpy as np
import torch
from fastmri.data import SliceDataset
from torch.utils.data import Dataset

from kdmri_lib.core.errors import ConfigError, DataError, check_choice, check_int, first_line
from kdmri_lib.datasets.augment import augment_slice
from kdmri_lib.datasets.data_files import READ_ERRORS as _READ_ERRORS
from kdmri_lib.datasets.data_files import (  # noqa: F401
    check_patterns, list_h5, load_slice, scaled_sample, select_files, slice_image, split_dir)
from kdmri_lib.mri import masks as _masks
from kdmri_lib.mri.fastmri_format import check_file
from kdmri_lib.mri.physics import TASKS, Operator, build_operator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _check_task(task: str, factor: int) -> tuple[str, int]:
    check_choice("task", task, TASKS)
    factor = check_int("scale" if task == "sr" else "acceleration", factor, minimum=1)
    return task, factor


def reject_patch_size(patch_size, where: str = "patch_size") -> None:
    """Training samples are whole slices: a ``patch_size`` other than None is a clear error.

    A patch cut from the image and measured with a patch-sized operator is not what a scanner
    measures: the FFT treats the patch as periodic, its borders wrap around and ring (measured on
    the demo data: 21.9 dB zero-filled PSNR for 64 x 64 training patches against 27.0 dB for the
    same regions of the whole-slice simulation). Whole slices keep the data-consistency step exact.
    """
    if patch_size is not None:
        raise ConfigError(f"{where}={patch_size!r}: training on patches is not supported; every sample is the "
                          f"measurement of a whole slice (a patch measured on its own wraps around at its borders, "
                          f"which no scanner does). Use the default (None) and a smaller batch_size if memory is short")


class SliceTransform:
    """fastMRI ``SliceDataset`` transform: raw slice -> measurement, start image and target.

    Every sample is the measurement of a **whole slice** (or a whole natural image): the network
    sees exactly what the scanner would measure of that slice, and its data-consistency step uses
    that measurement with the slice's own operator.

    Args:
        task, factor: the acquisition (``"sr"`` + scale, or ``"cs"`` + acceleration).
        train_masks: ``cs``: draw a new random mask per sample (training) instead of the
            fixed per-volume fastMRI validation mask.
        mask_type, center_fraction: ``cs`` mask parameters (fastMRI defaults).
        crop_to_recon: crop the complex image to the header's recon size (fastMRI's 320 x 320
            for the 640 x 368 knee k-space) before the acquisition is simulated.
        raw_kspace: ``cs`` on full slices whose k-space is larger than the recon size: mask the
            raw k-space as measured (see the module docstring) instead of simulating it from the
            cropped image. No effect for ``sr`` or for files without oversampling.
        augment: training: warp each slice at random (flip, rotation, scale, shift:
            :mod:`kdmri_lib.datasets.augment`) *before* its acquisition is simulated, so the sample is
            still the measurement of a whole slice. Not for raw (oversampled) ``cs`` k-space, which
            is used as measured.
    """

    PATCH_TRIES = 10

    def __init__(self, task: str, factor: int, train_masks: bool = False,
                 mask_type: str = "random", center_fraction: Optional[float] = None, crop_to_recon: bool = True,
                 raw_kspace: bool = True, augment: bool = False):
        self.task, self.factor = _check_task(task, factor)
        self.train_masks = train_masks
        self.mask_type = check_choice("mask_type", mask_type, _masks.MASK_TYPES)
        self.center_fraction = center_fraction
        self.crop_to_recon = crop_to_recon
        self.raw_kspace = raw_kspace
        self.augment = bool(augment)

    def _operator(self, shape, seed, fname: str = "") -> Operator:
        try:
            return build_operator(self.task, self.factor, shape, seed=seed,
                                  center_fraction=self.center_fraction, mask_type=self.mask_type)
        except ConfigError as e:   # a matrix the task cannot take: name the file
            raise ConfigError(f"{fname}: {shape[0]}x{shape[1]} images: {e}" if fname else str(e)) from None

    def _mask_seed(self, fname: str):
        if self.train_masks:
            return int(torch.randint(0, 2**31 - 1, (1,)).item())
        return _masks.fname_seed(fname)

    def __call__(self, kspace, mask, target, attrs, fname, slice_num) -> dict:
        recon = attrs.get("recon_size") if self.crop_to_recon else None
        if mask is not None:   # the file stores an under-sampled acquisition (fastMRI's test split)
            return self.make_measured_sample(kspace, mask, attrs, fname, slice_num, recon)
        image, tgt = slice_image(kspace, target, recon, f"{fname}: k-space slice {slice_num}")
        vol_max = float(attrs.get("max", tgt.max()))
        if self.raw_kspace and self.task == "cs" and tuple(image.shape) != np.shape(kspace):
            kspace_t = torch.from_numpy(np.asarray(kspace).astype(np.complex64))
            return self.make_raw_sample(kspace_t, tgt, fname, slice_num, vol_max=vol_max)
        if self.augment:
            image, tgt = augment_slice(image, tgt)
        return self.make_sample(image, tgt, fname, slice_num, vol_max=vol_max)

    def make_raw_sample(self, kspace: torch.Tensor, target: torch.Tensor, fname: str, slice_num: int,
                        vol_max: Optional[float] = None) -> dict:
        """``cs`` on measured raw k-space ``(Hk, Wk)`` larger than the target ``(H, W)``.

        ``y = M kspace`` (``(1, Hk, Wk)``), ``initial = crop(ifft2c(y))`` (``(1, H, W)``), mask over
        the ``Wk`` columns; the operator is :class:`~kdmri_lib.mri.physics.CroppedCartesianMask`.
        """
        seed = self._mask_seed(fname)
        try:
            op = build_operator("cs", self.factor, tuple(target.shape), seed=seed, center_fraction=self.center_fraction,
                                mask_type=self.mask_type, kspace_shape=tuple(kspace.shape))
        except ConfigError as e:
            raise ConfigError(f"{fname}: k-space {tuple(kspace.shape)}: {e}") from None
        y = op.measure(kspace[None, None])
        return scaled_sample(op, y, target, vol_max if vol_max is not None else float(target.max()), fname, slice_num)

    def make_measured_sample(self, kspace, mask, attrs, fname: str, slice_num: int, recon=None) -> dict:
        """``cs`` on a file that stores an under-sampled acquisition (fastMRI's test split): the
        measurement as acquired, no ground truth (:func:`kdmri_lib.datasets.measured.measured_sample`)."""
        from kdmri_lib.datasets.measured import measured_sample

        return measured_sample(kspace, mask, attrs, fname, slice_num, self.task, self.factor, recon)

    def make_sample(self, image: torch.Tensor, target: torch.Tensor, fname: str, slice_num: int,
                    vol_max: Optional[float] = None) -> dict:
        """Simulate the acquisition of a whole complex ``(H, W)`` slice; shared with natural images."""
        H, W = image.shape
        if self.task == "sr" and (H % self.factor or W % self.factor):
            raise DataError(f"{fname}: slice size {H}x{W} is not divisible by the sr scale {self.factor}")
        op = self._operator((H, W), self._mask_seed(fname), fname)
        x = image[None, None]
        scale = float(op.initial(op.forward(x)).abs().max())
        if not np.isfinite(scale) or scale <= 0:
            raise DataError(f"{fname}: slice {slice_num} is all zeros (its starting image is empty); nothing to reconstruct")
        y = op.forward(x / scale)
        sample = {
            "y": y[0],
            "initial": op.initial(y)[0],
            "target": (target[None] / scale).to(torch.float32),
            "scale": torch.tensor(scale, dtype=torch.float32),
            "max": torch.tensor(vol_max if vol_max is not None else float(target.max()), dtype=torch.float32),
            "fname": str(fname),
            "slice_num": int(slice_num),
        }
        if self.task == "cs":
            sample["mask"] = op.mask.reshape(1, 1, -1).clone()
        return sample


class MRISliceDataset(SliceDataset):
    """Slices of a folder of fastMRI-format single-coil files, for one task.

    A ``fastmri.data.SliceDataset`` (``challenge="singlecoil"``) whose files are validated first
    (clear errors for truncated / non-HDF5 / wrong-key files; hidden files and files without the
    ``.h5`` suffix are ignored) and whose transform is :class:`SliceTransform`.

    Args:
        root: folder with ``.h5`` files (e.g. ``data/demo/singlecoil_train``).
        task, factor: ``"sr"`` + scale or ``"cs"`` + acceleration.
        train_masks: random ``cs`` masks per sample (training) instead of fixed validation masks.
        sample_rate: fraction of slices to keep (fastMRI's option).
        **transform_kwargs: passed to :class:`SliceTransform`.
    """

    def __init__(self, root: str | os.PathLike, task: str, factor: int,
                 train_masks: bool = False, sample_rate: Optional[float] = None,
                 include: Optional[Sequence[str]] = None, **transform_kwargs):
        self.root = Path(root)
        self.files = list_h5(self.root)
        self.include = None if include is None else tuple(check_patterns("include", include))
        for f in self.files:
            check_file(f, require_target=False)
        self.task, self.factor = _check_task(task, factor)
        transform = SliceTransform(task, factor, train_masks=train_masks, **transform_kwargs)
        # use_dataset_cache=False: fastMRI's metadata cache is a pickle file in the working directory, and
        # unpickling a file can run code; the toolkit never reads (or writes) it
        super().__init__(self.root, challenge="singlecoil", transform=transform, sample_rate=sample_rate,
                         use_dataset_cache=False)
        if len(self.raw_samples) == 0:
            raise DataError(f"{self.root}: no slices found in {len(self.files)} .h5 files")
        if self.include is not None:
            keep = select_files([f.name for f in self.files], self.include, where=str(self.root))
            self.files = [f for f in self.files if f.name in keep]
            self.raw_samples = [s for s in self.raw_samples if s[0].name in keep]

    def _retrieve_metadata(self, fname):
        fname = Path(fname)
        if fname.suffix != ".h5" or fname.name.startswith("."):
            return {}, 0  # not a data file: ignored
        try:
            return super()._retrieve_metadata(fname)
        except _READ_ERRORS as e:
            raise DataError(f"{fname}: unreadable header or attributes ({type(e).__name__}: {first_line(e)}); the "
                            f"file may be truncated or corrupt") from None

    def _read(self, i: int, target: bool):
        """``(kspace, mask, target or None, attrs, fname, slice)`` of item ``i``; read errors of a damaged
        file become a :class:`DataError` naming it. ``target=False``: neither the stored target nor
        the ``max`` attribute is read."""
        fname, dataslice, metadata = self.raw_samples[i]
        try:
            with h5py.File(fname, "r") as hf:
                kspace = hf["kspace"][dataslice]
                mask = np.asarray(hf["mask"]) if "mask" in hf else None
                tgt = hf[self.recons_key][dataslice] if (target and self.recons_key in hf) else None
                attrs = {k: v for k, v in hf.attrs.items() if target or k != "max"}
                attrs.update(metadata)
        except _READ_ERRORS as e:
            raise DataError(f"{fname}: could not read slice {dataslice} ({type(e).__name__}: {first_line(e)}); "
                            f"the file may be truncated or corrupt") from None
        return kspace, mask, tgt, attrs, fname.name, dataslice

    def __getitem__(self, i: int) -> dict:
        """fastMRI's ``SliceDataset.__getitem__`` (the same reads and transform call), with read errors
        of a damaged file turned into a :class:`DataError` naming it; errors of the transform pass.
        A file that stores an under-sampled acquisition (a ``mask``: fastMRI's test split) has no
        ground truth: it is a :class:`DataError` here (use :meth:`measurement`)."""
        read = self._read(i, target=True)
        if read[1] is not None:
            raise DataError(f"{read[4]}: stores an under-sampled acquisition (a mask) and no ground truth; it can "
                            f"only be a measurement-only pool (TrainConfig.pool_split / --pool-split), not a "
                            f"training or scored slice")
        return self.transform(*read)

    def measurement(self, i: int) -> dict:
        """Item ``i`` without its ground truth: the file's ``kspace`` is read, its stored target and
        ``max`` attribute are not. ``y``, ``initial``, ``scale`` (from the measurement alone) and
        ``mask`` as in ``self[i]``; ``target`` is a zero tensor of the image's shape, ``max`` 0,
        ``labelled`` 0 (the measurement-only pool of :mod:`kdmri_lib.datasets.protocol`)."""
        sample = self.transform(*self._read(i, target=False))
        sample["target"] = torch.zeros_like(sample["target"])
        sample["max"] = torch.tensor(0.0)
        sample["labelled"] = torch.tensor(0.0)
        return sample

    def operator(self, batch: dict) -> Operator:
        """The operator of a collated batch of this dataset."""
        return batch_operator(batch, self.task, self.factor)

    def volumes(self) -> dict[str, list[int]]:
        """Dataset indices grouped by volume (file name), in slice order."""
        vols: dict[str, list[int]] = {}
        for i, s in enumerate(self.raw_samples):
            vols.setdefault(s[0].name, []).append(i)
        return vols


class NaturalImageDataset(Dataset):
    """Grayscale natural images (PNG/JPEG) through the same physics as the MRI slices.

    Each image is a real, non-negative "magnitude" image of ``size`` (the MRI slice size, so that
    both batch together); the sample is the measurement of that **whole** image with the toolkit's
    operator (no phase, no noise). The image is a square (or ``size``-shaped) centre crop of the
    file resized with area averaging; with ``augment`` (training) it is a random crop of 60-100 %
    of the short side, randomly flipped, drawn from torch's global RNG (reproducible under
    ``seed_everything``). Without ``size`` the image keeps its own size, cropped to a multiple of
    ``lcm(8, factor)``.

    Args:
        root: folder of images (e.g. ``data/demo/natural/train``).
        task, factor, train_masks: as :class:`MRISliceDataset`.
        size: ``(H, W)`` of every sample (None: each image's own, cropped size).
        augment: random crops and flips (training).
    """

    def __init__(self, root: str | os.PathLike, task: str, factor: int, train_masks: bool = False,
                 size: Optional[tuple[int, int]] = None, augment: bool = False, **transform_kwargs):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found")
        self.files = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not self.files:
            raise DataError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.task, self.factor = _check_task(task, factor)
        if size is not None:
            size = (check_int("size[0]", size[0], minimum=8), check_int("size[1]", size[1], minimum=8))
            if self.task == "sr" and (size[0] % self.factor or size[1] % self.factor):
                raise ConfigError(f"natural image size {size[0]}x{size[1]} must be divisible by the sr scale {self.factor}")
        self.size, self.augment = size, bool(augment)
        self.transform = SliceTransform(task, factor, train_masks=train_masks, **transform_kwargs)

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` as float32 ``(H, W)`` in [0, 1]: ``size`` (resized crop) or its own cropped size."""
        from PIL import Image

        path = self.files[i]
        arr = self._read(path)
        if arr.shape[0] < 8 or arr.shape[1] < 8:
            raise DataError(f"{path}: image {arr.shape} is too small")
        if self.size is None:
            m = int(np.lcm(self.factor if self.task == "sr" else 1, 8))
            H, W = arr.shape[0] - arr.shape[0] % m, arr.shape[1] - arr.shape[1] % m
            if H < 8 or W < 8:
                raise DataError(f"{path}: image {arr.shape} is too small")
            top, left = (arr.shape[0] - H) // 2, (arr.shape[1] - W) // 2
            return torch.from_numpy(np.ascontiguousarray(arr[top: top + H, left: left + W]))
        th, tw = self.size
        # the largest crop of the target's aspect ratio, shrunk to 60-100 % with augment
        ch = min(arr.shape[0], int(arr.shape[1] * th / tw))
        cw = min(arr.shape[1], int(round(ch * tw / th)))
        if self.augment:
            f = 0.6 + 0.4 * float(torch.rand(()))
            ch, cw = max(8, int(ch * f)), max(8, int(cw * f))
            top = int(torch.randint(0, arr.shape[0] - ch + 1, (1,)))
            left = int(torch.randint(0, arr.shape[1] - cw + 1, (1,)))
        else:
            top, left = (arr.shape[0] - ch) // 2, (arr.shape[1] - cw) // 2
        crop = Image.fromarray(np.ascontiguousarray(arr[top: top + ch, left: left + cw]))
        out = np.asarray(crop.resize((tw, th), resample=Image.Resampling.BOX), dtype=np.float32)
        if self.augment:
            if bool(torch.rand(()) < 0.5):
                out = out[:, ::-1]
            if bool(torch.rand(()) < 0.5):
                out = out[::-1, :]
        return torch.from_numpy(np.ascontiguousarray(np.clip(out, 0.0, 1.0)))

    def __getitem__(self, i: int) -> dict:
        img = self.load(i)
        return self.transform.make_sample(img.to(torch.complex64), img, self.files[i].name, 0)

    def operator(self, batch: dict) -> Operator:
        return batch_operator(batch, self.task, self.factor)


class MixedDataset(Dataset):
    """Interleave two datasets 1:1 (the paper mixes MRI and natural images in equal parts).

    Item ``2i`` is ``a[i]`` and item ``2i + 1`` is ``b[i mod len(b)]``: one pass sees every
    sample of ``a`` once and as many samples of ``b``.
    """

    def __init__(self, a: Dataset, b: Dataset):
        if len(a) == 0 or len(b) == 0:
            raise DataError("MixedDataset needs two non-empty datasets")
        self.a, self.b = a, b
        self.task, self.factor = getattr(a, "task", None), getattr(a, "factor", None)

    def __len__(self) -> int:
        return 2 * len(self.a)

    def __getitem__(self, i: int) -> dict:
        return self.a[i // 2] if i % 2 == 0 else self.b[(i // 2) % len(self.b)]

    def operator(self, batch: dict) -> Operator:
        return batch_operator(batch, self.task, self.factor)


def batch_operator(batch: dict, task: str, factor: int) -> Operator:
    """Rebuild the operator of a collated batch (``cs``: one mask per sample)."""
    shape = tuple(batch["target"].shape[-2:])
    if task == "cs":
        meas = tuple(batch["y"].shape[-2:])  # raw fastMRI k-space: larger than the image
        return build_operator("cs", factor, shape, mask=batch["mask"], kspace_shape=meas if meas != shape else None)
    return build_operator(task, factor, shape)


def collate(samples: Sequence[dict]) -> dict:
    """Batch a list of samples (``torch.utils.data.default_collate``: tensors stacked, strings listed).

    Raises:
        DataError: samples of different sizes (fastMRI knee files whose raw k-space widths differ,
            368 / 372 ...: a batch of whole slices needs one matrix), naming the files and sizes.
    """
    samples = list(samples)
    try:
        return torch.utils.data.default_collate(samples)
    except RuntimeError:
        shapes = {}
        for s in samples:
            if isinstance(s, Mapping) and isinstance(s.get("y"), torch.Tensor):
                shapes.setdefault(tuple(s["y"].shape[-2:]), []).append(f"{s.get('fname')}:{s.get('slice_num')}")
        if len(shapes) < 2:
            raise
        parts = "; ".join(f"{h}x{w}: {', '.join(n[:2])}" for (h, w), n in shapes.items())
        raise DataError(f"one batch holds measurements of different sizes ({parts}): whole slices batch only with "
                        f"one k-space matrix; use batch_size 1 (a distillation batch then holds one reference and "
                        f"one pool slice, which must still match) or files of one matrix "
                        f"(fastmri_index.csv lists each file's)") from None


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch to ``device`` (non-blocking where possible)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def build_dataset(data_dir: str | os.PathLike, split: str, task: str, factor: int,
                  natural_dir: Optional[str | os.PathLike] = None, include: Optional[Sequence[str]] = None,
                  references: Optional[int] = None, unlabelled: bool = False, pool_split: Optional[str] = None,
                  **kwargs) -> Dataset:
    """The dataset of one split (``train`` / ``val`` / ``test``) of a data folder (whole slices).

    Training splits (``split == "train"``) draw random ``cs`` masks; with ``natural_dir`` the
    natural images are mixed in 1:1, each resized to the MRI slice size (randomly cropped and
    flipped for training) and measured whole. ``include``: file-name patterns selecting the files;
    ``references`` / ``unlabelled``: the few-references protocol
    (:func:`kdmri_lib.datasets.protocol.protocol_dataset`); ``pool_split``: the measurement-only pool
    is that split's slices (:func:`pool_dataset`, e.g. fastMRI's
    ``test``) instead of the other volumes of the selected files.
    """
    from kdmri_lib.datasets.protocol import protocol_dataset

    train = split == "train"
    ds: Dataset = MRISliceDataset(split_dir(data_dir, split), task, factor, train_masks=train, include=include, **kwargs)
    pool = pool_dataset(data_dir, pool_split, task, factor) if pool_split is not None else None
    ds = protocol_dataset(ds, references, unlabelled, pool=pool)
    if natural_dir is not None:
        size = tuple(int(n) for n in ds[0]["target"].shape[-2:])
        nat = NaturalImageDataset(natural_dir, task, factor, train_masks=train, size=size, augment=train)
        ds = MixedDataset(ds, nat)
    return ds


def pool_dataset(data_dir: str | os.PathLike, split: str, task: str, factor: int,
                 include: Optional[Sequence[str]] = None, verbose: bool = False) -> MRISliceDataset:
    """The slices of another split as a measurement-only pool (e.g. fastMRI's ``singlecoil_test``): the
    files :func:`kdmri_lib.datasets.measured.pool_files` keeps (the task's acceleration). Read it with
    :meth:`MRISliceDataset.measurement` (its ``__getitem__`` refuses files without ground truth)."""
    import glob

    from kdmri_lib.datasets.measured import pool_files

    folder, kept = pool_files(data_dir, split, task, factor, include, verbose)
    return MRISliceDataset(folder, task, factor, include=[glob.escape(n) for n in kept])


def load_volume(path: str | os.PathLike, task: str, factor: int, slices: Optional[Sequence[int]] = None, **kwargs) -> dict:
    """All slices of one file as one batch (full slices, validation masks): handy in notebooks."""
    path = Path(path)
    check_file(path)
    ds = MRISliceDataset(path.parent, task, factor, **kwargs)
    idx = [i for i, s in enumerate(ds.raw_samples) if s[0].name == path.name]
    if slices is not None:
        idx = [idx[s] for s in slices]
    return torch.utils.data.default_collate([ds[i] for i in idx])
