r"""The distillation ablation benchmark (``make bench-distill``).

One command trains and scores every row with the same data, seed and budget::

    python -m kdmri_lib.ablation --out runs/bench            # sr x4, tiny presets, demo data

Rows (in table order): the parameter-free baselines (zero-filled = sinc interpolation, low-res,
bicubic), the fastMRI U-Net, the student alone, vanilla KD (frozen teacher, output + feature
distillation, where feature = adapters + attention maps), then cumulatively + edge loss,
+ confidence weights, + teacher correction, + dynamic weighting (= the full method), and the
teacher. Every learned row is trained by :func:`kdmri_lib.train.fit` with the same seed, epochs,
steps per epoch and whole-slice batches, each model kind with its recipe (learning rate, warm-up); the distillation rows all start from the same
teacher (the ``teacher`` row's final checkpoint). The teacher is the one exception to the shared
budget: it trains ``3 x`` the epochs (``--teacher-epochs``), as a distillation teacher is trained
before and longer than its student. At the rows' budget the ``tiny`` Swin teacher is *worse* than
the student (measured on the demo data, 800 steps: 27.47 dB, below the zero-filled 27.70 dB, while the
student reaches 27.91 dB) and would have nothing to teach; at 3x it reaches 28.47 dB.

Scoring: every row's **final** checkpoint (``last.pt``, no selection on the validation set) goes
through the reconstruction path: one fastMRI submission file per validation volume
(:func:`kdmri_lib.reconstruct.write_reconstructions`), scored by fastMRI's own ``evaluate``
(:func:`kdmri_lib.reconstruct.fastmri_evaluate`) on every held-out slice. Columns: parameters of
the deployed model (adapters are training-only and not counted), GFLOPs of one forward pass at the
validation slice size (:func:`kdmri_lib.profile.model_flops`, multiply-add = 2 FLOPs), PSNR, SSIM,
NMSE, and the training wall time of the row (training + its per-epoch validation; a distillation
row's time does not include training its teacher).

Outputs in ``--out``: ``ablation.md`` (table, settings, command, the measured differences of the
full method against the student alone and vanilla KD), ``ablation.json`` (one object per row:
``name``, ``label``, ``params``, ``GFLOPs``, ``PSNR``, ``SSIM``, ``NMSE``, ``train_time_s``,
``checkpoint``, ...), ``ablation.png`` (PSNR per row) and each row's run folder ``<name>/``
(checkpoints, logs, ``reconstructions/``).

Resumable: a row whose run finished with the same settings is not retrained (``--force`` retrains
every row); an interrupted row is resumed. Rows run in sequence with a progress line each.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .atomic import atomic_write, ensure_dir, write_json, write_text
from .checkpoint import load_checkpoint, load_model
from .distill import DistillConfig
from .errors import ConfigError, KdmriError
from .train import TrainConfig, TrainingInterrupted, fit

#: (name, label, what) in table order; ``what`` is a baseline kind, a training mode, or "distill"
ROWS: tuple[tuple[str, str, str], ...] = (
    ("zero_filled", "zero-filled (sinc interpolation)", "baseline"),
    ("lowres", "low-res (nearest neighbour)", "baseline"),
    ("bicubic", "bicubic", "baseline"),
    ("unet", "U-Net (fastMRI)", "unet"),
    ("student", "student alone", "student"),
    ("kd_vanilla", "vanilla KD (frozen teacher, output + feature)", "distill"),
    ("kd_edge", "+ edge loss", "distill"),
    ("kd_confidence", "+ confidence weights", "distill"),
    ("kd_correction", "+ teacher correction", "distill"),
    ("kd_dynamic", "+ dynamic weighting (full method)", "distill"),
    ("teacher", "teacher (Swin ViT)", "teacher"),
)
ROW_NAMES = tuple(r[0] for r in ROWS)
#: training order: the teacher before the distillation rows
RUN_ORDER = ("zero_filled", "lowres", "bicubic", "unet", "student", "teacher", "kd_vanilla", "kd_edge",
             "kd_confidence", "kd_correction", "kd_dynamic")
#: the teacher trains this many times the rows' epochs unless --teacher-epochs is given
TEACHER_BUDGET = 3
#: settings that do not change what a finished row computed
_IGNORED = ("resume", "epoch_limit", "progress", "verbose", "log_every", "device", "num_workers", "val_batch_size",
            "out_dir")


@dataclass
class AblationSettings:
    """The budget shared by every row."""

    out: str = "runs/bench"
    data: str = "data/demo"
    task: str = "sr"
    factor: int = 4
    preset: str = "tiny"
    teacher_preset: Optional[str] = None
    epochs: int = 8
    steps_per_epoch: Optional[int] = 100
    teacher_epochs: Optional[int] = None
    batch_size: Optional[int] = None   # None: each model kind's recipe (train.RECIPES)
    lr: Optional[float] = None
    seed: int = 0
    device: str = "auto"
    val_slices: Optional[int] = 6
    rows: Optional[Sequence[str]] = None
    force: bool = False
    progress: bool = True


def _train_config(s: AblationSettings, name: str, what: str) -> TrainConfig:
    out = Path(s.out) / name
    common = dict(data_dir=s.data, out_dir=str(out), task=s.task, factor=s.factor, epochs=s.epochs,
                  steps_per_epoch=s.steps_per_epoch, batch_size=s.batch_size, lr=s.lr,
                  seed=s.seed, device=s.device, val_slices=s.val_slices, resume=True, progress=s.progress,
                  verbose=False)
    if what == "teacher":
        return TrainConfig(mode="teacher", preset=s.teacher_preset or s.preset,
                           **{**common, "epochs": teacher_epochs(s)})
    if what in ("student", "unet"):
        return TrainConfig(mode=what, preset=s.preset, **common)
    teacher = Path(s.out) / "teacher" / "last.pt"
    return TrainConfig(mode="distill", preset=s.preset, teacher_preset=s.teacher_preset or s.preset,
                       teacher_checkpoint=str(teacher), distill=DistillConfig.preset(name), **common)


def teacher_epochs(s: AblationSettings) -> int:
    """The teacher row's epochs: ``--teacher-epochs``, default 3 x ``--epochs`` (see the module docstring)."""
    return s.teacher_epochs or TEACHER_BUDGET * s.epochs


def _comparable(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in _IGNORED}


def _finished(cfg: TrainConfig) -> Optional[bool]:
    """True: finished with these settings; False: partial (resume); None: nothing there.
    Raises ConfigError when a finished run used other settings."""
    last = Path(cfg.out_dir) / "last.pt"
    if not last.exists():
        return None
    ck = load_checkpoint(last)
    resolved = cfg.replace().validate(check_paths=False)   # recipe defaults filled in, as fit() stores them
    same = _comparable(ck.get("train_config", {})) == _comparable(resolved.to_dict())
    if not same:
        raise ConfigError(f"{cfg.out_dir} holds a run with other settings; rerun with --force to retrain it "
                          f"(or choose another --out)")
    return int(ck["epoch"]) >= cfg.epochs and not ck.get("interrupted")


def _row_model_info(kind: str, preset: str, task: str, factor: int, shape) -> tuple[int, float]:
    from .models import build_model
    from .profile import count_params, model_flops

    params = count_params(build_model(kind, preset, task, factor))
    gflops = model_flops(kind, preset, task, factor, shape=shape) / 1e9
    return params, gflops


def run(s: AblationSettings, log=print, command: Optional[str] = None) -> list[dict]:
    """Train (or reuse) and score every row; write the table, JSON and figure. Returns the rows."""
    from .data import MRISliceDataset, split_dir
    from .device import describe, get_device
    from .models import build_model
    from .reconstruct import fastmri_evaluate, write_reconstructions

    out = Path(s.out)
    wanted = tuple(s.rows) if s.rows else ROW_NAMES
    unknown = sorted(set(wanted) - set(ROW_NAMES))
    if unknown:
        raise ConfigError(f"unknown ablation row(s) {', '.join(unknown)}; valid: {', '.join(ROW_NAMES)}")
    if any(ROWS[ROW_NAMES.index(n)][2] == "distill" for n in wanted) and "teacher" not in wanted:
        wanted = wanted + ("teacher",)          # the distillation rows need it
    val_dir = split_dir(s.data, "val")
    val_ds = MRISliceDataset(val_dir, s.task, s.factor)
    shape = tuple(val_ds[0]["target"].shape[-2:])
    device = get_device(s.device)
    ensure_dir(out, "ablation output folder (--out)")    # only once the settings have been checked
    what_of = {n: w for n, _, w in ROWS}
    label_of = {n: lab for n, lab, _ in ROWS}
    if teacher_epochs(s) != s.epochs:
        label_of["teacher"] = f"teacher (Swin ViT, {teacher_epochs(s)} epochs)"
    order = [n for n in RUN_ORDER if n in wanted]
    results: dict[str, dict] = {}
    reused: list[str] = []
    t_all = time.perf_counter()
    for i, name in enumerate(order, 1):
        what = what_of[name]
        row_dir = out / name
        head = f"[ablation] {i:2d}/{len(order)} {name:<14}"
        t0 = time.perf_counter()
        if what == "baseline":
            from .models import baselines_for

            if name not in baselines_for(s.task):
                log(f"{head} skipped (no meaning for {s.task})")
                continue
            model = build_model(name, task=s.task, factor=s.factor)
            params, gflops = 0, _row_model_info(name, s.preset, s.task, s.factor, shape)[1]
            train_time, ckpt_path, extra = 0.0, None, {}
        else:
            cfg = _train_config(s, name, what)
            if s.force and row_dir.exists():
                shutil.rmtree(row_dir)
            state = _finished(cfg)
            if state:
                reused.append(name)
                log(f"{head} finished run found, not retrained ({row_dir})")
            else:
                log(f"{head} training {cfg.mode} ({cfg.epochs} epochs"
                    f"{f' x {cfg.steps_per_epoch} steps' if cfg.steps_per_epoch else ''}, batch {cfg.batch_size}, "
                    f"seed {cfg.seed}){' - resuming' if state is False else ''} ...")
                fit(cfg)
            ckpt_path = row_dir / "last.pt"
            model, ck = load_model(ckpt_path, device)
            hist = ck.get("history", [])
            train_time = float(sum(h.get("seconds", 0.0) for h in hist))
            kind = model.kind
            params, gflops = _row_model_info(kind, model.preset, s.task, s.factor, shape)
            extra = {"epochs": int(ck["epoch"]), "steps": int(ck["global_step"]), "kind": kind, "preset": model.preset,
                     "last_val_PSNR": hist[-1]["val_PSNR"] if hist else None}
            if what == "distill":
                extra["teacher_checkpoint"] = str(cfg.teacher_checkpoint)
                if hist and "teacher_val_PSNR" in hist[-1]:
                    extra["corrected_teacher_val_PSNR"] = hist[-1]["teacher_val_PSNR"]
        recon_dir = row_dir / "reconstructions"
        if recon_dir.exists():
            shutil.rmtree(recon_dir)
        write_reconstructions(model, val_dir, recon_dir, s.task, s.factor, device=device)
        scores = fastmri_evaluate(val_dir, recon_dir)["means"]
        results[name] = {"name": name, "label": label_of[name], "params": int(params), "GFLOPs": float(gflops),
                         "PSNR": scores["PSNR"], "SSIM": scores["SSIM"], "NMSE": scores["NMSE"],
                         "train_time_s": round(train_time, 1), "checkpoint": str(ckpt_path) if ckpt_path else None,
                         **extra}
        log(f"{head} PSNR {scores['PSNR']:.3f} dB  SSIM {scores['SSIM']:.4f}  NMSE {scores['NMSE']:.5f}  "
            f"(train {train_time:.0f} s, row {time.perf_counter() - t0:.0f} s)")
    rows = [results[n] for n in ROW_NAMES if n in results]
    meta = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(s).items()},
            "command": command,
            "device": describe(device), "torch": str(torch.__version__), "machine": platform.machine(),
            "wall_time_s": round(time.perf_counter() - t_all, 1), "val_dir": str(val_dir),
            "val_volumes": len(val_ds.volumes()), "val_slices": len(val_ds), "slice_shape": list(shape),
            "date": time.strftime("%Y-%m-%d %H:%M"), "teacher_epochs": teacher_epochs(s), "reused": reused}
    write_json(out / "ablation.json", rows)
    write_text(out / "ablation.md", to_markdown(rows, meta))
    figure(rows, out / "ablation.png")
    log(f"[ablation] wrote {out / 'ablation.md'}, {out / 'ablation.json'}, {out / 'ablation.png'} "
        f"({meta['wall_time_s']:.0f} s)")
    return rows


def comparisons(rows: Sequence[dict]) -> list[str]:
    """Measured differences of the distillation rows (no interpretation beyond the sign)."""
    by = {r["name"]: r for r in rows}
    lines = []
    for name in ("kd_correction", "kd_dynamic"):
        if name not in by:
            continue
        r = by[name]
        for ref in ("student", "kd_vanilla"):
            if ref in by:
                d = r["PSNR"] - by[ref]["PSNR"]
                ds = r["SSIM"] - by[ref]["SSIM"]
                lines.append(f"{r['label'].lstrip('+ ')} ({name}) vs {by[ref]['label']} ({ref}): "
                             f"{d:+.3f} dB PSNR, {ds:+.4f} SSIM -> {'better' if d > 0 else 'not better'} in PSNR")
    for ref in ("student", "teacher"):
        if ref in by and "zero_filled" in by:
            lines.append(f"{by[ref]['label']} vs zero-filled: {by[ref]['PSNR'] - by['zero_filled']['PSNR']:+.3f} dB")
    if "student" in by and "teacher" in by:
        lines.append(f"teacher vs student alone: {by['teacher']['PSNR'] - by['student']['PSNR']:+.3f} dB")
    t_before = by.get("teacher", {}).get("last_val_PSNR")
    for r in rows:
        if "corrected_teacher_val_PSNR" in r:
            before = f"from {t_before:.3f} dB " if t_before is not None else ""
            lines.append(f"{r['name']}: teacher correction moved the teacher {before}to "
                         f"{r['corrected_teacher_val_PSNR']:.3f} dB (the per-epoch validation slices of the training runs)")
    return lines


def to_markdown(rows: Sequence[dict], meta: dict) -> str:
    s = meta["settings"]
    lines = ["# Distillation ablation", "",
             f"Task `{s['task']}` x{s['factor']}, student preset `{s['preset']}`, teacher preset "
             f"`{s['teacher_preset'] or s['preset']}`; every learned row: seed {s['seed']}, {s['epochs']} epochs x "
             f"{s['steps_per_epoch'] or 'one pass of'} steps of whole slices, "
             + (f"batch {s['batch_size']}, " if s.get('batch_size') else "")
             + (f"AdamW lr {s['lr']:g}" if s.get('lr') else "each model kind's recipe (batch, lr, warm-up: `kdmri_lib.train.RECIPES`)")
             + " with a cosine schedule"
             + f"; the teacher row (the distillation rows' teacher) trains {meta['teacher_epochs']} epochs.",
             f"Scored: final checkpoint of each row (no model selection on these slices), reconstructions of all "
             f"{meta['val_slices']} held-out slices of the {meta['val_volumes']} validation volumes "
             f"({meta['slice_shape'][0]}x{meta['slice_shape'][1]}) written in fastMRI's submission format and scored by "
             f"`fastmri.evaluate.evaluate`. GFLOPs: one forward pass at that size. Train time: training + per-epoch "
             f"validation of the row on {meta['device']} (a distillation row excludes its teacher's training).",
             "", "| row | params | GFLOPs | PSNR (dB) | SSIM | NMSE | train time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} (`{r['name']}`) | {r['params']:,} | {r['GFLOPs']:.3f} | {r['PSNR']:.3f} | "
                     f"{r['SSIM']:.4f} | {r['NMSE']:.5f} | {r['train_time_s']:.0f} |")
    cmp_lines = comparisons(rows)
    if cmp_lines:
        lines += ["", "Measured differences (same seed and budget; one seed, so differences of a few hundredths "
                      "of a dB are within run-to-run noise):", ""] + [f"* {c}" for c in cmp_lines]
    lines += ["", f"Command: `{meta['command'] or 'kdmri_lib.ablation.run(...)'}`  ",
              f"Wall time of this invocation: {meta['wall_time_s']:.0f} s"
              + (f" ({len(meta['reused'])} learned row(s) reused from an earlier invocation with the same settings: "
                 f"{', '.join(meta['reused'])}; their train times are those of the original runs)" if meta["reused"] else "")
              + f"; {meta['date']}; torch {meta['torch']}.", ""]
    return "\n".join(lines)


def figure(rows: Sequence[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.45 * len(rows) + 1.2))
    ax = fig.add_subplot(111)
    names = [r["name"] for r in rows][::-1]
    psnr = [r["PSNR"] for r in rows][::-1]
    colors = ["#999999" if r["params"] == 0 else "#d62728" if r["name"].startswith("kd_") else "#1f77b4"
              for r in rows][::-1]
    ax.barh(names, psnr, color=colors)
    lo = min(psnr) - 0.5
    ax.set_xlim(lo, max(psnr) + 0.3)
    for y, v in enumerate(psnr):
        ax.text(v + 0.02, y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("PSNR (dB) on the held-out slices")
    ax.set_title("Distillation ablation (grey: baselines, red: distillation rows)")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def build_parser() -> argparse.ArgumentParser:
    from .models import PRESETS

    d = AblationSettings()
    p = argparse.ArgumentParser(prog="python -m kdmri_lib.ablation",
                                description="Train and score the distillation ablation (same seed and budget for "
                                            "every row); writes ablation.md / .json / .png.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=d.out, help="output folder (one sub-folder per row)")
    p.add_argument("--data", default=d.data, help="data folder with singlecoil_train/ and singlecoil_val/ "
                                                  "(the demo data is built there when missing)")
    p.add_argument("--task", choices=("sr", "cs"), default=d.task, help="acquisition")
    fac = p.add_mutually_exclusive_group()
    fac.add_argument("--scale", type=int, default=None, help="sr scale (default 4)")
    fac.add_argument("--acceleration", type=int, default=None, help="cs acceleration (default 4)")
    p.add_argument("--preset", choices=PRESETS, default=d.preset, help="student / U-Net preset")
    p.add_argument("--teacher-preset", choices=PRESETS, default=None, help="teacher preset (default: --preset)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of every learned row")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch, help="optimiser steps per epoch")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help=f"epochs of the teacher row (default: {TEACHER_BUDGET} x --epochs)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch of whole slices (default: each model kind's recipe)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate of every learned row (default: each model kind's recipe)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every row")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--val-slices", type=int, default=d.val_slices,
                   help="validation slices per training epoch (the table always scores every slice)")
    p.add_argument("--rows", default=None, help=f"comma-separated subset of rows ({', '.join(ROW_NAMES)})")
    p.add_argument("--force", action="store_true", help="retrain rows that already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bars inside a row")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    factor = args.scale if args.scale is not None else args.acceleration
    s = AblationSettings(out=args.out, data=args.data, task=args.task, factor=factor or 4, preset=args.preset,
                         teacher_preset=args.teacher_preset, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                         teacher_epochs=args.teacher_epochs, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, device=args.device, val_slices=args.val_slices,
                         rows=tuple(r.strip() for r in args.rows.split(",") if r.strip()) if args.rows else None,
                         force=args.force, progress=not args.no_progress)
    try:
        data = Path(s.data)
        if not data.exists():
            from .demo_data import build_demo_data

            print(f"[ablation] {data}: no data, building the demo data there", flush=True)
            build_demo_data(data, progress=False)
        import shlex

        argv = list(sys.argv[1:] if argv is None else argv)
        run(s, log=lambda m: print(m, flush=True), command=" ".join(["python -m kdmri_lib.ablation", *map(shlex.quote, argv)]))
        return 0
    except TrainingInterrupted as e:
        print(f"{e}\n[ablation] interrupted: run the same command again to resume (finished rows are reused)",
              file=sys.stderr)
        return 130
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
