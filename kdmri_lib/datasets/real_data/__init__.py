"""The paper's real data sets, one command each, in the layout the toolkit's loaders read.

=====================  ==========================================  =====================================
data set               function (CLI in ``data_scripts/``)         output (``data_dir`` / ``natural_dir``)
=====================  ==========================================  =====================================
fastMRI single-coil    :func:`prepare_fastmri`                     ``out/singlecoil_{train,val,test}/``
knee                   (``prepare_fastmri.py``)                    (files linked or streamed, not rewritten)
Brain tumor MRI        :func:`prepare_brain_tumor`                 ``out/singlecoil_{train,val}/``
(Kaggle)               (``prepare_brain_tumor.py``)                (simulated k-space, demo recipe)
Flickr2K, Set5         :func:`prepare_natural`                     ``out/natural/{train,set5}/``
                       (``prepare_natural.py``)                    (grayscale Y PNGs)
=====================  ==========================================  =====================================

Every preparation is idempotent (a manifest in ``out`` records what was done; a second run with
the same inputs does no work), writes files atomically (an interrupted run leaves no half-written
file in a data folder and the next run completes it), reports bad inputs with clear
:class:`~kdmri_lib.core.errors.DataError` messages, and shows progress bars. :func:`download` is the
resumable, SHA-256-verified downloader they share.

How the 640 x 368 fastMRI k-space is used by each task is documented (and implemented) in
:mod:`kdmri_lib.datasets.data` and :class:`kdmri_lib.mri.physics.CroppedCartesianMask`.
"""

from __future__ import annotations

from kdmri_lib.datasets.real_data.brain_tumor import BrainTumorConfig, prepare_brain_tumor
from kdmri_lib.datasets.real_data.fastmri_knee import FastMRIConfig, prepare_fastmri, verify_knee_file
from kdmri_lib.datasets.real_data.http_download import download, sha256_file
from kdmri_lib.datasets.real_data.natural import KNOWN_SOURCES, NaturalConfig, prepare_natural

__all__ = [
    "BrainTumorConfig", "FastMRIConfig", "KNOWN_SOURCES", "NaturalConfig", "download", "prepare_brain_tumor",
    "prepare_fastmri", "prepare_natural", "sha256_file", "verify_knee_file",
]
