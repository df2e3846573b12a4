"""kdmri_lib — fast MRI reconstruction by heterogeneous (ViT -> CNN) knowledge distillation.

The library behind the kdmri notebooks. Import it once and reach every module from it::

    import kdmri_lib as kd
    op = kd.physics.build_operator("sr", 4, shape=(192, 192))

Submodules are imported on first use, so ``import kdmri_lib`` stays fast.

Layering (nothing imports upward): ``errors``, ``atomic`` -> ``device``, ``resources`` -> ``physics`` /
``masks`` -> ``fastmri_format`` / ``kspace_sim`` -> ``demo_data`` (+ ``demo_natural``, ``head_model``) / ``data``
(+ ``protocol``) / ``real_data`` -> ``metrics`` -> ``models`` -> ``losses`` -> ``distill_config`` /
``distill_state`` -> ``distill`` -> ``run_config`` -> ``schedule`` / ``run_log`` / ``train_state`` -> ``trainer`` ->
``train`` / ``reconstruct`` -> ``benchmark`` / ``ablation`` (+ ``ablation_report``) / ``pilots`` -> ``results``
-> ``viz`` / ``widgets`` / ``lessons`` -> ``notebook`` (in the kernel) / ``notebook_runner`` (papermill) -> ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "errors", "atomic", "device", "resources", "physics", "masks", "fastmri_format", "demo_data", "data", "real_data",
    "metrics", "models", "losses", "checkpoint", "distill", "run_config", "schedule", "run_log", "trainer", "train",
    "reconstruct", "benchmark", "ablation", "ablation_report", "pilots", "viz", "distill_config", "distill_state",
    "train_state", "kspace_sim", "demo_natural", "notebook_runner", "teacher_cache",
    "widgets", "lessons", "results", "notebook", "pretrained", "released", "head_model", "protocol", "check",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'kdmri_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES))


def environment_summary() -> str:
    """One line: versions of the key packages and the device that 'auto' picks."""
    import numpy
    import torch

    from .device import describe, get_device

    try:
        from importlib.metadata import version
        fm = version("fastmri")
    except Exception:  # noqa: BLE001
        fm = "?"
    return (f"kdmri {__version__}, torch {torch.__version__}, fastmri {fm}, numpy {numpy.__version__}, "
            f"device auto -> {describe(get_device('auto'))}")
