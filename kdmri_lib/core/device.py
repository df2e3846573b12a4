"""Devices, mixed precision, seeding and the small helpers that distributed (DDP) code uses.

CUDA-aware, never CUDA-required: every function works on a CPU-only machine.

Conventions
-----------
* ``get_device("auto")`` picks ``cuda`` > ``mps`` > ``cpu``.
* ``amp_dtype(device)`` is the autocast dtype a device trains well in: ``bfloat16`` on CUDA
  GPUs that support it (Ampere and newer), ``float16`` on older CUDA GPUs, ``None`` (full
  float32) on MPS and CPU, where autocast brings no speed-up for our models.
* Distributed helpers read the environment that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``) and degrade to single-process no-ops otherwise.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from kdmri_lib.core.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def get_device(name: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``name`` ("auto", "cpu", "cuda", "cuda:1", "mps").

    Raises:
        ConfigError: (a ``ValueError``) unknown name, or a device that is not available on this machine.
    """
    if isinstance(name, torch.device):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"device must be one of {DEVICE_CHOICES} (or 'cuda:N'), got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = key.split(":")[0]
    if base not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be one of {DEVICE_CHOICES} (or 'cuda:N'), got {name!r}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use device='auto' or 'cpu'")
    if base == "mps" and not _mps_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available here; use device='auto' or 'cpu'")
    try:
        dev = torch.device(key)
    except RuntimeError:
        raise ConfigError(f"device must be one of {DEVICE_CHOICES} (or 'cuda:N'), got {name!r}") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``device``, or ``None`` when training should stay in float32."""
    device = get_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """An autocast context for ``device`` (a no-op where :func:`amp_dtype` is ``None``)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, enabled: bool = True) -> bool:
    """float16 autocast needs loss scaling; bfloat16 and float32 do not."""
    return enabled and amp_dtype(device) == torch.float16


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices).

    Args:
        seed: any non-negative integer.
        deterministic: also ask torch for deterministic algorithms (slower on GPU; on CPU our
            models are deterministic anyway).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(int(seed))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------------------------
# Distributed helpers (torchrun / DistributedDataParallel)
# --------------------------------------------------------------------------------------------

def dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the environment that torchrun sets; (0, 0, 1) otherwise."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
    )


def launched_distributed() -> bool:
    """True when this process was started by torchrun with more than one process."""
    return dist_env()[2] > 1


def init_distributed(device: torch.device) -> bool:
    """Initialise the default process group when launched by torchrun (NCCL on CUDA, gloo on CPU).

    Returns True when a process group is active after the call.
    """
    if not launched_distributed():
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (returns the input unchanged in a single process)."""
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj) -> list:
    """Gather one picklable object from every rank (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def describe(device: torch.device) -> str:
    """A one-line human description of ``device``."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)}, amp={amp_dtype(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
