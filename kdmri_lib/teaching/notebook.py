"""Notebook plumbing: parameter validation, paths, device, demo data, Colab detection.

Every notebook's first code cell holds its papermill ``parameters``; its second calls
:func:`setup` with ``globals()``, which validates the parameters it knows (clear
:class:`~kdmri_lib.core.errors.ConfigError` naming the parameter), resolves the folders, builds the
demo data when they are missing, seeds every generator, picks the device and prints one line
saying what it did.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from kdmri_lib.core.errors import ConfigError, check_choice, check_float, check_int

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

    #: notebook parameters that are :class:`~kdmri_lib.engine.run_config.TrainConfig` fields of the same name
    RUN_FIELDS = ("preset", "epochs", "steps_per_epoch", "batch_size", "lr", "val_slices", "device", "seed")

    def run_config(self, mode: str, **overrides):
        """The :class:`~kdmri_lib.engine.run_config.TrainConfig` of a training run in this notebook: the data
        folder, task and factor it resolved, ``out_dir = run_dir/mode``, the notebook's parameters
        that are run fields (:attr:`RUN_FIELDS`), then ``overrides`` (any TrainConfig field), checked by
        :meth:`TrainConfig.validate` (a bad value raises its :class:`ConfigError`; unset ``lr``,
        ``batch_size`` and ``warmup_steps`` become the model kind's recipe)."""
        from kdmri_lib.engine.run_config import TrainConfig

        fields = {k: self.params[k] for k in self.RUN_FIELDS if k in self.params}
        base = dict(mode=mode, data_dir=str(self.data_dir), out_dir=str(self.run_dir / mode), task=self.task,
                    factor=self.factor, **fields)
        return TrainConfig(**{**base, **overrides}).validate(check_paths=False)

    def teacher_checkpoint(self, teacher: str = "pretrained", source=None, **train) -> str:
        """The checkpoint of the teacher a notebook distils from (notebook parameter ``teacher``).

        ``"pretrained"``: the shipped zoo's teacher for this task and factor with the best demo
        validation PSNR (``"pretrained:NAME"``, verified when loaded); ``"train"``:
        ``run_dir/teacher/best.pt`` (``run_dir/teacher_source/last.pt`` with ``source``), trained
        first with the ``train`` fields of :class:`~kdmri_lib.engine.train.TrainConfig` when it is
        missing; anything else: a checkpoint path. ``source``: file patterns of the protocol's
        source domain (:data:`kdmri_lib.datasets.protocol.DEFAULT`): only a teacher pre-trained on exactly
        those files, so that it never saw the target domain, of the preset ``train["preset"]``.
        """
        if teacher == "pretrained":
            from kdmri_lib.pretrained import PREFIX, find

            # with a source domain, the preset asked for (notebook 04 distils from the same teacher as the ablation)
            preset = train.get("preset") if source is not None else None
            return PREFIX + find("teacher", self.task, self.factor, preset=preset, train_files=source)
        if teacher == "train":
            # a source-domain teacher: its final weights (best.pt is selected on validation slices,
            # which include the target domain's scored ones)
            ckpt = self.run_dir / "teacher_source" / "last.pt" if source is not None else self.run_dir / "teacher" / "best.pt"
            if not ckpt.exists():
                from kdmri_lib.engine.train import TrainConfig, fit

                extra = {"train_files": list(source)} if source is not None else {}
                cfg = TrainConfig(mode="teacher", data_dir=str(self.data_dir), out_dir=str(ckpt.parent), task=self.task,
                                  factor=self.factor, **extra, **train)
                print(f"no teacher in {ckpt.parent}: training a {cfg.preset} teacher first ({cfg.epochs} epochs)")
                fit(cfg)
            return str(ckpt)
        p = Path(teacher).expanduser()
        if not p.is_file():
            raise ConfigError(f"notebook parameter 'teacher': {teacher!r} is neither 'pretrained', 'train' nor an "
                              f"existing checkpoint file")
        return str(p)

    def __getattr__(self, key: str):
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(key)


#: integer parameters: (minimum, None allowed). None means "not set" only where the toolkit gives it a meaning
#: (steps_per_epoch: one pass; val_slices: every slice; batch_size: the model kind's recipe).
INT_PARAMS = {
    "scale": (2, False), "acceleration": (1, False), "epochs": (1, False), "teacher_epochs": (0, False),
    "batch_size": (1, True), "steps_per_epoch": (1, True), "val_slices": (1, True),
    "slice_num": (0, False), "ablation_epochs": (1, False), "ablation_steps_per_epoch": (1, True),
    "references": (1, True),
}
#: float parameters: (minimum, strictly greater, maximum, None allowed)
FLOAT_PARAMS = {"lr": (0.0, True, None, True), "teacher_lr": (0.0, True, None, True),
                "center_fraction": (0.0, False, 1.0, True)}
#: True / False switches of the notebooks
BOOL_PARAMS = ("profile_latency", "output_kd", "feature_kd", "attention_kd", "edge", "correction", "dynamic",
               "run_ablation")
#: the parameters setup() reads from a notebook's namespace
KNOWN_PARAMS = ("data_dir", "run_dir", "task", "scale", "acceleration", "preset", "teacher_preset", "ablation_preset",
                "epochs", "teacher_epochs", "batch_size", "steps_per_epoch", "val_slices", "lr",
                "teacher_lr", "device", "seed", "mask_type", "center_fraction", "volume", "slice_num", "confidence",
                "ablation_dir", "ablation_epochs", "ablation_steps_per_epoch", "teacher", "references",
                "recipe", "protocol") + BOOL_PARAMS


def _validate(params: Mapping[str, Any]) -> dict:
    """Validate the parameters the toolkit knows; unknown ones pass through unchanged.

    Every problem raises :class:`ConfigError` naming the parameter (``notebook parameter 'epochs'
    must be >= 1; got 0``). Integers given as whole floats (``4.0``, as YAML may give them) are
    accepted; strings, other floats, booleans and ``None`` (where it has no meaning) are not.
    """
    from kdmri_lib.core.device import DEVICE_CHOICES
    from kdmri_lib.models import PRESETS, SR_SCALES
    from kdmri_lib.mri.masks import MASK_TYPES
    from kdmri_lib.mri.physics import TASKS

    p = dict(params)
    name = lambda k: f"notebook parameter '{k}'"  # noqa: E731
    if "task" in p:
        check_choice(name("task"), p["task"], TASKS)
    for k, (minimum, none_ok) in INT_PARAMS.items():
        if k not in p:
            continue
        if p[k] is None:
            if not none_ok:
                raise ConfigError(f"{name(k)} must be an integer >= {minimum}; got None")
            continue
        p[k] = check_int(name(k), p[k], minimum=minimum)
    if p.get("scale") is not None and p["scale"] not in SR_SCALES:
        raise ConfigError(f"{name('scale')} must be one of {', '.join(map(str, SR_SCALES))}; got {p['scale']}")
    if "patch_size" in p:  # a parameter of earlier versions: every training sample is now a whole slice
        from kdmri_lib.datasets.data import reject_patch_size

        reject_patch_size(p.pop("patch_size"), "notebook parameter patch_size")
    for k, (minimum, strict, maximum, none_ok) in FLOAT_PARAMS.items():
        if k not in p:
            continue
        if p[k] is None:
            if not none_ok:
                raise ConfigError(f"{name(k)} must be a number; got None")
            continue
        p[k] = check_float(name(k), p[k], minimum=minimum, maximum=maximum, strict_min=strict)
    for k in BOOL_PARAMS:
        if k in p and not isinstance(p[k], bool):
            raise ConfigError(f"{name(k)} must be True or False; got {p[k]!r} ({type(p[k]).__name__})")
    if "seed" in p:
        p["seed"] = check_int(name("seed"), p["seed"], minimum=0)
    for k in ("preset", "teacher_preset", "ablation_preset"):
        if k in p:
            check_choice(name(k), p[k], PRESETS)
    if "mask_type" in p:
        check_choice(name("mask_type"), p["mask_type"], MASK_TYPES)
    if "teacher" in p and (not isinstance(p["teacher"], str) or not p["teacher"].strip()):
        raise ConfigError(f"{name('teacher')} must be 'pretrained' (the shipped zoo), 'train' or a checkpoint path; "
                          f"got {p['teacher']!r}")
    if "protocol" in p:
        from kdmri_lib.datasets.protocol import PROTOCOLS

        check_choice(name("protocol"), p["protocol"], tuple(PROTOCOLS))
    if "recipe" in p:
        from kdmri_lib.distill import ABLATION_ROWS

        check_choice(name("recipe"), p["recipe"], tuple(ABLATION_ROWS))
    if "confidence" in p:
        from kdmri_lib.distill import CONFIDENCE_MODES

        check_choice(name("confidence"), p["confidence"], CONFIDENCE_MODES)
    if "volume" in p and p["volume"] is not None and (not isinstance(p["volume"], str) or not p["volume"].strip()
                                                      or "/" in p["volume"] or "\\" in p["volume"]):
        raise ConfigError(f"{name('volume')} must be None or the name of a file in singlecoil_val/ "
                          f"(e.g. 'mni152_axial_val.h5'); got {p['volume']!r}")
    if "device" in p:
        d = p["device"]
        if not isinstance(d, str) or d.split(":")[0].strip().lower() not in DEVICE_CHOICES:
            raise ConfigError(f"{name('device')} must be one of {DEVICE_CHOICES} (or 'cuda:N'); got {d!r}")
    for k in ("data_dir", "run_dir", "ablation_dir"):
        if k in p and (not isinstance(p[k], (str, os.PathLike)) or not str(p[k]).strip()):
            raise ConfigError(f"{name(k)} must be a path (a non-empty string); got {p[k]!r}")
    return p


def _has_data(folder: Path) -> bool:
    """A fastMRI-format data folder: ``singlecoil_train/`` or ``singlecoil_val/``, or ``.h5`` files."""
    if not folder.is_dir():
        return False
    if any((folder / f"singlecoil_{s}").is_dir() for s in ("train", "val")):
        return True
    return any(p.suffix == ".h5" and not p.name.startswith(".") for p in folder.iterdir())


def _is_empty(folder: Path) -> bool:
    return folder.is_dir() and not any(p for p in folder.iterdir() if not p.name.startswith("."))


def resolve_data_dir(data_dir: Path, build_data: bool = True, quiet: bool = True,
                     default: str | os.PathLike = DEFAULT_DATA_DIR) -> tuple[Path, str]:
    """Check ``data_dir`` and build the demo data into it when that is safe; returns ``(data_dir, note)``.

    The rule (demo data are never written into a folder of the user's that holds something else):

    * a file -> :class:`ConfigError`;
    * a folder with an interrupted or incomplete demo build (``manifest.json``) -> the build is
      completed (same configuration);
    * a folder with data (``singlecoil_train/``, ``singlecoil_val/`` or ``.h5`` files) -> used as is;
    * missing, empty, holding the demo manifest, or the default ``../data/demo`` -> the demo data
      are built there (``build_data=True``; else :class:`ConfigError`);
    * any other folder -> :class:`ConfigError` saying what was expected.
    """
    from kdmri_lib.datasets import demo_data as dd

    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"notebook parameter 'data_dir': {data_dir} is a file; expected a folder with "
                          f"singlecoil_train/ and singlecoil_val/ (fastMRI format), or a new folder for the demo data")
    status = dd.demo_status(data_dir) if data_dir.is_dir() else "absent"
    if _has_data(data_dir) and status != "incomplete":
        return data_dir, ""
    is_default = data_dir.resolve() == Path(default).expanduser().resolve()
    if not (not data_dir.exists() or _is_empty(data_dir) or status != "absent" or is_default):
        raise ConfigError(
            f"notebook parameter 'data_dir': {data_dir} holds no fastMRI data (no singlecoil_train/ or singlecoil_val/ "
            f"folder, no .h5 files) and is not empty, so the demo data are not built there. Point data_dir at a data "
            f"folder, or at a new or empty folder for the demo data (default {default})")
    if not build_data:
        raise ConfigError(f"notebook parameter 'data_dir': {data_dir} holds no singlecoil_train/ or singlecoil_val/ folder")
    manifest = dd.read_manifest(Path(data_dir) / "manifest.json") if status == "incomplete" else None
    cfg = None
    if manifest and isinstance(manifest.get("config"), dict):
        try:
            cfg = dd.DemoConfig.from_dict(manifest["config"]).validate()
        except (ConfigError, TypeError):
            cfg = None
    report = dd.build_demo_data(data_dir, cfg, progress=not quiet, log=lambda s: None)
    what = "completed" if status == "incomplete" else "built"
    return data_dir, f" (demo data {what} in {report.seconds:.0f} s)"


def enable_inline_figures(dpi: int = 100) -> None:
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
    from kdmri_lib.teaching.viz import fig_to_png

    return fig_to_png(fig, dpi=dpi)


def setup(namespace: Mapping[str, Any], name: str, build_data: bool = True, quiet: bool = False) -> NotebookContext:
    """Validate a notebook's parameters and prepare folders, data, seed and device.

    Args:
        namespace: the notebook's ``globals()`` (its parameters are read from it).
        name: the notebook's name, e.g. ``"01_kspace_basics"``.
        build_data: build the embedded demo data into ``data_dir`` when it holds no data and that is
            safe (:func:`resolve_data_dir`: a missing or empty folder, the demo folder).

    Raises:
        ConfigError: a parameter of the wrong type or out of range, an unavailable device, a
            ``data_dir`` that is a file or an unrelated non-empty folder, a ``run_dir`` that is a file.
    """
    from kdmri_lib.core.atomic import ensure_dir
    from kdmri_lib.core.device import describe, seed_everything

    params = _validate({k: namespace[k] for k in KNOWN_PARAMS if k in namespace})
    dev = _device(params.get("device", "auto"))
    data_dir = Path(params.get("data_dir", DEFAULT_DATA_DIR)).expanduser()
    run_dir = Path(params.get("run_dir", DEFAULT_RUN_DIR)).expanduser()
    default = DEFAULT_DATA_DIR
    if in_colab() and not data_dir.is_absolute() and not data_dir.exists():
        data_dir = Path("/content/kdmri") / data_dir.name   # Colab: no repository around the notebook
        run_dir = Path("/content/kdmri/runs") / run_dir.name
        default = data_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"notebook parameter 'run_dir': {run_dir} is a file; expected a folder for checkpoints and figures")
    data_dir, built = resolve_data_dir(data_dir, build_data, quiet, default)
    ensure_dir(run_dir, "run folder (notebook parameter 'run_dir')")
    enable_inline_figures()
    seed_everything(params.get("seed", 0))
    task = params.get("task", "sr")
    factor = params.get("scale", 4) if task == "sr" else params.get("acceleration", 4)
    params["device"] = str(dev)
    ctx = NotebookContext(name=name, data_dir=data_dir, run_dir=run_dir, device=dev, task=task, factor=factor,
                          params=params)
    if not quiet:
        from kdmri_lib import __version__

        print(f"kdmri {__version__} | {name} | task {task} x{factor} | device {describe(dev)} | "
              f"data {data_dir}{built} | runs {run_dir}")
    return ctx


def _device(name: str):
    from kdmri_lib.core.device import get_device

    try:
        return get_device(name)
    except ConfigError as e:
        raise ConfigError(f"notebook parameter 'device': {e}") from None
