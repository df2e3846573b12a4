r"""Out-of-memory errors turned into advice, and memory released for the next try.

A CUDA out-of-memory error in a notebook is a user-facing event, not a bug: the batch, the
patch or the model was too large for the GPU. Left alone it leaves a long traceback from deep
inside torch, and the traceback's frames keep the activations alive, so the GPU stays full and
the next cell fails too. :class:`catch_oom` fixes both::

    with catch_oom("training", device=device, batch_size=8, preset="paper"):
        ...  # forward / backward passes

On ``torch.cuda.OutOfMemoryError`` (or a CPU / MPS allocator failure: ``RuntimeError`` with
"out of memory" / "can't allocate memory", or ``MemoryError``) it clears the local variables of
the frames the error went through (they hold the activations), empties the allocator caches
(:func:`free_memory`) and raises :class:`ResourceError` — one message that names where it
happened, the device, the settings in use and what to lower (the settings are named as the
notebooks and CLIs name them). Every other exception passes through unchanged.

:func:`is_oom` tells an out-of-memory error from the rest; :func:`oom_error` builds the
:class:`ResourceError` for code that has its own ``except`` clause.
"""

from __future__ import annotations

import gc
import traceback
from types import TracebackType
from typing import Any, Mapping, Optional

from kdmri_lib.core.errors import ConfigError, first_line

#: substrings of allocator messages that mean "out of memory" (CUDA, MPS, CPU, cuBLAS / cuDNN)
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "CUBLAS_STATUS_ALLOC_FAILED",
               "CUDNN_STATUS_ALLOC_FAILED", "failed to allocate")

#: settings in the order they are mentioned, with how to lower them
_LOWER = {
    "batch_size": lambda v: f"batch_size={max(1, int(v) // 2)}" if int(v) > 1 else None,
    "val_batch_size": lambda v: f"val_batch_size={max(1, int(v) // 2)}" if int(v) > 1 else None,
    "preset": lambda v: {"paper": "preset='small'", "small": "preset='tiny'"}.get(str(v)),
    "teacher_preset": lambda v: {"paper": "teacher_preset='small'", "small": "teacher_preset='tiny'"}.get(str(v)),
    "val_slices": lambda v: None,
    "amp": lambda v: "amp=True (half-precision activations on CUDA)" if v is False else None,
}


class ResourceError(ConfigError):
    """The run needs more memory than the device has; the message says which settings to lower."""


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of any device (CUDA, MPS, CPU allocator, ``MemoryError``)."""
    import torch

    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(m.lower() in text.lower() for m in OOM_MARKERS)
    return False


def free_memory() -> None:
    """Collect garbage and return cached allocator blocks to the device (CUDA, MPS)."""
    import torch

    gc.collect()
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - best effort; never mask the user's error
        pass
    try:
        mps = getattr(torch, "mps", None)
        backend = getattr(torch.backends, "mps", None)
        if mps is not None and backend is not None and backend.is_available():
            mps.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def _device_text(device: Any) -> str:
    if device is None:
        return ""
    try:
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available():
            idx = dev.index if dev.index is not None else torch.cuda.current_device()
            total = torch.cuda.get_device_properties(idx).total_memory / 2 ** 30
            return f" on cuda:{idx} ({torch.cuda.get_device_name(idx)}, {total:.0f} GiB)"
        return f" on {dev}"
    except Exception:  # noqa: BLE001
        return f" on {device}"


def advice(settings: Mapping[str, Any]) -> list[str]:
    """Concrete smaller settings for the ones given (e.g. ``batch_size=8`` -> ``"batch_size=4"``)."""
    out = []
    for k, v in settings.items():
        f = _LOWER.get(k)
        if f is None or v is None:
            continue
        try:
            s = f(v)
        except (TypeError, ValueError):
            s = None
        if s:
            out.append(s)
    return out


def oom_error(exc: BaseException, where: str, device: Any = None, note: Optional[str] = None,
              **settings: Any) -> ResourceError:
    """The :class:`ResourceError` for an out-of-memory ``exc`` raised during ``where``.

    Args:
        exc: the out-of-memory error.
        where: what was running, e.g. ``"training"``, ``"evaluation"``.
        device: the device it ran on (named in the message, with its memory on CUDA).
        note: an extra sentence (e.g. which option sets the batch size in the caller).
        **settings: the settings in use (``batch_size``, ``preset``, ``val_batch_size``,
            ``amp``, ...), named with their values; the ones that can be lowered get a suggestion.
    """
    current = ", ".join(f"{k}={v!r}" for k, v in settings.items() if v is not None)
    tips = advice(settings)
    msg = (f"{where} ran out of memory{_device_text(device)} ({type(exc).__name__}: {first_line(exc)}). "
           + (f"Current settings: {current}. " if current else "")
           + (f"{note.rstrip('.')}. " if note else "")
           + (f"Try {', or '.join(tips)}" if tips else "Try a smaller batch, patch or model preset")
           + "; on a GPU shared with other work, close other notebooks or restart their kernels. "
             "The memory of this attempt was released: you can run again with smaller settings.")
    return ResourceError(msg)


class catch_oom:
    """Context manager: an out-of-memory error inside becomes a :class:`ResourceError` with advice.

    Args:
        where: what runs inside (``"training"``, ``"evaluation"``, ...).
        device: the device (for the message).
        note: an extra sentence for the message.
        **settings: settings named in the message (see :func:`oom_error`).

    The frames the error travelled through are cleared and :func:`free_memory` is called before
    the :class:`ResourceError` is raised (``from None``), so the activations of the failed step do
    not stay alive in the notebook kernel. Other exceptions are not touched.
    """

    def __init__(self, where: str, device: Any = None, note: Optional[str] = None, **settings: Any):
        self.where, self.device, self.note, self.settings = where, device, note, settings

    def __enter__(self) -> "catch_oom":
        return self

    def __exit__(self, etype, exc: Optional[BaseException], tb: Optional[TracebackType]) -> bool:
        if exc is None or isinstance(exc, ResourceError) or not is_oom(exc):
            return False
        err = oom_error(exc, self.where, self.device, self.note, **self.settings)
        if tb is not None:
            traceback.clear_frames(tb)   # the finished frames below this one hold the activations
        exc.__traceback__ = None
        del exc, tb
        free_memory()
        raise err from None
