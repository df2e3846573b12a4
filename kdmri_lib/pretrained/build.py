r"""Rebuild the pretrained zoo (``make pretrained``): train every entry of :data:`ZOO`, score it,
copy its weights next to ``manifest.json`` and write its card.

    python -m kdmri_lib.pretrained.build --data data/demo                 # every entry, resumable
    python -m kdmri_lib.pretrained.build --data data/demo --only sr4_student_tiny --threads 1

Each entry trains with :func:`kdmri_lib.engine.train.fit` into ``--work/NAME`` (default
``runs/pretrained/NAME``) with ``resume=True``: an interrupted build (Ctrl-C, a killed session)
continues where it stopped, and a finished run is not retrained. The **final** weights are scored
on every demo validation slice by :func:`kdmri_lib.engine.reconstruct.evaluate` (fastMRI's metric
functions) — no checkpoint selection on the slices the card reports — and written as a minimal
checkpoint (weights, model config, training config, history) to ``--zoo/NAME.pt``; the manifest is
rewritten atomically after every entry, so a partial build leaves a valid zoo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from kdmri_lib.pretrained import MANIFEST, ZOO_DIR, manifest, sha256_file

#: what the zoo holds: name -> training run (mode = model kind; steps = epochs x steps_per_epoch).
#: Every run uses its kind's recipe (:data:`kdmri_lib.engine.train.RECIPES`), whole slices, seed 0.
ZOO: dict[str, dict] = {
    "sr4_student_tiny": {"mode": "student", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8, "steps_per_epoch": 500},
    "sr4_unet_tiny": {"mode": "unet", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8, "steps_per_epoch": 500},
    # the paper's recipe, natural images mixed 1:1 with the MRI slices: unlike sr4_unet_tiny it stays
    # above zero-filling on the held-out real scan (docs/training.md, *The teacher's margin*)
    "sr4_unet_tiny_natural": {"mode": "unet", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8,
                              "steps_per_epoch": 500, "natural": True},
    "sr4_teacher_tiny": {"mode": "teacher", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8, "steps_per_epoch": 500},
    "sr4_teacher_small": {"mode": "teacher", "preset": "small", "task": "sr", "factor": 4, "epochs": 8,
                          "steps_per_epoch": 500},
    # the distillation protocol's teacher (kdmri_lib.datasets.protocol.DEFAULT): pre-trained on the source
    # domain only (axial + coronal), it never sees a sagittal slice, the target domain's pool or
    # any slice the ablation scores
    "sr4_teacher_source_tiny": {"mode": "teacher", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8,
                                "steps_per_epoch": 500, "train_files": ["*_axial_*", "*_coronal_*"]},
    "sr4_teacher_source_small": {"mode": "teacher", "preset": "small", "task": "sr", "factor": 4, "epochs": 8,
                                 "steps_per_epoch": 300, "train_files": ["*_axial_*", "*_coronal_*"]},
}
#: candidates that are not shipped: the paper's recipe, natural images mixed 1:1 with the MRI
#: slices (measured: docs/training.md, *The teacher's margin*), and the ``cs`` x4 models (a
#: ``cs`` teacher's transformer runs at full resolution, 16x the tokens of ``sr`` x4), and random warps
#: of the training slices (``augment``). ``--only NAME`` builds one into ``runs/pretrained/candidates`` (its own
#: manifest) unless ``--zoo`` says otherwise; a plain ``make pretrained`` never trains them.
CANDIDATES: dict[str, dict] = {
    "sr4_teacher_small_natural": {"mode": "teacher", "preset": "small", "task": "sr", "factor": 4, "epochs": 8,
                                  "steps_per_epoch": 500, "natural": True},
    "sr4_student_tiny_natural": {"mode": "student", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8,
                                 "steps_per_epoch": 500, "natural": True},
    # anatomical variety: every training slice warped at random before it is measured (refuted for the teacher)
    "sr4_student_tiny_augment": {"mode": "student", "preset": "tiny", "task": "sr", "factor": 4, "epochs": 8,
                                 "steps_per_epoch": 500, "augment": True},
    "sr4_teacher_small_augment": {"mode": "teacher", "preset": "small", "task": "sr", "factor": 4, "epochs": 8,
                                  "steps_per_epoch": 500, "augment": True},
    "cs4_student_tiny": {"mode": "student", "preset": "tiny", "task": "cs", "factor": 4, "epochs": 8, "steps_per_epoch": 500},
    "cs4_teacher_tiny": {"mode": "teacher", "preset": "tiny", "task": "cs", "factor": 4, "epochs": 8, "steps_per_epoch": 500},
    "cs4_unet_tiny": {"mode": "unet", "preset": "tiny", "task": "cs", "factor": 4, "epochs": 8, "steps_per_epoch": 500},
}
CANDIDATE_ZOO = Path("runs/pretrained/candidates")
#: the zoo's size limit (package data)
MAX_BYTES = 25 * 1024 * 1024


def data_identity(data_dir: str | Path) -> dict:
    """``{"digest", "manifest_sha256"}`` of a demo data folder's ``manifest.json`` (its build
    configuration's digest and the hash of the whole manifest, which lists every file)."""
    p = Path(data_dir) / "manifest.json"
    if not p.exists():
        return {"digest": None, "manifest_sha256": None}
    m = json.loads(p.read_text())
    text = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    return {"digest": m.get("digest"), "manifest_sha256": hashlib.sha256(text).hexdigest()}


def _spec(name: str) -> dict:
    """The training run of a zoo entry or a candidate."""
    return ZOO[name] if name in ZOO else CANDIDATES[name]


def command_for(name: str, data: str) -> str:
    """The command that (re)builds entry ``name`` (a candidate goes to :data:`CANDIDATE_ZOO` by default)."""
    return f"python -m kdmri_lib.pretrained.build --data {shlex.quote(str(data))} --only {name}"


def train_config(name: str, data: str, work: str | Path, seed: int = 0, device: str = "cpu", progress: bool = True):
    from kdmri_lib.engine.train import TrainConfig

    spec = _spec(name)
    return TrainConfig(data_dir=str(data), out_dir=str(Path(work) / name), seed=seed, device=device, resume=True,
                       progress=progress, verbose=True, val_slices=None, **spec).validate()


def _finished(last: Path, epochs: int) -> bool:
    from kdmri_lib.models.checkpoint import load_checkpoint

    if not last.exists():
        return False
    c = load_checkpoint(last)
    return int(c["epoch"]) >= epochs and not c.get("interrupted")


def build_entry(name: str, data: str, work: str | Path, zoo: Path, seed: int = 0, device: str = "cpu",
                progress: bool = True) -> dict:
    """Train (or resume) entry ``name``, score its final weights, write ``zoo/NAME.pt``; its card."""
    from kdmri_lib.engine.reconstruct import evaluate
    from kdmri_lib.engine.train import fit
    from kdmri_lib.models.checkpoint import load_model, model_checkpoint, save_checkpoint

    cfg = train_config(name, data, work, seed, device, progress)
    last = Path(cfg.out_dir) / "last.pt"
    if not _finished(last, cfg.epochs):
        print(f"[pretrained] {name}: training {cfg.mode} {cfg.preset} {cfg.task} x{cfg.factor}, "
              f"{cfg.epochs} x {cfg.steps_per_epoch} steps (resumable) into {cfg.out_dir}", flush=True)
        fit(cfg)
    model, ck = load_model(last, device)
    res = evaluate(model, data, "val", device=device, per_slice=False)
    held = None
    if (Path(data) / "singlecoil_heldout").is_dir():   # real anatomy no model trains on
        held = evaluate(model, data, "heldout", device=device, per_slice=False)
    hist = ck.get("history", [])
    out = zoo / f"{name}.pt"
    save_checkpoint(model_checkpoint(model, train_config=ck.get("train_config"), history=hist,
                                     epoch=int(ck["epoch"]), global_step=int(ck["global_step"])), out)
    return {
        "name": name, "file": out.name, "sha256": sha256_file(out), "kind": model.kind, "preset": model.preset,
        "task": model.task, "factor": int(model.factor),
        "params": int(sum(p.numel() for p in model.parameters())),
        "metrics": {k: float(res["means"][k]) for k in ("PSNR", "SSIM", "NMSE")}
        | {"slices": int(res["slices"]), "volumes": int(res["volumes"]), "split": "demo singlecoil_val"},
        "heldout": None if held is None else {k: float(held["means"][k]) for k in ("PSNR", "SSIM", "NMSE")}
        | {"slices": int(held["slices"]), "split": "demo singlecoil_heldout (nibabel example EPI)"},
        "data": data_identity(data), "command": command_for(name, data), "steps": int(ck["global_step"]),
        "seconds": round(float(sum(h.get("seconds", 0.0) for h in hist)), 1), "seed": int(seed),
        "torch": str(torch.__version__), "threads": torch.get_num_threads(),
        "train_files": ck["train_config"].get("train_files"),   # None: every training file
        "natural": bool(ck["train_config"].get("natural", False)),   # natural images mixed 1:1
        "augment": bool(ck["train_config"].get("augment", False)),   # random warps of the training slices
        "recipe": {k: ck["train_config"][k] for k in ("lr", "warmup_steps", "batch_size", "schedule", "epochs",
                                                      "steps_per_epoch")},
        "curve": [[int(h.get("global_step", (i + 1) * cfg.steps_per_epoch)), round(float(h["val_PSNR"]), 4)]
                  for i, h in enumerate(hist) if h.get("val_PSNR") is not None],
    }


def baseline_metrics(data: str | Path, task: str = "sr", factor: int = 4) -> dict:
    """The parameter-free baselines on the same splits as the cards: name -> {"val": ..., "heldout": ...}."""
    from kdmri_lib.engine.reconstruct import evaluate
    from kdmri_lib.models import baselines_for, build_model

    out = {}
    for name in baselines_for(task):
        model = build_model(name, "tiny", task, factor)
        row = {}
        for split in ("val", "heldout"):
            if split == "val" or (Path(data) / f"singlecoil_{split}").is_dir():
                r = evaluate(model, data, split, task, factor, per_slice=False)
                row[split] = {k: float(r["means"][k]) for k in ("PSNR", "SSIM", "NMSE")}
        out[f"{task}{factor}_{name}"] = row
    return out


def write_manifest(entries: Sequence[dict], zoo: Path, baselines: Optional[dict] = None) -> Path:
    from kdmri_lib.core.atomic import write_json

    order = {n: i for i, n in enumerate(ZOO)}
    rows = sorted(entries, key=lambda e: order.get(e["name"], len(order)))
    total = sum((zoo / e["file"]).stat().st_size for e in rows if (zoo / e["file"]).exists())
    if total > MAX_BYTES:
        raise RuntimeError(f"the zoo would hold {total / 2**20:.1f} MiB, over its {MAX_BYTES / 2**20:.0f} MiB limit")
    return write_json(zoo / MANIFEST.name, {"format": "kdmri-pretrained", "version": 1, "models": rows,
                                            "baselines": baselines or {}, "bytes": total})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdmri_lib.pretrained.build", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/demo", help="demo data folder (built by `make data`)")
    p.add_argument("--work", default="runs/pretrained", help="training runs (resumable) go to WORK/NAME")
    p.add_argument("--zoo", default=None, help=f"folder of manifest.json and the checkpoints (default: {ZOO_DIR} for "
                   f"the zoo's entries, {CANDIDATE_ZOO} for the candidates)")
    p.add_argument("--only", default=None, help=f"comma-separated entries ({', '.join(ZOO)}; candidates, not shipped: "
                                                f"{', '.join(CANDIDATES)})")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (the cards record it)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 for a background build)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from kdmri_lib.core.errors import KdmriError
    from kdmri_lib.engine.train import TrainingInterrupted

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    todo = [n.strip() for n in args.only.split(",")] if args.only else list(ZOO)
    unknown = [n for n in todo if n not in ZOO and n not in CANDIDATES]
    if unknown:
        print(f"error: unknown zoo entry {', '.join(unknown)}; known: {', '.join(ZOO)}; candidates: "
              f"{', '.join(CANDIDATES)}", file=sys.stderr)
        return 2
    if args.zoo is None and any(n in CANDIDATES for n in todo) and any(n in ZOO for n in todo):
        print("error: --only mixes shipped entries and candidates; build them in two calls (or give --zoo)",
              file=sys.stderr)
        return 2
    zoo = Path(args.zoo) if args.zoo else (CANDIDATE_ZOO if todo[0] in CANDIDATES else ZOO_DIR)
    zoo.mkdir(parents=True, exist_ok=True)
    try:
        old = manifest(zoo / MANIFEST.name)
        entries = {e["name"]: e for e in old["models"]}
        baselines = dict(old.get("baselines", {}))
        for name in todo:
            t0 = time.time()
            entries[name] = build_entry(name, args.data, args.work, zoo, args.seed, args.device, not args.no_progress)
            spec = _spec(name)
            if not any(k.startswith(f"{spec['task']}{spec['factor']}_") for k in baselines):
                baselines.update(baseline_metrics(args.data, spec["task"], spec["factor"]))
            write_manifest(list(entries.values()), zoo, baselines)
            m = entries[name]["metrics"]
            print(f"[pretrained] {name}: PSNR {m['PSNR']:.2f} dB, SSIM {m['SSIM']:.4f} on {m['slices']} demo val slices "
                  f"({entries[name]['steps']} steps, {time.time() - t0:.0f} s this call)", flush=True)
    except TrainingInterrupted as e:
        print(f"{e}\n[pretrained] interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
