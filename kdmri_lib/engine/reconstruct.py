r"""Reconstruct whole volumes, evaluate them with fastMRI's metrics, write submission files.

* :func:`reconstruct_volumes` streams ``(fname, reconstruction, target)`` volume by volume
  (never the whole data set in memory); reconstructions are in **file units** (the model's
  normalised output times each slice's ``scale``), float32 ``(slices, H, W)``; the target is the
  file's ``reconstruction_esc`` (the exact array fastMRI's ``evaluate`` reads) when its shape
  matches, else the dataset's target times ``scale``.
* :func:`evaluate` — fastMRI's volume metrics (``MSE``, ``NMSE``, ``PSNR``, ``SSIM`` of
  ``fastmri.evaluate``), their means over volumes (:class:`~kdmri_lib.mri.metrics.MetricAggregator`),
  per-volume and per-slice values. Under DistributedDataParallel (``distributed=True``) the volumes
  are sharded across ranks and the per-volume values gathered, so every rank returns the same
  numbers as a single-process evaluation (volumes are aggregated in sorted file-name order).
* :func:`save_reconstructions` — one HDF5 file per volume with dataset ``reconstruction``
  ``(slices, H, W)``, written by ``fastmri.save_reconstructions`` into a temporary file that is
  then renamed (atomic); :func:`fastmri_evaluate` scores a folder of them with
  ``fastmri.evaluate.evaluate`` itself.

Slice cap (``val_slices = N``, for quick validation during training): volumes in sorted order;
each of the ``V`` volumes contributes its first ``N // V`` slices, the first ``N % V`` volumes one
more (``N < V``: the first ``N`` volumes, one slice each). Deterministic; ``None`` = every slice.
Metrics of a capped volume are those of its selected slices (volume maximum of those slices).

Command line::

    python -m kdmri_lib.reconstruct --checkpoint runs/x/best.pt --data data/demo --out runs/x/recon --evaluate
    python -m kdmri_lib.reconstruct --baseline bicubic --task sr --scale 4 --data data/demo --out runs/bicubic --evaluate

``--data`` is a split folder of ``.h5`` files, or a data folder with ``singlecoil_<split>/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from kdmri_lib.core.atomic import atomic_write, ensure_dir
from kdmri_lib.core.errors import ConfigError, DataError, KdmriError, check_int
from kdmri_lib.core.resources import catch_oom
from kdmri_lib.datasets.data import MRISliceDataset, batch_operator, split_dir, to_device
from kdmri_lib.mri.metrics import MetricAggregator, slice_metrics

METRIC_KEYS = ("MSE", "NMSE", "PSNR", "SSIM")


def select_slices(volumes: Mapping[str, Sequence[int]], cap: Optional[int]) -> dict[str, list[int]]:
    """Apply the slice cap (module docstring) to ``{fname: [dataset indices]}`` (sorted by fname)."""
    names = sorted(volumes)
    if cap is None:
        return {n: list(volumes[n]) for n in names}
    cap = check_int("val_slices", cap, minimum=1)
    V = len(names)
    out: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        k = cap // V + (1 if i < cap % V else 0)
        if k > 0:
            out[n] = list(volumes[n])[:k]
    return out


def open_split(source, task: str, factor: int, split: str = "val", include=None) -> MRISliceDataset:
    """A full-slice dataset with fixed (validation) masks for a data folder or split folder
    (``include``: file-name patterns selecting its files)."""
    if isinstance(source, MRISliceDataset):
        return source
    return MRISliceDataset(split_dir(source, split), task, factor, train_masks=False, include=include)


def _model_task(model, task, factor):
    m = getattr(model, "module", model)
    task = task or getattr(m, "task", None)
    factor = factor or getattr(m, "factor", None)
    if task is None or factor is None:
        raise ConfigError("task and factor are needed (the model does not say which acquisition it was built for)")
    return task, int(factor)


def _file_target(ds: MRISliceDataset, fname: str, slice_ids: list[int], shape) -> Optional[np.ndarray]:
    import h5py

    path = ds.root / fname
    try:
        with h5py.File(path, "r") as hf:
            if "reconstruction_esc" not in hf:
                return None
            t = hf["reconstruction_esc"]
            if tuple(t.shape[-2:]) != tuple(shape):
                return None
            return np.stack([np.asarray(t[s], dtype=np.float32) for s in slice_ids])
    except OSError:
        return None


@torch.inference_mode()
def reconstruct_volumes(model, source, task: Optional[str] = None, factor: Optional[int] = None,
                        device: str | torch.device = "cpu", batch_size: int = 1, val_slices: Optional[int] = None,
                        split: str = "val", amp: bool = False, volumes: Optional[Sequence[str]] = None,
                        progress: bool = False) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Reconstruct every volume of a split, one at a time.

    Args:
        model: a reconstruction model (``model(y, op)``), in eval mode, or its DDP wrapper.
        source: data folder (with ``singlecoil_<split>/``), split folder, or an :class:`MRISliceDataset`.
        task, factor: the acquisition (default: the model's).
        device: where to run the model.
        batch_size: slices per forward pass (within one volume).
        val_slices: optional slice cap (module docstring).
        split: which split of a data folder.
        amp: run under the device's autocast (CUDA).
        volumes: only these file names (e.g. one rank's shard); default all.
        progress: a tqdm bar over volumes.

    Yields:
        ``(fname, recon, target)``: float32 ``(slices, H, W)`` arrays in file units.

    Raises:
        ResourceError: the device ran out of memory (:mod:`kdmri_lib.core.resources`: the message
            names ``batch_size`` and what to lower; the memory of the failed pass is released).
    """
    from kdmri_lib.core.device import autocast, get_device

    task, factor = _model_task(model, task, factor)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    dev = get_device(device) if isinstance(device, str) else device
    ds = open_split(source, task, factor, split)
    chosen = select_slices(ds.volumes(), val_slices)
    names = [n for n in chosen if volumes is None or n in set(volumes)]
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="reconstruct", unit="vol", leave=False)
    oom = catch_oom("evaluation", dev, note="batch_size is the slices per forward pass (val_batch_size in training)",
                    batch_size=batch_size, amp=amp if dev.type == "cuda" else None)
    for fname in it:
        idx = chosen[fname]
        recons, targets, slice_ids = [], [], []
        for start in range(0, len(idx), batch_size):
            batch = default_collate([ds[i] for i in idx[start: start + batch_size]])
            batch = to_device(batch, dev)
            op = batch_operator(batch, task, factor)
            with oom, autocast(dev, amp):
                out = model(batch["y"], op)
            scale = batch["scale"].float().reshape(-1, 1, 1, 1)
            recons.append((out.float() * scale)[:, 0].cpu().numpy())
            targets.append((batch["target"].float() * scale)[:, 0].cpu().numpy())
            slice_ids.extend(int(s) for s in batch["slice_num"])
        recon = np.concatenate(recons).astype(np.float32)
        del recons, out, batch
        target = _file_target(ds, fname, slice_ids, recon.shape[-2:])
        if target is None:
            target = np.concatenate(targets).astype(np.float32)
        del targets
        yield fname, recon, target
        del recon, target      # one volume at a time: nothing of this one is kept while the next is built


def volume_values(target: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """``MSE``, ``NMSE``, ``PSNR``, ``SSIM`` of one volume, with fastMRI's ``METRIC_FUNCS``
    (exactly what ``fastmri.evaluate.Metrics.push`` computes)."""
    from fastmri.evaluate import METRIC_FUNCS

    return {k: float(np.asarray(f(target, recon), dtype=np.float64).reshape(-1)[0]) for k, f in METRIC_FUNCS.items()}


def aggregate(per_volume: Sequence[Mapping[str, float]]) -> dict:
    """Means and standard deviations over volumes (fastMRI's running statistics), in the given order."""
    agg = MetricAggregator()
    for v in per_volume:
        agg.push_values(v)
    if agg.count == 0:
        return {"means": {k: float("nan") for k in METRIC_KEYS}, "stddevs": {k: float("nan") for k in METRIC_KEYS}}
    stds = agg.stddevs() if agg.count > 1 else {k: 0.0 for k in METRIC_KEYS}
    return {"means": agg.means(), "stddevs": stds}


def evaluate(model, data_dir, split: str = "val", task: Optional[str] = None, factor: Optional[int] = None,
             device: str | torch.device = "cpu", batch_size: int = 1, val_slices: Optional[int] = None,
             amp: bool = False, per_slice: bool = True, distributed: bool = False, progress: bool = False) -> dict:
    """fastMRI metrics of a model on a split.

    Args:
        model: a reconstruction model or DDP wrapper (put in eval mode here; restored after).
        data_dir: data folder, split folder or :class:`MRISliceDataset`.
        split, task, factor, device, batch_size, val_slices, amp: see :func:`reconstruct_volumes`.
        per_slice: also compute per-slice metrics (costs one more SSIM pass).
        distributed: shard volumes across the ranks of the process group and gather the results
            (every rank returns the full, identical result). Ignored without a process group.
        progress: tqdm bar over volumes.

    Returns:
        dict with ``means`` and ``stddevs`` (``MSE``, ``NMSE``, ``PSNR``, ``SSIM``, fastMRI's running
        statistics over volumes), ``per_volume`` (list of dicts: ``fname``, ``slices`` and the four
        metrics), ``per_slice`` (list of dicts: ``fname``, ``slice``, ``PSNR``, ``SSIM``, ``NMSE``; empty
        unless ``per_slice``), ``volumes``, ``slices``.
    """
    from kdmri_lib.core import device as D

    task, factor = _model_task(model, task, factor)
    ds = open_split(data_dir, task, factor, split)
    names = sorted(select_slices(ds.volumes(), val_slices))
    shard = names
    dist_on = distributed and D.is_distributed()
    if dist_on:
        shard = names[D.rank()::D.world_size()]
    was_training = model.training
    model.eval()
    vols, slices = [], []
    try:
        for fname, recon, target in reconstruct_volumes(model, ds, task, factor, device, batch_size, val_slices,
                                                        split, amp, volumes=shard, progress=progress):
            vols.append({"fname": fname, "slices": int(recon.shape[0]), **volume_values(target, recon)})
            if per_slice:
                for i, m in enumerate(slice_metrics(target, recon)):
                    slices.append({"fname": fname, "slice": i, **m})
            del recon, target  # scored: released before the next volume is reconstructed
    finally:
        model.train(was_training)
    if dist_on:
        gathered = D.all_gather_objects((vols, slices))
        vols = [v for g in gathered for v in g[0]]
        slices = [s for g in gathered for s in g[1]]
    vols.sort(key=lambda v: v["fname"])
    slices.sort(key=lambda s: (s["fname"], s["slice"]))
    out = aggregate(vols)
    out.update(per_volume=vols, per_slice=slices, volumes=len(vols), slices=sum(v["slices"] for v in vols))
    return out


# --------------------------------------------------------------------------------------------
# submission files and fastMRI's own evaluation
# --------------------------------------------------------------------------------------------

def save_reconstructions(reconstructions, out_dir: str | os.PathLike) -> list[Path]:
    """Write reconstructions in fastMRI's submission format, one HDF5 per volume.

    Args:
        reconstructions: ``{fname: (slices, H, W) array}`` or an iterable of ``(fname, recon, ...)``
            tuples (e.g. :func:`reconstruct_volumes`, streamed: one volume in memory at a time).
        out_dir: folder to write to (created).

    Each file is written by ``fastmri.save_reconstructions`` (dataset ``reconstruction``) under a
    temporary name, then renamed: a reader never sees half a file. Returns the written paths.
    """
    import fastmri

    out_dir = ensure_dir(out_dir, "folder for the reconstructions")
    items = reconstructions.items() if isinstance(reconstructions, Mapping) else reconstructions
    written = []
    for item in items:
        fname, recon = item[0], item[1]
        recon = np.asarray(recon, dtype=np.float32)
        if recon.ndim != 3:
            raise ConfigError(f"reconstruction of {fname} must be (slices, H, W); got shape {recon.shape}")
        dest = out_dir / Path(fname).name
        with atomic_write(dest) as tmp:
            fastmri.save_reconstructions({tmp.name: recon}, tmp.parent)
        written.append(dest)
        del item, recon        # written: released before the next volume is reconstructed
    return written


def write_reconstructions(model, data_dir, out_dir, task: Optional[str] = None, factor: Optional[int] = None,
                          split: str = "val", device: str | torch.device = "cpu", batch_size: int = 1,
                          amp: bool = False, progress: bool = False) -> list[Path]:
    """Reconstruct every volume of a split (all slices) and save them (:func:`save_reconstructions`)."""
    model.eval()
    return save_reconstructions(reconstruct_volumes(model, data_dir, task, factor, device, batch_size, None, split,
                                                    amp, progress=progress), out_dir)


def fastmri_evaluate(target_dir: str | os.PathLike, predictions_dir: str | os.PathLike,
                     recons_key: str = "reconstruction_esc") -> dict:
    """Score a folder of reconstructions with ``fastmri.evaluate.evaluate`` itself.

    fastMRI's ``evaluate`` opens *every* entry of ``target_path`` as HDF5 and expects a prediction
    of the same name for each. The targets used here are the visible ``.h5`` files of
    ``target_dir`` (other files — notes, hidden temporary files — are left out, through a temporary
    folder of symbolic links). ``python -m fastmri.evaluate`` of fastmri 0.3.0 crashes while
    printing under NumPy 2; this calls the function and converts its results to floats.

    Returns:
        dict with ``means`` and ``stddevs`` (``MSE``, ``NMSE``, ``PSNR``, ``SSIM``) and ``volumes``.

    Raises:
        DataError: no targets, or a target without a prediction (named).
    """
    from fastmri import evaluate as fe

    target_dir, predictions_dir = Path(target_dir), Path(predictions_dir)
    if not target_dir.is_dir():
        raise DataError(f"{target_dir}: target folder not found")
    if not predictions_dir.is_dir():
        raise DataError(f"{predictions_dir}: predictions folder not found")
    targets = sorted(p for p in target_dir.iterdir() if p.suffix == ".h5" and not p.name.startswith(".") and p.is_file())
    if not targets:
        raise DataError(f"{target_dir}: no .h5 target files")
    missing = [p.name for p in targets if not (predictions_dir / p.name).is_file()]
    if missing:
        raise DataError(f"{predictions_dir}: no reconstruction for {len(missing)} target file(s): {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}; write them with `python -m kdmri_lib.reconstruct`")
    with tempfile.TemporaryDirectory(prefix="kdmri-eval-") as tmp:
        for p in targets:
            os.symlink(p.resolve(), Path(tmp) / p.name)
        args = argparse.Namespace(target_path=Path(tmp), predictions_path=predictions_dir, challenge="singlecoil",
                                  acquisition=None, acceleration=None)
        metrics = fe.evaluate(args, recons_key)

    def conv(d):
        return {k: float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) for k, v in d.items()}

    return {"means": conv(metrics.means()), "stddevs": conv(metrics.stddevs()), "volumes": len(targets)}


def format_metrics(means: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {means[k]:.4f}" if k != "NMSE" else f"{k} {means[k]:.5f}" for k in ("PSNR", "SSIM", "NMSE")
                     if k in means)


# --------------------------------------------------------------------------------------------
# one slice through several models (notebook figures)
# --------------------------------------------------------------------------------------------

def auto_inset(target: np.ndarray, frac: float = 0.25) -> tuple[int, int, int, int]:
    """A zoom box ``(top, left, h, w)`` of ``frac`` of the image size where the target has the
    most edges (largest mean Sobel magnitude): where reconstructions differ most visibly."""
    from scipy import ndimage

    t = np.asarray(target, dtype=np.float64)
    H, W = t.shape
    h, w = max(8, int(H * frac)), max(8, int(W * frac))
    g = np.hypot(ndimage.sobel(t, 0), ndimage.sobel(t, 1))
    m = ndimage.uniform_filter(g, size=(h, w), mode="constant")
    cy, cx = np.unravel_index(np.argmax(m[h // 2: H - h // 2, w // 2: W - w // 2]), (H - 2 * (h // 2), W - 2 * (w // 2)))
    return int(cy), int(cx), h, w


@torch.no_grad()
def reconstruct_slice(models: Mapping[str, torch.nn.Module], dataset, index: int, device: str | torch.device = "cpu",
                      inset: Optional[Sequence[int]] = None) -> dict:
    """Reconstruct one slice of a dataset with several models, for side-by-side figures.

    Args:
        models: name -> model (``model(y, op)``).
        dataset: a dataset of :mod:`kdmri_lib.datasets.data` (full slices, e.g. the ``val`` split).
        index: which sample.
        inset: zoom box ``(top, left, h, w)``; chosen by :func:`auto_inset` when None.

    Returns:
        dict with ``target`` ``(H, W)`` and ``recons`` (name -> ``(H, W)``) in file units,
        ``metrics`` (name -> PSNR / SSIM / NMSE of this slice, with the volume maximum as data
        range), ``inset``, ``fname`` and ``slice_num``.
    """
    from kdmri_lib.datasets.data import collate
    from kdmri_lib.mri.metrics import volume_metrics

    dev = torch.device(device) if isinstance(device, str) else device
    sample = dataset[index]
    batch = to_device(collate([sample]), dev)
    op = dataset.operator(batch).to(dev)
    scale = float(sample["scale"])
    target = (sample["target"][0].float() * scale).numpy()
    vmax = float(sample["max"]) if float(sample["max"]) > 0 else float(target.max())
    recons, metrics = {}, {}
    for name, model in models.items():
        model.eval()
        out = (model(batch["y"], op)[0, 0].float().cpu() * scale).numpy()
        recons[name] = out
        metrics[name] = volume_metrics(target[None], out[None], maxval=vmax)
    return {"target": target, "recons": recons, "metrics": metrics,
            "inset": tuple(inset) if inset is not None else auto_inset(target),
            "fname": sample["fname"], "slice_num": int(sample["slice_num"])}


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from kdmri_lib.models import BASELINES

    p = argparse.ArgumentParser(
        prog="python -m kdmri_lib.reconstruct",
        description="Reconstruct every volume of a split with a trained checkpoint or a baseline and write one "
                    "fastMRI submission HDF5 per volume (dataset 'reconstruction'); optionally score them with "
                    "fastMRI's own evaluate.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint of a trained model (last.pt, best.pt, teacher_last.pt), or "
                                          "pretrained:NAME for a model of the shipped zoo (python -m kdmri_lib.pretrained)")
    src.add_argument("--baseline", choices=BASELINES, help="a parameter-free baseline instead of a checkpoint")
    p.add_argument("--data", required=True, help="split folder of .h5 files, or a data folder with singlecoil_<split>/")
    p.add_argument("--split", default="val", help="split of a data folder (default: val)")
    p.add_argument("--out", required=True, help="folder for the reconstructions (one .h5 per input volume)")
    p.add_argument("--task", choices=("sr", "cs"), default=None,
                   help="acquisition (required with --baseline; with --checkpoint it must match the model)")
    fac = p.add_mutually_exclusive_group()
    fac.add_argument("--scale", type=int, default=None, help="sr scale (default: the checkpoint's, else 4)")
    fac.add_argument("--acceleration", type=int, default=None, help="cs acceleration (default: the checkpoint's, else 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--batch-size", type=int, default=1, help="slices per forward pass (default: 1)")
    p.add_argument("--evaluate", action="store_true", help="score the written files with fastmri.evaluate and print the metrics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from kdmri_lib.core.device import get_device
    from kdmri_lib.models import build_model
    from kdmri_lib.models.checkpoint import load_model

    device = get_device(args.device)
    batch_size = check_int("--batch-size", args.batch_size, minimum=1)
    factor = args.scale if args.scale is not None else args.acceleration
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the reconstructions")
    if args.baseline:
        task = args.task or "sr"
        factor = 4 if factor is None else factor
        model = build_model(args.baseline, task=task, factor=factor).to(device).eval()
        what = f"baseline {args.baseline}"
    else:
        model, ckpt = load_model(args.checkpoint, device)
        if args.task is not None and args.task != model.task:
            raise ConfigError(f"--task {args.task} but {args.checkpoint} holds a {model.task} model")
        task = model.task
        if factor is None:
            factor = model.factor
        elif task == "sr" and factor != model.factor:
            raise ConfigError(f"--scale {factor} but {args.checkpoint} holds an sr x{model.factor} model")
        what = f"{model.kind} {model.preset} from {args.checkpoint}"
    src = split_dir(args.data, args.split)
    files = write_reconstructions(model, src, args.out, task, factor, device=device, batch_size=batch_size,
                                  progress=not args.no_progress)
    print(f"{what}: {task} x{factor}: wrote {len(files)} reconstruction file(s) to {args.out}")
    if args.evaluate:
        res = fastmri_evaluate(src, args.out)
        print(f"fastMRI evaluate ({res['volumes']} volumes): {format_metrics(res['means'])}  MSE {res['means']['MSE']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
