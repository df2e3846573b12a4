"""Reading, writing and checking fastMRI-format single-coil HDF5 files.

A fastMRI single-coil file holds one *volume* (a stack of 2-D slices):

=====================  ==========================  ==========================================
key                    shape / type                meaning
=====================  ==========================  ==========================================
``kspace``             (slices, H, W) complex64    fully-sampled k-space, centred (DC at H//2, W//2)
``reconstruction_esc`` (slices, h, w) float32      target magnitude image (fastMRI: 320 x 320)
``ismrmrd_header``     bytes (XML)                 encoded/recon matrix sizes, encoding limits
attrs ``max``          float                       maximum of ``reconstruction_esc`` (volume)
attrs ``norm``         float                       L2 norm of ``reconstruction_esc`` (volume)
attrs ``acquisition``  str                         e.g. ``CORPD_FBK`` (knee) or ``AXT1`` (brain)
attrs ``patient_id``   str                         anonymised id
=====================  ==========================  ==========================================

``fastmri.data.SliceDataset(root, challenge="singlecoil")`` reads such files; the header is what
its ``_retrieve_metadata`` parses. :func:`write_volume` writes them atomically (temporary file
then rename), :func:`check_file` validates one with clear errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import h5py
import numpy as np

from kdmri_lib.core.atomic import atomic_write
from kdmri_lib.core.errors import DataError

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"


def ismrmrd_header(
    encoded_size: Sequence[int],
    recon_size: Sequence[int],
    fov_mm: Sequence[float] = (256.0, 256.0, 1.0),
    protocol: str = "kdmri",
) -> bytes:
    """A minimal ISMRMRD XML header that ``fastmri.data.SliceDataset`` can parse.

    Args:
        encoded_size: ``(x, y, z)`` encoded matrix; x = readout (k-space rows ``H``),
            y = phase encoding (k-space columns ``W``), z = 1 for 2-D.
        recon_size: ``(x, y, z)`` reconstructed matrix.
        fov_mm: field of view in mm for both spaces.
        protocol: protocol name written into ``measurementInformation``.
    """
    ex, ey, ez = (int(v) for v in encoded_size)
    rx, ry, rz = (int(v) for v in recon_size)
    fx, fy, fz = (float(v) for v in fov_mm)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="{ISMRMRD_NS}" xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <measurementInformation><protocolName>{protocol}</protocolName></measurementInformation>
  <acquisitionSystemInformation><receiverChannels>1</receiverChannels></acquisitionSystemInformation>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{ex}</x><y>{ey}</y><z>{ez}</z></matrixSize>
      <fieldOfView_mm><x>{fx}</x><y>{fy}</y><z>{fz}</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{rx}</x><y>{ry}</y><z>{rz}</z></matrixSize>
      <fieldOfView_mm><x>{fx}</x><y>{fy}</y><z>{fz}</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{ey - 1}</maximum><center>{ey // 2}</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
      <slice><minimum>0</minimum><maximum>0</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
""".encode("utf-8")


def write_volume(
    path: str | os.PathLike,
    kspace: np.ndarray,
    target: Optional[np.ndarray],
    attrs: Mapping[str, Any],
    header: Optional[bytes] = None,
    fov_mm: Sequence[float] = (256.0, 256.0, 1.0),
    tmp_dir: Optional[str | os.PathLike] = None,
) -> Path:
    """Write one fastMRI-format single-coil volume atomically.

    Args:
        path: destination ``.h5`` file.
        kspace: ``(slices, H, W)`` complex k-space (stored as complex64).
        target: ``(slices, h, w)`` magnitude target (stored as float32 ``reconstruction_esc``),
            or None (test data). ``max`` and ``norm`` are computed from it.
        attrs: other attributes (``acquisition``, ``patient_id``, ...).
        header: ISMRMRD XML; built from the shapes when None.
        tmp_dir: folder of the temporary file (same file system); default ``<path>/../../.partial``,
            i.e. next to the split folder, never inside it.
    """
    path = Path(path)
    kspace = np.asarray(kspace)
    if kspace.ndim != 3 or not np.iscomplexobj(kspace):
        raise DataError(f"{path}: kspace must be a complex (slices, H, W) array; got {kspace.dtype} {kspace.shape}")
    if header is None:
        rec = target.shape[1:] if target is not None else kspace.shape[1:]
        header = ismrmrd_header((kspace.shape[1], kspace.shape[2], 1), (rec[0], rec[1], 1), fov_mm)
    # the temporary file goes next to the data folder, not inside it: loaders such as
    # fastmri.data.SliceDataset open every file of a split folder
    with atomic_write(path, tmp_dir=tmp_dir if tmp_dir is not None else path.parent.parent / ".partial") as tmp:
        with h5py.File(tmp, "w") as hf:
            hf.create_dataset("kspace", data=kspace.astype(np.complex64))
            if target is not None:
                target = np.asarray(target, dtype=np.float32)
                hf.create_dataset("reconstruction_esc", data=target)
                hf.attrs["max"] = float(target.max())
                hf.attrs["norm"] = float(np.linalg.norm(target))
            hf.create_dataset("ismrmrd_header", data=np.bytes_(header))
            for k, v in attrs.items():
                hf.attrs[k] = v
    return path


def check_file(path: str | os.PathLike, require_target: bool = False, full: bool = False) -> dict:
    """Validate one fastMRI-format single-coil file and return a short description.

    Checks that the file exists and is readable HDF5, has ``kspace`` of rank 3 and a complex
    dtype, a parsable ``ismrmrd_header``, and (when present or required) a
    ``reconstruction_esc`` with as many slices. With ``full=True`` also reads every sample and
    rejects NaN/Inf values.

    Returns:
        dict with ``slices``, ``kspace_shape``, ``target_shape`` (or None), ``acquisition``.

    Raises:
        DataError: naming the file and what was expected.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes); expected a fastMRI HDF5 volume")
    try:
        hf = h5py.File(path, "r")
    except OSError as e:
        raise DataError(
            f"{path}: not a readable HDF5 file ({_short(e)}); it may be truncated or corrupt, "
            f"or not HDF5 at all — expected a fastMRI .h5 volume"
        ) from None
    try:
        with hf:
            if "kspace" not in hf:
                raise DataError(f"{path}: no 'kspace' dataset (found {sorted(hf.keys())}); expected fastMRI keys kspace, reconstruction_esc, ismrmrd_header")
            ks = hf["kspace"]
            if not isinstance(ks, h5py.Dataset):
                raise DataError(f"{path}: 'kspace' is a group, expected a (slices, H, W) complex dataset")
            if ks.ndim != 3:
                raise DataError(f"{path}: 'kspace' has shape {ks.shape}; expected single-coil (slices, H, W) — multi-coil files are not supported")
            if ks.dtype.kind != "c":
                raise DataError(f"{path}: 'kspace' has dtype {ks.dtype}; expected complex64 k-space")
            if ks.shape[0] == 0:
                raise DataError(f"{path}: 'kspace' holds no slices")
            if "ismrmrd_header" not in hf:
                raise DataError(f"{path}: no 'ismrmrd_header' dataset; fastMRI files carry the ISMRMRD XML header")
            _check_header(path, hf["ismrmrd_header"][()])
            target_shape = None
            if "reconstruction_esc" in hf:
                tg = hf["reconstruction_esc"]
                if tg.ndim != 3 or tg.shape[0] != ks.shape[0]:
                    raise DataError(f"{path}: 'reconstruction_esc' has shape {tg.shape}; expected ({ks.shape[0]}, h, w) like kspace {ks.shape}")
                if tg.dtype.kind != "f":
                    raise DataError(f"{path}: 'reconstruction_esc' has dtype {tg.dtype}; expected float32")
                target_shape = tuple(tg.shape)
            elif require_target:
                raise DataError(f"{path}: no 'reconstruction_esc' target; training and evaluation need fully-sampled targets")
            if full:
                for i in range(ks.shape[0]):
                    if not np.isfinite(ks[i]).all():
                        raise DataError(f"{path}: kspace slice {i} contains NaN or Inf values")
            attrs = dict(hf.attrs)   # reads every attribute: a corrupt one fails here, not in a DataLoader worker
            acq = attrs.get("acquisition", "")
            return {
                "file": str(path),
                "slices": int(ks.shape[0]),
                "kspace_shape": tuple(ks.shape),
                "target_shape": target_shape,
                "acquisition": acq.decode() if isinstance(acq, bytes) else str(acq),
            }
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        raise DataError(f"{path}: unreadable HDF5 content ({_short(e)}); the file may be truncated or corrupt") from None


def _check_header(path: Path, raw) -> None:
    import xml.etree.ElementTree as etree

    from fastmri.data.mri_data import et_query

    try:
        root = etree.fromstring(raw)
        # every field fastmri.data.SliceDataset._retrieve_metadata reads
        for q in [["encoding", space, "matrixSize", a] for space in ("encodedSpace", "reconSpace") for a in "xyz"] + \
                 [["encoding", "encodingLimits", "kspace_encoding_step_1", f] for f in ("center", "maximum")]:
            int(et_query(root, q))
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user-facing problem
        raise DataError(f"{path}: 'ismrmrd_header' is not a valid ISMRMRD XML header ({_short(e)})") from None


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]
