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


# --------------------------------------------------------------------------------------------
# Running the notebooks headless (make demo)
# --------------------------------------------------------------------------------------------

NOTEBOOKS = ("01_kspace_basics", "02_vit_teacher", "03_cnn_student", "04_distill", "05_evaluation")


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the installed package, editable install)."""
    here = Path(__file__).resolve().parent.parent / "notebooks"
    if not here.is_dir():
        raise ConfigError(f"{here}: notebooks folder not found; run from a clone of the repository")
    return here


def execute(src: str | os.PathLike, dst: str | os.PathLike, parameters: Optional[Mapping[str, Any]] = None,
            cwd: Optional[str | os.PathLike] = None, timeout: Optional[int] = None) -> None:
    """Execute one notebook with papermill (no progress bar; the kernel's own log quiet).

    The kernel runs with ``IPKernelApp.log_level=ERROR``: ipykernel otherwise prints an
    informational warning about unencrypted local TCP transport on every start.
    """
    import papermill as pm

    pm.execute_notebook(str(src), str(dst), parameters=dict(parameters or {}), cwd=str(cwd or Path(src).parent),
                        progress_bar=False, kernel_name="python3", log_output=False, execution_timeout=timeout,
                        extra_arguments=["--IPKernelApp.log_level=ERROR"])


def run_notebooks(out: str | os.PathLike = "runs/demo", names=NOTEBOOKS, parameters: Optional[Mapping[str, Any]] = None,
                  data_dir: Optional[str | os.PathLike] = None, log=print) -> list[dict]:
    """Execute notebooks headless with papermill, one after the other, into ``out``.

    Each notebook runs in ``notebooks/`` (so its relative defaults work) with ``run_dir = out``;
    the executed copy is written to ``out/<name>.ipynb``. One progress line per notebook.

    Returns:
        one dict per notebook: ``name``, ``seconds``, ``output``, ``ok``, ``error``.
    """
    import time

    import papermill as pm

    nb_dir = notebooks_dir()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    params["run_dir"] = os.path.relpath(out, nb_dir)
    if data_dir is not None:
        params["data_dir"] = os.path.relpath(Path(data_dir).resolve(), nb_dir)
    results = []
    for i, name in enumerate(names, 1):
        src = nb_dir / f"{name}.ipynb"
        if not src.exists():
            raise ConfigError(f"{src}: notebook not found; expected one of {', '.join(NOTEBOOKS)}")
        dst = out / f"{name}.ipynb"
        log(f"[{i}/{len(names)}] {name} ...", end="", flush=True) if log is print else log(f"[{i}/{len(names)}] {name} ...")
        t0 = time.perf_counter()
        err = None
        try:
            execute(src, dst, params, cwd=nb_dir)
        except pm.PapermillExecutionError as e:
            err = f"{e.ename}: {e.evalue} (cell {e.exec_count}; see {dst})"
        dt = time.perf_counter() - t0
        results.append({"name": name, "seconds": round(dt, 1), "output": str(dst), "ok": err is None, "error": err})
        log(f" {'done' if err is None else 'FAILED'} in {dt:.0f} s" + (f": {err}" if err else ""))
        if err:
            break
    return results


def main(argv=None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m kdmri_lib.notebook",
                                description="Run the kdmri notebooks headless with papermill (make demo).")
    p.add_argument("--out", default="runs/demo", help="run folder (executed notebooks, checkpoints, results)")
    p.add_argument("--data", default=None, help="data folder (default: each notebook's data_dir, ../data/demo)")
    p.add_argument("--only", nargs="*", default=None, help=f"notebooks to run (default: all of {', '.join(NOTEBOOKS)})")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="notebook parameter (value parsed as JSON when possible), e.g. -p epochs 3")
    args = p.parse_args(argv)
    params = {}
    for k, v in args.param:
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    names = tuple(args.only) if args.only else NOTEBOOKS
    import time

    t0 = time.perf_counter()
    res = run_notebooks(args.out, names, params, data_dir=args.data)
    total = time.perf_counter() - t0
    out = Path(args.out)
    summary = out / "notebook_times.json"
    summary.write_text(json.dumps({"notebooks": res, "total_seconds": round(total, 1)}, indent=1))
    if not all(r["ok"] for r in res):
        return 1
    print(f"all {len(res)} notebooks ran in {total:.0f} s; executed notebooks in {out}/")
    for f in ("results.md", "results.json"):
        if (out / f).exists():
            print(f"  {out / f}")
    figs = sorted(out.rglob("*.png"))
    if figs:
        print(f"  {len(figs)} figures under {out}/ (e.g. {figs[0]})")
    if (out / "results.md").exists():
        print()
        print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
