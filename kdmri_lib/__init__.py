"""kdmri_lib — fast MRI reconstruction by heterogeneous (ViT -> CNN) knowledge distillation.

The library behind the kdmri notebooks. Import it once and reach every module from it::

    import kdmri_lib as kd
    op = kd.physics.build_operator("sr", 4, shape=(192, 192))

Modules are imported on first use, so ``import kdmri_lib`` stays fast; ``kd.<module>`` reaches every
module by its short name (``kd.physics`` is :mod:`kdmri_lib.mri.physics`, :data:`MODULES`).

The packages are layers, lowest first (:data:`LAYERS`): ``core`` (errors, atomic writes, devices,
resources) -> ``mri`` (physics, masks, metrics, file format) -> ``datasets`` (files, slices, protocol,
demo and real data) -> ``models`` (+ checkpoints, the zoo's index) -> ``distill`` (losses, the
memoised teacher, the objective) -> ``engine`` (run configuration, trainer, fit, reconstruction) ->
``experiments`` (ablation, benchmark, pilots, results; the zoo's tools) -> ``teaching`` (figures,
widgets, lessons, notebook setup and runner) -> ``cli``. A module imports only from its own layer or
a lower one, and no import cycle exists (``tests/test_layers.py`` checks every import, function-level
ones included). ``python -m kdmri_lib.train`` (``reconstruct``, ``ablation``, ``benchmark``,
``notebook_runner``, ``pilots``) keeps working through thin shims.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: the library's layers, lowest first: ``(layer, packages / modules)``; a module imports only from its
#: own layer or a lower one (a module belongs to the longest listed prefix of its name)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("core",)),
    ("mri", ("mri",)),
    ("datasets", ("datasets",)),
    ("models", ("models", "pretrained.index")),
    ("distill", ("distill",)),
    ("engine", ("engine",)),
    ("experiments", ("experiments", "pretrained")),
    ("teaching", ("teaching",)),
    ("cli", ("data_cli", "cli", "train", "reconstruct", "ablation", "benchmark", "notebook_runner", "pilots")),
)
#: ``kd.<name>``: every module by its short name (the notebooks' one import line reaches them all)
MODULES: dict[str, str] = {
    **{m: f"core.{m}" for m in ("errors", "atomic", "device", "resources")},
    **{m: f"mri.{m}" for m in ("physics", "masks", "metrics", "fastmri_format", "kspace_sim")},
    **{m: f"datasets.{m}" for m in ("protocol", "data_files", "data", "head_model", "demo_natural", "demo_data",
                                     "real_data")},
    "models": "models", "checkpoint": "models.checkpoint", "pretrained": "pretrained",
    "distill": "distill", "losses": "distill.losses", "teacher_cache": "distill.teacher_cache",
    **{m: f"engine.{m}" for m in ("run_config", "schedule", "run_log", "train_state", "trainer", "train",
                                   "reconstruct", "rehearsal")},
    **{m: f"experiments.{m}" for m in ("ablation", "ablation_report", "ablation_workers", "benchmark", "pilots",
                                        "results")},
    **{m: f"teaching.{m}" for m in ("viz", "widgets", "lessons", "check", "released", "notebook",
                                     "notebook_runner", "colab")},
    **{p: p for p in ("core", "mri", "datasets", "engine", "experiments", "teaching", "cli", "data_cli")},
}


def __getattr__(name: str) -> Any:
    if name in MODULES:
        module = importlib.import_module(f".{MODULES[name]}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'kdmri_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(MODULES))


def environment_summary() -> str:
    """One line: versions of the key packages and the device that 'auto' picks."""
    import numpy
    import torch

    from kdmri_lib.core.device import describe, get_device

    try:
        from importlib.metadata import version
        fm = version("fastmri")
    except Exception:  # noqa: BLE001
        fm = "?"
    return (f"kdmri {__version__}, torch {torch.__version__}, fastmri {fm}, numpy {numpy.__version__}, "
            f"device auto -> {describe(get_device('auto'))}")
