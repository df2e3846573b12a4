"""kdmri_lib — fast MRI reconstruction by heterogeneous (ViT -> CNN) knowledge distillation.

The library behind the kdmri notebooks. Import it once and reach every module from it::

    import kdmri_lib as kd
    op = kd.physics.build_operator("sr", 4, shape=(192, 192))

Submodules are imported on first use, so ``import kdmri_lib`` stays fast.

Layering: :data:`LAYERS` lists the modules layer by layer, lowest first (core -> mri -> datasets ->
models -> distill -> engine -> experiments -> teaching -> cli); a module imports only from its own
layer or a lower one, and no import cycle exists (``tests/test_layers.py`` checks every import,
function-level ones included).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: the library's layers, lowest first: ``(layer, modules)``; a module imports only from its own layer
#: or a lower one (a package's modules belong to the package's entry unless listed on their own)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("errors", "atomic", "device", "resources")),
    ("mri", ("masks", "physics", "metrics", "fastmri_format", "kspace_sim")),
    ("datasets", ("protocol", "data_files", "data", "head_model", "demo_natural", "demo_data", "real_data")),
    ("models", ("models", "pretrained.index", "checkpoint", "losses", "released", "teacher_cache")),
    ("distill", ("distill_config", "distill_state", "distill")),
    ("engine", ("run_config", "schedule", "run_log", "train_state", "trainer", "train", "reconstruct")),
    ("experiments", ("ablation_report", "ablation_workers", "ablation", "benchmark", "pilots", "results", "pretrained")),
    ("teaching", ("viz", "widgets", "lessons", "check", "notebook", "notebook_runner")),
    ("cli", ("data_cli", "cli")),
)
_SUBMODULES = tuple(m for _, mods in LAYERS for m in mods if "." not in m)


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
