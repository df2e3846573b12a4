r"""A whole head around the skull-stripped MNI152 brain: synthetic scalp and skull, two contrasts.

The MNI152 template that ``nilearn`` ships is a *brain*: everything outside it is zero. A scanner
images the whole head, and a network that never saw scalp, skull and marrow reconstructs them
badly. This module wraps the template's brain in the layers of a real head, built in 3-D from the
distance to the brain's surface (so axial, coronal and sagittal slices agree), with thicknesses
that vary smoothly over the head (a seeded low-frequency random field) and a fine texture in
fat and marrow. From the inside out (typical adult thicknesses, mm)::

    subarachnoid CSF   1.5-3     T1w dark    T2w bright
    inner table        1.5-2.5   bone: almost no signal in either contrast
    diploe (marrow)    2-4       T1w bright (fat)    T2w intermediate
    outer table        1.5-2.5   bone
    galea / muscle     1-2.5     T1w grey    T2w dark grey
    subcutaneous fat   2.5-5     T1w brightest       T2w bright
    skin               1-2       T1w grey    T2w grey

Contrasts (relative intensities, white matter of T1w = template scale):

* ``T1w``: the template itself inside the brain, the layers above outside it;
* ``T2w``: from the tissue probability maps nilearn ships with the template
  (``mni_icbm152_{gm,wm}_tal_nlin_sym_09a_converted``): CSF 1.0, grey matter 0.55,
  white matter 0.35 — CSF bright, white matter darker than grey, as on a T2-weighted scan.

This is a **stand-in** for real whole-head anatomy, labelled as such: the brain is real (an
average of 152 brains), the scalp and skull are a model.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from kdmri_lib.core.errors import ConfigError, DataError

CONTRASTS = ("T1w", "T2w")
_NILEARN_DATA = ("datasets", "data")
_MAPS = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
         "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
         "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}

#: the layers outside the brain: (name, thickness range in mm, T1w, T2w)
LAYERS = (
    ("csf", (1.5, 3.0), 0.10, 1.00),
    ("inner_table", (1.5, 2.5), 0.03, 0.03),
    ("diploe", (2.0, 4.0), 0.62, 0.45),
    ("outer_table", (1.5, 2.5), 0.03, 0.03),
    ("galea", (1.0, 2.5), 0.38, 0.22),
    ("fat", (2.5, 5.0), 0.92, 0.62),
    ("skin", (1.0, 2.0), 0.45, 0.40),
)
#: the largest head thickness outside the brain (mm): what the field of view must leave room for
MAX_THICKNESS = sum(hi for _, (lo, hi), _, _ in LAYERS)
#: texture (relative standard deviation) of the layers that have one
_TEXTURE = {"diploe": 0.12, "fat": 0.05, "galea": 0.08}


def nilearn_map(key: str) -> Path:
    """Path of one MNI152 map (``t1``, ``gm``, ``wm``) inside the installed ``nilearn``."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the demo data needs the 'nilearn' package (it ships the MNI152 template): pip install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_NILEARN_DATA, _MAPS[key])
    if not path.exists():
        raise DataError(f"{path}: MNI152 map not found inside nilearn; reinstall nilearn")
    return path


def _load(key: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(nilearn_map(key))).get_fdata(dtype=np.float32))


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, scale_vox: float) -> np.ndarray:
    """A smooth random field in [0, 1] (white noise low-passed with a Gaussian of ``scale_vox``).

    Fields smoother than 4 voxels are drawn on a grid 4x coarser and interpolated (the same
    statistics at a fraction of the cost)."""
    from scipy.ndimage import gaussian_filter, zoom

    step = 4 if scale_vox >= 8 else 1
    coarse = tuple(-(-n // step) for n in shape)
    f = gaussian_filter(rng.standard_normal(coarse).astype(np.float32), scale_vox / step, mode="nearest")
    if step > 1:
        f = zoom(f, step, order=1)[tuple(slice(0, n) for n in shape)]
    f -= f.min()
    return f / max(float(f.max()), 1e-12)


@functools.lru_cache(maxsize=1)
def build_head(seed: int = 0) -> dict[str, np.ndarray]:
    """The whole-head volumes, float32 ``(197, 233, 189)`` at 1 mm, on the template's grid (padded).

    Deterministic for a seed and cached (the last seed): treat the arrays as read-only.

    Returns:
        dict with ``T1w`` and ``T2w`` (white matter of T1w about 0.8-1.0), ``brain`` (bool mask)
        and ``layer`` (int8: 0 background, 1 brain, 2.. the :data:`LAYERS` in order), padded by
        ``ceil(MAX_THICKNESS) + 2`` voxels on every side so that the head fits the volume.
    """
    from scipy.ndimage import binary_closing, binary_fill_holes, distance_transform_edt

    rng = np.random.default_rng(seed)
    t1 = _load("t1")
    t1 /= t1.max()
    gm, wm = _load("gm"), _load("wm")
    gm, wm = gm / gm.max(), wm / wm.max()   # probabilities (stored scaled to 255)
    pad = int(np.ceil(MAX_THICKNESS)) + 2
    t1, gm, wm = (np.pad(a, pad) for a in (t1, gm, wm))
    brain = t1 > 0.02
    brain = binary_fill_holes(binary_closing(brain, iterations=2))
    dist = distance_transform_edt(~brain).astype(np.float32)    # mm outside the brain (1 mm voxels)
    shape = t1.shape
    layer = np.where(brain, 1, 0).astype(np.int8)
    out_t1 = np.where(brain, t1, 0.0).astype(np.float32)
    # T2w inside the brain from the tissue probabilities; CSF is what is neither grey nor white matter
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    out_t2 = np.where(brain, 1.00 * csf + 0.55 * gm + 0.35 * wm, 0.0).astype(np.float32)
    inner = np.zeros(shape, dtype=np.float32)
    for k, (name, (lo, hi), v1, v2) in enumerate(LAYERS):
        thick = lo + (hi - lo) * smooth_field(shape, rng, 12.0)
        outer = inner + thick
        sel = (~brain) & (dist > inner) & (dist <= outer)
        tex = 1.0
        if name in _TEXTURE:
            tex = 1.0 + _TEXTURE[name] * (2.0 * smooth_field(shape, rng, 1.5) - 1.0)
        out_t1 = np.where(sel, v1 * tex, out_t1)
        out_t2 = np.where(sel, v2 * tex, out_t2)
        layer = np.where(sel, k + 2, layer).astype(np.int8)
        inner = outer
    return {"T1w": out_t1.astype(np.float32), "T2w": out_t2.astype(np.float32), "brain": brain, "layer": layer}


def head_volume(contrast: str, seed: int = 0) -> np.ndarray:
    """One contrast of :func:`build_head` (float32, max 1)."""
    if contrast not in CONTRASTS:
        raise ConfigError(f"contrast must be one of {', '.join(CONTRASTS)}; got {contrast!r}")
    v = build_head(seed)[contrast]
    return v / v.max()
