"""Notebook plumbing: parameter validation, paths, device, demo data, Colab detection.

Every notebook's first code cell holds its papermill ``parameters``; its second calls
:func:`setup` with ``globals()``, which validates the parameters it knows (clear
:class:`~kdmri_lib.errors.ConfigError` naming the parameter), resolves the folders, builds the
demo data when they are missing, seeds every generator, picks the device and prints one line
saying what it did.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError, check_choice, check_float, check_int

#: where the notebooks live relative to the repository, for path defaults
DEFAULT_DATA_DIR = "../data/demo"
DEFAULT_RUN_DIR = "../runs/demo"


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


@dataclass
class NotebookContext:
    """What :func:`setup` resolved; ``params`` holds every validated parameter."""

    name: str
    data_dir: Path
    run_dir: Path
    device: Any
    task: str
    factor: int
    params: dict = field(default_factory=dict)

    @property
    def natural_dir(self) -> Optional[Path]:
        p = self.data_dir / "natural" / "train"
        return p if p.is_dir() else None

    @property
    def set5_dir(self) -> Optional[Path]:
        p = self.data_dir / "natural" / "set5"
        return p if p.is_dir() else None

    def out(self, *parts: str) -> Path:
        """A path inside ``run_dir`` (parent folders created)."""
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def __getattr__(self, key: str):
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(key)


def _validate(params: Mapping[str, Any]) -> dict:
    """Validate the parameters the toolkit knows; unknown ones pass through unchanged."""
    from .device import DEVICE_CHOICES
    from .physics import TASKS

    p = dict(params)
    name = lambda k: f"notebook parameter '{k}'"  # noqa: E731
    if "task" in p:
        check_choice(name("task"), p["task"], TASKS)
    for k in ("scale", "acceleration", "epochs", "teacher_epochs", "batch_size", "patch_size", "steps_per_epoch",
              "val_slices"):
        if k in p and p[k] is not None:
            p[k] = check_int(name(k), p[k], minimum=1 if k != "teacher_epochs" else 0)
    if p.get("task") == "sr" and p.get("scale") is not None and p.get("patch_size") and p["patch_size"] % p["scale"]:
        raise ConfigError(f"notebook parameter 'patch_size' ({p['patch_size']}) must be divisible by 'scale' ({p['scale']})")
    for k in ("lr", "teacher_lr"):
        if k in p and p[k] is not None:
            p[k] = check_float(name(k), p[k], minimum=0.0, strict_min=True)
    if "seed" in p:
        p["seed"] = check_int(name("seed"), p["seed"], minimum=0)
    if "preset" in p:
        from .models import PRESETS

        check_choice(name("preset"), p["preset"], PRESETS)
    if "device" in p:
        d = p["device"]
        if not isinstance(d, str) or d.split(":")[0] not in DEVICE_CHOICES:
            raise ConfigError(f"{name('device')} must be one of {DEVICE_CHOICES} (or 'cuda:N'); got {d!r}")
    for k in ("data_dir", "run_dir"):
        if k in p and not isinstance(p[k], (str, os.PathLike)):
            raise ConfigError(f"{name(k)} must be a path (string); got {p[k]!r}")
    return p


def enable_inline_figures(dpi: int = 80) -> None:
    """Let a bare ``matplotlib.figure.Figure`` (what ``kd.viz`` returns) display as PNG in IPython."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            return
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
        from matplotlib.figure import Figure

        fmt = shell.display_formatter.formatters["image/png"]
        fmt.for_type(Figure, lambda fig: _fig_png(fig, dpi))
    except Exception:  # noqa: BLE001 - figures still render as text; never break a notebook on this
        pass


def _fig_png(fig, dpi: int) -> bytes:
    from .viz import fig_to_png

    return fig_to_png(fig, dpi=dpi)


def setup(namespace: Mapping[str, Any], name: str, build_data: bool = True, quiet: bool = False) -> NotebookContext:
    """Validate a notebook's parameters and prepare folders, data, seed and device.

    Args:
        namespace: the notebook's ``globals()`` (its parameters are read from it).
        name: the notebook's name, e.g. ``"01_kspace_basics"``.
        build_data: build the embedded demo data into ``data_dir`` when it holds no data.
    """
    from .device import describe, get_device, seed_everything

    keys = ("data_dir", "run_dir", "task", "scale", "acceleration", "preset", "epochs", "teacher_epochs",
            "batch_size", "patch_size", "steps_per_epoch", "val_slices", "lr", "teacher_lr", "device", "seed")
    params = _validate({k: namespace[k] for k in keys if k in namespace})
    data_dir = Path(params.get("data_dir", DEFAULT_DATA_DIR)).expanduser()
    run_dir = Path(params.get("run_dir", DEFAULT_RUN_DIR)).expanduser()
    if in_colab() and not data_dir.is_absolute() and not data_dir.exists():
        data_dir = Path("/content/kdmri") / data_dir.name   # Colab: no repository around the notebook
        run_dir = Path("/content/kdmri/runs") / run_dir.name
    built = ""
    has_data = data_dir.is_dir() and any((data_dir / f"singlecoil_{s}").is_dir() for s in ("train", "val"))
    if not has_data:
        if not build_data:
            raise ConfigError(f"notebook parameter 'data_dir': {data_dir} holds no singlecoil_train/ or singlecoil_val/ folder")
        from .demo_data import build_demo_data

        report = build_demo_data(data_dir, progress=not quiet, log=lambda s: None)
        built = f" (demo data built in {report.seconds:.0f} s)"
    run_dir.mkdir(parents=True, exist_ok=True)
    enable_inline_figures()
    dev = get_device(params.get("device", "auto"))
    seed_everything(params.get("seed", 0))
    task = params.get("task", "sr")
    factor = params.get("scale", 4) if task == "sr" else params.get("acceleration", 4)
    params["device"] = str(dev)
    ctx = NotebookContext(name=name, data_dir=data_dir, run_dir=run_dir, device=dev, task=task, factor=factor,
                          params=params)
    if not quiet:
        from . import __version__

        print(f"kdmri {__version__} | {name} | task {task} x{factor} | device {describe(dev)} | "
              f"data {data_dir}{built} | runs {run_dir}")
    return ctx
