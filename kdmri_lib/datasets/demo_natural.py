"""The demo's natural images (the paper's Flickr2K / Set5 in spirit): scikit-image's sample images
as grayscale PNGs, centre-cropped to multiples of 16. :func:`kdmri_lib.datasets.demo_data.build_demo_data`
writes them to ``natural/train`` and ``natural/set5``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from kdmri_lib.core.atomic import atomic_write

__all__ = ["NATURAL_TRAIN", "NATURAL_SET5", "to_luma", "centre_crop_multiple", "save_png", "natural_image"]

NATURAL_TRAIN = ("camera", "coins", "moon", "page", "text", "horse", "coffee", "rocket", "immunohistochemistry",
                 "hubble_deep_field", "retina", "brick", "grass", "gravel", "cell", "clock", "logo")
#: five held-out images standing in for Set5 (baby, bird, butterfly, head, woman).
NATURAL_SET5 = ("astronaut", "chelsea", "motorcycle", "colorwheel", "microaneurysms")



def natural_image(name: str) -> np.ndarray:
    """One of scikit-image's sample images by name (``"motorcycle"``: the left stereo view), as stored."""
    from skimage import data as skdata

    if name == "motorcycle":
        img = skdata.stereo_motorcycle()[0]
    else:
        img = getattr(skdata, name)()
    return np.asarray(img)


def to_luma(img: np.ndarray) -> np.ndarray:
    """Grayscale in [0, 1]: the Y channel of YCbCr (ITU-R BT.601 weights) for colour images."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.float32)
    elif np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float32) / np.iinfo(img.dtype).max
    else:
        img = img.astype(np.float32)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12) if img.max() > 1 or img.min() < 0 else img
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(img, 0.0, 1.0)


def centre_crop_multiple(img: np.ndarray, limit: Optional[int] = None, multiple: int = 16) -> np.ndarray:
    """Centre crop of a 2-D image to sides that are multiples of ``multiple``, at most ``limit``."""
    H, W = img.shape
    if limit is None:
        limit = max(H, W)
    h = min(limit, H - H % multiple)
    w = min(limit, W - W % multiple)
    top, left = (H - h) // 2, (W - w) // 2
    return img[top: top + h, left: left + w]


def save_png(path: Path, img: np.ndarray, tmp_dir: Optional[Path] = None) -> None:
    """Write a [0, 1] grayscale image as an 8-bit PNG, atomically (temporary file in ``tmp_dir``,
    same file system, when given: then an interrupted write leaves nothing in the image folder)."""
    from PIL import Image

    with atomic_write(path, tmp_dir=tmp_dir) as tmp:
        Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
