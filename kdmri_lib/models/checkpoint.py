r"""Checkpoints: plain-data files written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a ``torch.save``'d dict of plain data only — tensors, dicts, lists, numbers,
strings, None — so that it loads with ``torch.load(path, map_location="cpu", weights_only=True)``
(no arbitrary code runs when a file is opened). Layout (``version`` 1)::

    format        "kdmri-checkpoint"
    version       1
    kind          "teacher" | "student" | "unet"            the model that was trained
    model_config  dict: build_model(**model_config) rebuilds the model
    model         state_dict of the model
    epoch         epochs completed (training resumes at this 0-based epoch index)
    step          steps done inside epoch ``epoch`` (0 at an epoch boundary; > 0 after an interrupt)
    global_step   optimiser steps since the start
    interrupted   True for a checkpoint written by an interrupt (SIGINT / SIGTERM)
    optimizer, scheduler, scaler          state dicts (scaler: fp16 training only, else None)
    rng           {"python": list, "numpy": list, "torch": uint8 tensor, ["cuda": list]}
    train_config  TrainConfig.to_dict() of the run
    history       list of per-epoch dicts so far
    best          {"epoch": int, "val_PSNR": float} of the best epoch so far, or None
    epoch_sums    partial sums of the current epoch's logged terms (interrupt checkpoints)
    distill       distill mode only: {"teacher": {kind, model_config, model, optimizer, scheduler,
                  scaler}, "adapters": state_dict, "adapters_config": dict, "state": DistillState}
    versions      {"kdmri": ..., "torch": ...}

:func:`save_checkpoint` writes through :func:`kdmri_lib.core.atomic.atomic_write` (temporary file +
rename): an interruption during the write leaves the previous file intact.
:func:`load_checkpoint` turns a missing, truncated or foreign file into a
:class:`~kdmri_lib.core.errors.CheckpointError` that names the file and says what to do.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from kdmri_lib.core.atomic import atomic_write
from kdmri_lib.core.errors import CheckpointError

FORMAT = "kdmri-checkpoint"
VERSION = 1
#: checkpoint fields compared by ``expect`` (in this order in messages)
IDENTITY_KEYS = ("kind", "preset", "task", "factor")


# --------------------------------------------------------------------------------------------
# RNG state as plain data
# --------------------------------------------------------------------------------------------

def plain_rng_state() -> dict:
    """Every random generator's state as plain data (lists and uint8 tensors)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [int(py[0]), [int(v) for v in py[1]], py[2]],
        "numpy": [str(np_state[0]), np_state[1].astype(np.int64).tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a :func:`plain_rng_state` snapshot."""
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    ns = state["numpy"]
    np.random.set_state((ns[0], np.asarray(ns[1], dtype=np.uint32), int(ns[2]), int(ns[3]), float(ns[4])))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = [torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------

def _versions() -> dict:
    from kdmri_lib import __version__

    return {"kdmri": str(__version__), "torch": str(torch.__version__)}


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as plain data for ``weights_only`` loading: dicts (string / int keys), lists, tuples,
    tensors, ``str`` / ``int`` / ``float`` / ``bool`` / ``None``. NumPy scalars and arrays become Python
    numbers and lists, ``str`` subclasses (``torch.__version__``) and paths become ``str``.

    Raises:
        TypeError: an object of another type (named with its position in ``obj``).
    """
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        return {(k if type(k) in (str, int) else str(k)): plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return out if isinstance(obj, list) else tuple(out)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    raise TypeError(f"{where}: {type(obj).__name__} is not plain data (a checkpoint must load with weights_only=True)")


def save_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``ckpt`` (plain data, :func:`plain`) to ``path`` atomically (temporary file + rename).

    ``format``, ``version`` and ``versions`` are filled in. An exception during the write
    (including a full disk) leaves a previous file at ``path`` untouched.
    """
    obj = plain({"format": FORMAT, "version": VERSION, "versions": _versions(), **dict(ckpt)})
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``torch.load(path, map_location="cpu", weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, truncated / corrupt, or not a kdmri checkpoint; the
            message names the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found (train a model first, or check the path)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass a checkpoint file such as {path / 'best.pt'}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler names a refused class as "GLOBAL module.name"; anything
        # else it refuses (an unknown opcode, ...) is a damaged file, not a hostile one
        glob = re.search(r"GLOBAL ([\w.]+)", str(e))
        if glob:
            raise CheckpointError(
                f"{path}: this file holds objects other than plain data (GLOBAL {glob.group(1)}, which unpickling "
                f"would import or call); kdmri loads checkpoints with torch.load(weights_only=True) only, so that "
                f"opening a file cannot run code. Use a checkpoint written by kdmri_lib.engine.train.") from None
        raise _unreadable(path, e) from None
    except MemoryError:
        raise
    except Exception as e:  # EOFError, RuntimeError, BadZipFile, IndexError, ... from a damaged file
        raise _unreadable(path, e) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kdmri checkpoint (no 'format': {FORMAT!r} entry); "
                              f"pass a file written by kdmri_lib.engine.train (last.pt, best.pt, teacher_last.pt)")
    version = obj.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: checkpoint 'version' is {version!r}, expected an integer; the file is "
                              f"damaged or was not written by kdmri")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this kdmri "
                              f"(reads version {VERSION}); update kdmri")
    for key in ("kind", "model_config", "model"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry; it is incomplete")
    if not isinstance(obj["model_config"], dict):
        raise CheckpointError(f"{path}: checkpoint 'model_config' is a {type(obj['model_config']).__name__}, expected a "
                              f"dict such as {{'kind': 'student', 'preset': 'tiny', 'task': 'sr', 'factor': 4}}")
    return obj


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointError(
        f"{path}: cannot read this checkpoint ({size_note(path)}; {type(e).__name__}: {msg[:200]}). The file is truncated "
        f"or corrupt (e.g. an incomplete copy or download). Delete it and use another checkpoint of the run (best.pt / "
        f"last.pt) or train again; kdmri replaces checkpoints atomically, so an interrupted write never damages the "
        f"previous one.")


def size_note(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes"
    except OSError:
        return "unreadable"


def describe_config(cfg: Mapping[str, Any]) -> str:
    """``"student tiny sr x4"`` for a model config / expectation dict."""
    parts = [str(cfg[k]) for k in ("kind", "preset", "task") if cfg.get(k) is not None]
    if cfg.get("factor") is not None:
        parts.append(f"x{cfg['factor']}")
    return " ".join(parts) or "any model"


def check_expected(ckpt: Mapping[str, Any], expect: Optional[Mapping[str, Any]], path: str | os.PathLike = "") -> None:
    """Raise :class:`CheckpointError` when the checkpoint's model differs from ``expect``
    (a dict with any of ``kind``, ``preset``, ``task``, ``factor``; None values are not checked)."""
    if not expect:
        return
    have = dict(ckpt["model_config"])
    have.setdefault("kind", ckpt.get("kind"))
    bad = [k for k in IDENTITY_KEYS if expect.get(k) is not None and have.get(k) != expect[k]]
    if bad:
        want = {k: expect.get(k) for k in IDENTITY_KEYS}
        raise CheckpointError(f"{path}: this checkpoint holds a {describe_config(have)} model, but a "
                              f"{describe_config(want)} model was requested (differs in {', '.join(bad)})")


def build_from_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike = "", device: str | torch.device = "cpu"):
    """The model of a loaded checkpoint, weights loaded, in eval mode on ``device``."""
    from kdmri_lib.models import build_model

    try:
        model = build_model(**dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: the weights do not fit the model described in the checkpoint "
                              f"({describe_config(ckpt['model_config'])}): {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               expect: Optional[Mapping[str, Any]] = None):
    """Rebuild the model of a checkpoint.

    Args:
        path: a checkpoint (``last.pt``, ``best.pt``, ``teacher_last.pt``), or ``pretrained:NAME`` for a
            model of the shipped zoo (:mod:`kdmri_lib.pretrained`; its sha256 is verified first).
        device: where to put the model.
        expect: optional dict of ``kind`` / ``preset`` / ``task`` / ``factor`` the model must have.

    Returns:
        ``(model, checkpoint)``: the model in eval mode on ``device`` and the checkpoint dict.

    Raises:
        CheckpointError: unreadable file, or a model other than ``expect`` (both named).
    """
    from kdmri_lib.core.device import get_device
    from kdmri_lib.pretrained.index import resolve

    path = resolve(path)   # pretrained:NAME -> the verified zoo file; a path stays a path
    ckpt = load_checkpoint(path)
    check_expected(ckpt, expect, path)
    dev = get_device(device) if isinstance(device, str) else device
    return build_from_checkpoint(ckpt, path, dev), ckpt


def model_checkpoint(model, **extra) -> dict:
    """A minimal checkpoint of a model (kind, config, weights on CPU) plus ``extra`` fields."""
    model = getattr(model, "module", model)
    return {"kind": model.kind, "model_config": dict(model.config),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
