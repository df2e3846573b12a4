r"""The distillation protocol: few references, many measurements — and who may see which ground truth.

Fully-sampled references are scarce in MRI; under-sampled scans are plentiful (fastMRI's test split
has no targets). The protocol the ablation measures (:data:`DEFAULT`) states it on the demo data:

* **source domain** (``source``: axial and coronal files of ``singlecoil_train``, both contrasts):
  the teacher's pre-training, with ground truth. It never sees a sagittal slice.
* **target domain** (``target``: the sagittal files). Of its training files, ``references`` slices
  keep their ground truth (whole volumes, picked by :func:`split_references` with the fixed
  ``split_seed``, the same for every row and every seed); the slices of every *other* target volume
  form the **measurement-only pool**: :class:`MeasurementOnly` yields their measurement and
  nothing else (``target`` is zeros, ``labelled`` is 0; the file's ``reconstruction_esc`` is never
  read).
* **scored**: the sagittal files of ``singlecoil_val`` (``val``), and the held-out real scan; no
  model, pre-training included, sees their ground truth.

Who sees what::

    model / stage            ground truth of             measurements of
    teacher pre-training     source train                source train
    student alone            target references           target references
    distilled student        target references           target references + pool (teacher labels)
    teacher correction       target references           target references + pool (student feedback)

Every student row takes the same number of optimiser steps. The datasets the trainer builds for a
run follow from :class:`~kdmri_lib.engine.train.TrainConfig`'s ``train_files``, ``references`` and
``unlabelled`` fields (:func:`protocol_dataset`); :func:`describe` prints the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from kdmri_lib.core.errors import ConfigError, DataError, check_int

__all__ = ["Protocol", "DEFAULT", "KNEE", "PROTOCOLS", "split_references", "SliceSubset", "Labelled", "MeasurementOnly", "Interleave",
           "protocol_dataset", "describe"]


@dataclass(frozen=True)
class Protocol:
    """A source/target split of a data folder (file-name patterns, ``fnmatch`` syntax).

    Attributes:
        source: training files of the teacher's pre-training (with ground truth).
        target: training files of the target domain (references + measurement-only pool).
        val: validation files the rows are scored on (target domain).
        references: target slices with ground truth (whole volumes first, :func:`split_references`).
        split_seed: seed of the reference pick (fixed: every row and seed shares the split).
        pool_split: None: the measurement-only pool is the target's training volumes that hold no
            reference. A split name (``"test"``): the pool is that split's slices as acquired
            (:func:`kdmri_lib.datasets.data.pool_dataset`: fastMRI's test split stores under-sampled
            k-space and its mask, and no ground truth).
    """

    source: tuple[str, ...] = ("*_axial_*", "*_coronal_*")
    target: tuple[str, ...] = ("*_sagittal_*",)
    val: tuple[str, ...] = ("*_sagittal_*",)
    references: int = 12
    split_seed: int = 0
    pool_split: Optional[str] = None
    #: how notebooks and reports name the scored slices (not a setting: absent from :meth:`to_dict`)
    scored_text: str = "the sagittal validation slices"

    def to_dict(self) -> dict:
        d = {"source": list(self.source), "target": list(self.target), "val": list(self.val),
             "references": int(self.references), "split_seed": int(self.split_seed)}
        if self.pool_split is not None:   # (absent from the demo protocol's stored settings, which predate it)
            d["pool_split"] = self.pool_split
        return d


#: the protocol of ``make bench-distill`` on the demo data
DEFAULT = Protocol()

#: the paper's scale: fastMRI single-coil knee, ``cs`` x4. The teacher pre-trains on the training split
#: (ground truth); the student has the ground truth of ``references`` training slices (10 volumes of
#: about 35 slices) and the test split's 4x measurements as its pool (fastMRI publishes no ground truth
#: for them); the rows are scored on the validation split, which no model trains on.
KNEE = Protocol(source=("*",), target=("*",), val=("*",), references=350, pool_split="test",
                scored_text="the knee validation slices")

#: the protocols by name (``python -m kdmri_lib.ablation --protocol NAME``)
PROTOCOLS = {"demo": DEFAULT, "knee": KNEE}


def split_references(volumes: dict[str, list[int]], n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Pick ``n`` reference slices by whole volumes; the pool is every volume with no reference.

    Args:
        volumes: dataset indices grouped by volume (``MRISliceDataset.volumes()``), slice order.
        n: number of reference slices (``>= 1``).
        seed: order of the volumes (``numpy.random.default_rng(seed).permutation``).

    Returns:
        ``(references, pool)``: dataset indices. Volumes are taken in the seeded order until ``n``
        slices are reached; the unused slices of the last reference volume go to neither list (a
        pool slice never shares a volume with a reference).
    """
    n = check_int("references", n, minimum=1)
    names = sorted(volumes)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    refs: list[int] = []
    used = 0
    for name in order:
        if len(refs) >= n:
            break
        refs.extend(volumes[name][: n - len(refs)])
        used += 1
    if len(refs) < n:
        total = sum(len(v) for v in volumes.values())
        raise DataError(f"references={n}: the selected training files hold only {total} slices")
    pool = [i for name in order[used:] for i in volumes[name]]
    return refs, pool


class SliceSubset(Dataset):
    """The items ``indices`` of a dataset (keeps its ``task``, ``factor`` and ``operator``)."""

    def __init__(self, ds: Dataset, indices: Sequence[int]):
        if not len(indices):
            raise DataError("an empty subset of slices: nothing to train on")
        self.ds, self.indices = ds, list(indices)
        self.task, self.factor = getattr(ds, "task", None), getattr(ds, "factor", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.ds[self.indices[i]]

    def operator(self, batch: dict):
        return self.ds.operator(batch)


class Labelled(SliceSubset):
    """Slices with their ground truth, flagged ``labelled = 1``."""

    def __getitem__(self, i: int) -> dict:
        return {**self.ds[self.indices[i]], "labelled": torch.tensor(1.0)}


class MeasurementOnly(SliceSubset):
    """Slices without ground truth: the measurement ``y`` and the start image ``initial`` only.

    The file's stored target is never read (:meth:`MRISliceDataset.measurement`); ``target`` is a
    zero tensor of the image's shape (so that batches collate and operators can be rebuilt),
    ``max`` is 0 and ``labelled`` is 0. A loss that would use ``target`` must mask by ``labelled``.
    """

    def __getitem__(self, i: int) -> dict:
        return self.ds.measurement(self.indices[i])


class Interleave(Dataset):
    """References and pool, 1:1: item ``2i`` is ``refs[i mod len(refs)]``, item ``2i + 1`` is
    ``pool[i mod len(pool)]``; ``len = 2 max(len(refs), len(pool))``, so that one pass sees every
    pool slice (and the few references several times)."""

    def __init__(self, refs: Dataset, pool: Dataset):
        self.refs, self.pool = refs, pool
        self.task, self.factor = getattr(refs, "task", None), getattr(refs, "factor", None)
        self.n = max(len(refs), len(pool))

    def __len__(self) -> int:
        return 2 * self.n

    def __getitem__(self, i: int) -> dict:
        j = i // 2
        return self.refs[j % len(self.refs)] if i % 2 == 0 else self.pool[j % len(self.pool)]

    def operator(self, batch: dict):
        return self.refs.operator(batch)


def protocol_dataset(ds, references: Optional[int], unlabelled: bool, seed: int = 0, pool=None) -> Dataset:
    """The training set of a protocol run from the (file-filtered) training slices ``ds``.

    ``references=None``: ``ds`` itself (every slice with ground truth). Otherwise the
    :func:`split_references` references as :class:`Labelled`; with ``unlabelled`` they are
    interleaved 1:1 with the measurement-only pool (:class:`MeasurementOnly`, :class:`Interleave`):
    every slice of ``pool`` (a dataset of another split, :func:`kdmri_lib.datasets.data.pool_dataset`)
    when given, else the volumes of ``ds`` that hold no reference.
    """
    if references is None:
        if unlabelled or pool is not None:
            raise ConfigError("unlabelled=True needs references=N (the rest of the training files are the pool)")
        return ds
    refs, pool_idx = split_references(ds.volumes(), references, seed)
    lab = Labelled(ds, refs)
    if pool is not None:
        if not unlabelled:
            raise ConfigError("a pool from another split (pool_split) needs unlabelled=True (distill mode)")
        return Interleave(lab, MeasurementOnly(pool, range(len(pool))))
    pool = pool_idx
    if not unlabelled:
        return lab
    if not pool:
        raise DataError(f"references={references} leave no volume for the measurement-only pool")
    return Interleave(lab, MeasurementOnly(ds, pool))


def describe(ds, references: int, seed: int = 0, pool=None) -> str:
    """One line per group: which volumes are references and which are the pool (``pool``: a dataset
    of another split, :func:`kdmri_lib.datasets.data.pool_dataset`)."""
    vols = ds.volumes()
    refs, pool_idx = split_references(vols, references, seed)
    name_of = {i: n for n, idx in vols.items() for i in idx}
    rv = sorted({name_of[i] for i in refs})
    if pool is not None:
        n, nv, where = len(pool), len(pool.volumes()), f" of {pool.root.name}"
    else:
        n, nv, where = len(pool_idx), len({name_of[i] for i in pool_idx}), ""
    shown = ", ".join(rv[:6]) + (f", ... ({len(rv)} in all)" if len(rv) > 6 else "")
    return (f"references: {len(refs)} slices of {len(rv)} volume(s) ({shown})\n"
            f"measurement-only pool: {n} slices of {nv} volume(s){where}")

