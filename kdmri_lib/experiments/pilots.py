"""Pilot measurements behind the ablation's diagnosis (docs/training.md), one command each.

    python -m kdmri_lib.pilots correction --params head --lr 1e-4 --steps 100
    python -m kdmri_lib.pilots correction --params all --lr 2e-5 --steps 80 --pool-weight 1
    python -m kdmri_lib.pilots correction --params all --lr 2e-5 --steps 80 --references stratified
    python -m kdmri_lib.pilots tta --checkpoint runs/bench/kd_output/seed0/last.pt
    python -m kdmri_lib.pilots confidence --checkpoint runs/bench/kd_output/seed0/last.pt
    python -m kdmri_lib.pilots step-cost --preset paper --steps 50000
    python -m kdmri_lib.pilots regions --models sr4_student_tiny,sr4_teacher_source_small,sr4_unet_tiny
    python -m kdmri_lib.pilots regions --split heldout --dc --models zero_filled,sr4_student_tiny,sr4_unet_tiny

``correction`` fine-tunes the protocol's teacher (``pretrained:sr4_teacher_source_small``) on the
target references alone — no student, so that the question is only "can 12 references correct this
teacher?" — and scores it on the target-domain validation volumes, one per contrast, before and at
four points of the run. ``--references protocol`` uses the ablation's references (its
:class:`~kdmri_lib.datasets.protocol.Protocol`), ``stratified`` one training volume per contrast instead;
``--pool-weight w`` adds ``w`` x the L1 distance, on the measurement-only pool, to the original
teacher's flip-averaged label (self-ensembling: a label for the contrast that has no reference).
``tta`` scores the teacher (and a checkpoint) with and without test-time augmentation.
``confidence`` asks where the uncertainty confidence puts the teacher's weight: on the scored
slices (read for this analysis only, never trained on), the share of the distillation weight that
falls on pixels where the teacher is closer to the truth than a distilled student, with the
uncertainty weights and without them. ``step-cost`` times one training step of each model at the
knee protocol's size (``cs`` x4 on fastMRI's 640 x 368 raw k-space, 320 x 320 images; random data,
the cost does not depend on it) and the teacher's flip-averaged label, and multiplies them out to the
knee ablation's cost for a number of steps per row (``docs/training.md``, *At the paper's scale*).
``regions`` splits each zoo model's (or zero-filling's) squared error on the demo validation slices
(``--split heldout``: the held-out real scan) into the head (target above 5 % of the volume maximum)
and the air around it, and the head into its 5-pixel rim and its interior; ``--dc`` also scores each
output after a data-consistency projection, ``--tta`` its flip-averaged prediction.

Both print one line per measurement; the validation slices are never trained on.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Optional, Sequence

import torch
from torch import nn

from kdmri_lib.core.errors import KdmriError, check_float, check_int

__all__ = ["contrast_sets", "score_by_contrast", "correction_pilot", "tta_pilot", "confidence_pilot", "step_cost",
           "regions_pilot", "main"]

#: file-name patterns of the demo's two contrasts (sagittal target domain)
CONTRASTS = {"T1": "mni152_sagittal_*", "T2": "mni152t2_sagittal_*"}
TEACHER = "pretrained:sr4_teacher_source_small"


def contrast_sets(data: str, task: str = "sr", factor: int = 4) -> dict:
    """``{contrast: validation dataset}`` of the target domain, one per contrast."""
    from kdmri_lib.engine.reconstruct import open_split

    return {k: open_split(data, task, factor, "val", include=[pat]) for k, pat in CONTRASTS.items()}


def score_by_contrast(model: nn.Module, sets: dict, task: str = "sr", factor: int = 4) -> dict[str, float]:
    """Mean PSNR (fastMRI's metric) of ``model`` on each set; the model's mode is restored."""
    from kdmri_lib.engine.reconstruct import evaluate

    return {k: round(evaluate(model, v, "val", task, factor, "cpu", per_slice=False)["means"]["PSNR"], 3)
            for k, v in sets.items()}


class _TTA(nn.Module):
    """A model whose output is its flip-averaged prediction (:func:`kdmri_lib.distill.teacher_tta`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, y, op):
        from kdmri_lib.distill import teacher_tta

        return teacher_tta(self.model, y, op)[0]


def _training_slices(data: str, references: str):
    """``(references, pool)``: the target domain's reference slices (with ground truth) and its
    measurement-only pool (empty for ``"stratified"``), split as the protocol splits them."""
    from kdmri_lib.datasets.protocol import DEFAULT, Labelled, MeasurementOnly, split_references
    from kdmri_lib.engine.run_config import TrainConfig
    from kdmri_lib.engine.trainer import training_dataset

    if references == "stratified":   # one (the third) training volume per contrast, all with ground truth
        files = [pat.replace("_*", "_02*") for pat in CONTRASTS.values()]
        return training_dataset(TrainConfig(mode="student", data_dir=data, train_files=files)), []
    target = training_dataset(TrainConfig(mode="student", data_dir=data, train_files=list(DEFAULT.target)))
    refs, pool = split_references(target.volumes(), DEFAULT.references, DEFAULT.split_seed)
    return Labelled(target, refs), MeasurementOnly(target, pool)


def _source_slices(data: str):
    """The teacher's own pre-training slices (the protocol's source domain, with ground truth)."""
    from kdmri_lib.datasets.protocol import DEFAULT
    from kdmri_lib.engine.run_config import TrainConfig
    from kdmri_lib.engine.trainer import training_dataset

    return training_dataset(TrainConfig(mode="student", data_dir=data, train_files=list(DEFAULT.source)))


def correction_pilot(data: str = "data/demo", params: str = "head", lr: float = 1e-4, steps: int = 100,
                     references: str = "protocol", pool_weight: float = 0.0, batch: int = 2, seed: int = 0,
                     rehearsal: float = 0.0, log=print) -> list[dict]:
    """Fine-tune the teacher on the references (module docstring); returns the logged rows
    (``step``, ``PSNR`` per contrast, ``delta`` per contrast)."""
    from kdmri_lib.datasets.data import batch_operator, collate
    from kdmri_lib.distill import teacher_tta
    from kdmri_lib.models.checkpoint import load_model

    torch.manual_seed(seed)
    sets = contrast_sets(data)
    refs, pool = _training_slices(data, references)
    source = _source_slices(data) if rehearsal > 0 else None
    t0, _ = load_model(TEACHER)
    base = score_by_contrast(t0, sets)
    log(f"[pilot] teacher {TEACHER}: {len(refs)} reference slices, {len(pool)} pool slices; before {base}")
    labels = {}
    if pool_weight > 0 and len(pool):
        for i in range(len(pool)):
            b = collate([pool[i]])
            labels[i] = teacher_tta(t0, b["y"], batch_operator(b, "sr", 4))[0][0]
    teacher = copy.deepcopy(t0).train()
    trained = teacher.head_parameters() if params == "head" else list(teacher.parameters())
    for p in teacher.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for s in range(steps):
        b = collate([refs[j] for j in torch.randint(len(refs), (batch,), generator=g).tolist()])
        loss = (teacher(b["y"], batch_operator(b, "sr", 4)) - b["target"]).abs().mean()
        if labels:
            idx = torch.randint(len(pool), (batch,), generator=g).tolist()
            bp = collate([pool[i] for i in idx])
            out = teacher(bp["y"], batch_operator(bp, "sr", 4))
            loss = loss + pool_weight * (out - torch.stack([labels[i] for i in idx])).abs().mean()
        if source is not None:
            bs = collate([source[j] for j in torch.randint(len(source), (batch,), generator=g).tolist()])
            loss = loss + rehearsal * (teacher(bs["y"], batch_operator(bs, "sr", 4)) - bs["target"]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (s + 1) % max(1, steps // 4) == 0 or s + 1 == steps:
            r = score_by_contrast(teacher, sets)
            teacher.train()
            rows.append({"step": s + 1, "PSNR": r, "delta": {k: round(r[k] - base[k], 3) for k in r}})
            log(f"[pilot] {params} lr {lr:g} pool weight {pool_weight:g} rehearsal {rehearsal:g} step {s + 1}: {r}, change {rows[-1]['delta']}")
    return rows


def tta_pilot(data: str = "data/demo", checkpoint: Optional[str] = None, log=print) -> dict:
    """PSNR per contrast of the teacher (and ``checkpoint``), single pass and flip-averaged."""
    from kdmri_lib.models.checkpoint import load_model

    sets = contrast_sets(data)
    out = {}
    for name, path in (("teacher", TEACHER), ("checkpoint", checkpoint)):
        if path is None:
            continue
        m, _ = load_model(path)
        out[name] = score_by_contrast(m, sets)
        out[f"{name}_tta"] = score_by_contrast(_TTA(m).eval(), sets)
        log(f"[pilot] {path}: single pass {out[name]}, flip-averaged {out[f'{name}_tta']}")
    return out


def confidence_pilot(data: str = "data/demo", checkpoint: str = "runs/bench/kd_output/seed0/last.pt",
                     log=print) -> dict:
    """Where ``confidence="uncertainty"`` puts the teacher's weight (module docstring). Returns
    ``teacher_better`` (fraction of foreground pixels where ``|T - x| < |S - x|``), ``weight_foreground``
    / ``weight_there`` (mean uncertainty weight on the foreground / on those pixels; the weights have
    mean 1 over each whole image), ``share_unweighted`` /
    ``share_weighted`` (share of the distillation weight ``sum w |T - S|`` on those pixels)."""
    from kdmri_lib.datasets.data import batch_operator, collate
    from kdmri_lib.distill import teacher_tta
    from kdmri_lib.distill.losses import uncertainty_weights
    from kdmri_lib.models.checkpoint import load_model

    teacher, _ = load_model(TEACHER)
    student, _ = load_model(checkpoint)
    sums = dict(better=0.0, fg=0.0, w_fg=0.0, w_better=0.0, mass=0.0, mass_better=0.0, wmass=0.0, wmass_better=0.0)
    for ds in contrast_sets(data).values():
        for i in range(len(ds)):
            b = collate([ds[i]])
            op = batch_operator(b, "sr", 4)
            with torch.no_grad():
                t, spread = teacher_tta(teacher, b["y"], op)
                s = student(b["y"], op)
            x = b["target"]
            w = uncertainty_weights(spread)
            fg = (x > 0.05 * x.amax()).float()
            better = ((t - x).abs() < (s - x).abs()).float() * fg
            gap = (t - s).abs() * fg
            sums["better"] += float(better.sum())
            sums["fg"] += float(fg.sum())
            sums["w_fg"] += float((w * fg).sum())
            sums["w_better"] += float((w * better).sum())
            sums["mass"] += float(gap.sum())
            sums["mass_better"] += float((gap * better).sum())
            sums["wmass"] += float((w * gap).sum())
            sums["wmass_better"] += float((w * gap * better).sum())
    out = {"teacher_better": round(sums["better"] / sums["fg"], 4),
           "weight_foreground": round(sums["w_fg"] / sums["fg"], 4),
           "weight_there": round(sums["w_better"] / max(sums["better"], 1.0), 4),
           "share_unweighted": round(sums["mass_better"] / sums["mass"], 4),
           "share_weighted": round(sums["wmass_better"] / sums["wmass"], 4)}
    log(f"[pilot] {checkpoint} against {TEACHER} on the scored slices (foreground): {out}")
    return out


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _seconds(fn, repeats: int) -> float:
    import time

    fn()   # warm-up (allocations, kernel selection)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def step_cost(preset: str = "paper", teacher_preset: Optional[str] = None, steps: int = 50000, seeds: int = 3,
              kspace_shape=(640, 368), image_shape=(320, 320), repeats: int = 2, device: str = "auto",
              teacher_step: bool = True, log=print) -> dict:
    """Seconds per training step at the knee protocol's size, and the knee ablation's cost at ``steps`` per row.

    Measured (one process, this device): a training step (forward, backward, AdamW) of the student and
    the U-Net at batch 1 and of the student at batch 2 (a distillation batch: one reference, one pool
    slice), the teacher's flip-averaged label of one slice (4 forward passes, no gradient) and one
    teacher training step (its pre-training and the correction; ``cs`` has no teacher memo, the masks
    are random). The estimate: student alone and U-Net ``steps`` x batch-1 step; ``student_matched``
    ``steps`` x batch-2 step; each distillation row ``steps`` x (batch-2 step + the teacher's passes:
    one per labelled slice, four with the flip-averaged label); ``full`` adds a teacher step every
    ``t_every`` student steps; the teacher's pre-training ``3 x steps`` teacher steps
    (the ablation's default budget); learned rows x ``seeds``. ``teacher_step=False`` skips the teacher's
    training step (its hours are then NaN).
    """
    from kdmri_lib.core import device as D
    from kdmri_lib.distill import teacher_tta
    from kdmri_lib.models import build_model
    from kdmri_lib.mri.physics import build_operator

    dev = D.get_device(device)
    H, W = image_shape

    def batch(b):
        op = build_operator("cs", 4, (H, W), seed=None, kspace_shape=kspace_shape)
        k = torch.randn(b, 1, *kspace_shape, dtype=torch.complex64)
        return op.measure(k).to(dev), op.to(dev)

    def train_step(model, b):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        y, op = batch(b)
        x = torch.rand(b, 1, H, W, device=dev)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = (model(y, op) - x).abs().mean()
            loss.backward()
            opt.step()
            _sync(dev)
        return _seconds(step, repeats)

    student = build_model("student", preset, "cs", 4).to(dev).train()
    unet = build_model("unet", preset, "cs", 4).to(dev).train()
    teacher = build_model("teacher", teacher_preset or preset, "cs", 4).to(dev)
    y1, op1 = batch(1)

    def label():
        with torch.no_grad():
            teacher_tta(teacher.eval(), y1, op1)
        _sync(dev)
    measure = {"student_b1": lambda: train_step(student, 1), "student_b2": lambda: train_step(student, 2),
               "unet_b1": lambda: train_step(unet, 1), "teacher_label_tta": lambda: _seconds(label, repeats)}
    if teacher_step:   # last: the largest (the paper teacher's step needs more than 24 GiB on a CPU)
        measure["teacher_b1"] = lambda: train_step(teacher.train(), 1)
    t = {}
    for name, fn in measure.items():
        t[name] = fn()
        log(f"[pilot] {name}: {t[name]:.3f} s")
    if not teacher_step:
        t["teacher_b1"] = float("nan")
    from kdmri_lib.distill import DistillConfig

    rows = {"unet": t["unet_b1"], "student": t["student_b1"], "student_matched": t["student_b2"]}
    one_pass = t["teacher_label_tta"] / 4
    for name in ("kd_vanilla", "kd_output", "kd_tta", "kd_uncertainty", "kd_dynamic", "full"):
        cfg = DistillConfig.preset(name)
        labelled = 1 if cfg.kd_on == "unlabelled" else 2          # pool slices only, or every slice of the batch
        rows[name] = t["student_b2"] + labelled * one_pass * (4 if cfg.teacher_tta else 1)
        if cfg.correction:
            rows[name] += t["teacher_b1"] / cfg.t_every
    hours = {k: v * steps * seeds / 3600 for k, v in rows.items()}
    hours["teacher pre-training"] = 3 * steps * t["teacher_b1"] / 3600
    out = {"device": D.describe(dev), "preset": preset, "teacher_preset": teacher_preset or preset,
           "seconds_per_step": {k: round(v, 3) for k, v in t.items()}, "steps_per_row": steps, "seeds": seeds,
           "hours": {k: round(v, 1) for k, v in hours.items()}, "total_hours": round(sum(hours.values()), 1)}
    log(f"[pilot] step cost at {kspace_shape[0]}x{kspace_shape[1]} k-space, {H}x{W} images: {out}")
    return out


def project_onto_measurements(pred: torch.Tensor, y: torch.Tensor, op) -> torch.Tensor:
    """Post-hoc data consistency for a magnitude estimate ``pred`` ``(B, 1, H, W)``: give it the
    phase of ``A^H y``, replace what was measured with the measurement (``z - A^H A z + A^H y``;
    ``A A^H = I``) and return the magnitude. Analysis only (the pilots' ``--dc``)."""
    from kdmri_lib.mri.physics import to_complex

    base = to_complex(op.adjoint(y))
    z = to_complex(pred).reshape(base.shape) * (base / base.abs().clamp_min(1e-12))
    return (z - op.adjoint(op.forward(z)) + base).abs().reshape(pred.shape)


def _region_masks(x: torch.Tensor, peak: float, threshold: float, rim: int) -> tuple:
    """``(head, rim, interior)`` masks of a target ``(1, 1, H, W)``: the head is above ``threshold``
    x ``peak``; its rim the head pixels within ``rim`` pixels (Chebyshev) of the air."""
    import torch.nn.functional as F

    head = x > threshold * peak
    inner = -F.max_pool2d(-head.double(), 2 * rim + 1, 1, rim) > 0.5
    return head, head & ~inner, inner


def _region_psnrs(pred: torch.Tensor, x: torch.Tensor, peak: float, masks: tuple) -> list[float]:
    """PSNR of the whole slice, the head, the air, the head's rim and its interior (peak ``peak``)."""
    import math

    head, rim, inner = masks
    err = (pred.double() - x) ** 2
    return [10 * math.log10(peak ** 2 / float(e.mean())) for e in (err, err[head], err[~head], err[rim], err[inner])]


def _regions_model(name: str):
    """A zoo name, a candidate built into ``runs/pretrained/candidates`` (``make pretrained``'s
    ``--only CANDIDATE``), or a parameter-free baseline (``zero_filled``, ``bicubic``, ...) of sr x4."""
    from kdmri_lib.models import BASELINES, build_model
    from kdmri_lib.pretrained import MANIFEST, load, names
    from kdmri_lib.pretrained.build import CANDIDATE_ZOO, CANDIDATES

    if name in BASELINES:
        return build_model(name, "tiny", "sr", 4)
    where = CANDIDATE_ZOO / MANIFEST.name if name in CANDIDATES and name not in names() else MANIFEST
    return load(name, manifest_path=where)[0].eval()


def regions_pilot(data: str = "data/demo", models: Sequence[str] = ("sr4_student_tiny", "sr4_teacher_source_small"),
                  split: str = "val", threshold: float = 0.05, dc: bool = False, rim: int = 5, tta: bool = False,
                  log=print) -> dict:
    """Where each model's error is: the head (target > ``threshold`` x the volume maximum) or the air.

    ``models``: zoo names or parameter-free baselines (``zero_filled``). Per model, slice by slice
    over ``split`` (``val`` or ``heldout``; sr x4), then averaged over slices: ``PSNR`` (the volume
    maximum as the peak, as fastMRI's), ``PSNR_head`` / ``PSNR_air`` (the same peak, the mean
    squared error of that region alone), ``PSNR_rim`` / ``PSNR_interior`` (the head's pixels
    within ``rim`` pixels of the air, and the rest of the head), ``air_share`` (the air's part of
    the summed squared error). With ``dc`` each PSNR again with the suffix ``_dc``: the same after
    :func:`project_onto_measurements` (what a final data-consistency step would change); with
    ``tta`` again with ``_tta``: the flip-averaged prediction
    (:func:`kdmri_lib.distill.teacher_cache.teacher_tta`, the label a teacher teaches with). Analysis
    only: these slices are never trained on.
    """
    import numpy as np

    from kdmri_lib.datasets.data import batch_operator, collate
    from kdmri_lib.distill import teacher_tta
    from kdmri_lib.engine.reconstruct import open_split

    ds = open_split(data, "sr", 4, split)
    keys = ("PSNR", "PSNR_head", "PSNR_air", "PSNR_rim", "PSNR_interior")
    out = {}
    for name in models:
        model = _regions_model(name)
        learned = any(True for _ in model.parameters())
        rows, se_air, se_all = {}, 0.0, 0.0
        with torch.no_grad():
            for i in range(len(ds)):
                b = collate([ds[i]])
                op = batch_operator(b, "sr", 4)
                pred = model(b["y"], op)
                x = b["target"].double()
                peak = float(b["max"][0]) / float(b["scale"][0])
                masks = _region_masks(x, peak, threshold, rim)
                variants = {"": pred}
                if dc:
                    variants["_dc"] = project_onto_measurements(pred, b["y"], op)
                if tta:   # a baseline's flips average to itself
                    variants["_tta"] = teacher_tta(model, b["y"], op, first=pred)[0] if learned else pred
                for suffix, p in variants.items():
                    rows.setdefault(suffix, []).append(_region_psnrs(p, x, peak, masks))
                err = (pred.double() - x) ** 2
                se_air += float(err[~masks[0]].sum()) * float(b["scale"][0]) ** 2
                se_all += float(err.sum()) * float(b["scale"][0]) ** 2
        out[name] = {"air_share": round(se_air / se_all, 4)}
        for suffix, r in rows.items():
            out[name] |= {f"{k}{suffix}": round(float(v), 3) for k, v in zip(keys, np.mean(r, axis=0))}
        log(f"[pilot] {name}: {out[name]} ({len(ds)} {split} slices)")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdmri_lib.pilots", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("correction", help="fine-tune the protocol's teacher on the target references alone")
    c.add_argument("--data", default="data/demo", help="demo data folder (default: data/demo)")
    c.add_argument("--params", choices=("head", "all"), default="head", help="what is fine-tuned (default: head)")
    c.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default: 1e-4)")
    c.add_argument("--steps", type=int, default=100, help="optimiser steps (default: 100)")
    c.add_argument("--references", choices=("protocol", "stratified"), default="protocol",
                   help="the ablation's references, or one training volume per contrast (default: protocol)")
    c.add_argument("--pool-weight", type=float, default=0.0,
                   help="weight of the pool's self-ensembled labels (default: 0, none)")
    c.add_argument("--rehearsal", type=float, default=0.0,
                   help="weight of an L1 batch from the teacher's own source-domain slices per step (default: 0)")
    t = sub.add_parser("tta", help="single pass against flip-averaged prediction, per contrast")
    t.add_argument("--data", default="data/demo", help="demo data folder (default: data/demo)")
    t.add_argument("--checkpoint", default=None, help="also score this checkpoint (e.g. a distilled student)")
    f = sub.add_parser("confidence", help="where the uncertainty confidence puts the teacher's weight")
    f.add_argument("--data", default="data/demo", help="demo data folder (default: data/demo)")
    f.add_argument("--checkpoint", default="runs/bench/kd_output/seed0/last.pt",
                   help="a distilled student (default: runs/bench/kd_output/seed0/last.pt)")
    k = sub.add_parser("step-cost", help="seconds per training step at the knee's size and the knee ablation's cost")
    k.add_argument("--preset", default="paper", help="student / U-Net preset (default: paper)")
    k.add_argument("--teacher-preset", default=None, help="teacher preset (default: --preset)")
    k.add_argument("--steps", type=int, default=50000, help="training steps per row (default: 50000)")
    k.add_argument("--seeds", type=int, default=3, help="seeds per learned row (default: 3)")
    k.add_argument("--repeats", type=int, default=2, help="timed passes per measurement (default: 2)")
    k.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    k.add_argument("--out", default=None, help="also write the result to this JSON file")
    k.add_argument("--no-teacher-step", action="store_true",
                   help="skip the teacher's training step (the paper teacher's needs more than 24 GiB on a CPU)")
    r = sub.add_parser("regions", help="each zoo model's squared error in the head and in the air around it")
    r.add_argument("--data", default="data/demo", help="demo data folder (default: data/demo)")
    r.add_argument("--models", default="sr4_student_tiny,sr4_teacher_source_small,sr4_unet_tiny",
                   help="comma-separated zoo names or baselines (zero_filled)")
    r.add_argument("--split", choices=("val", "heldout"), default="val", help="which slices (default: val)")
    r.add_argument("--dc", action="store_true", help="also score each output after a data-consistency projection")
    r.add_argument("--tta", action="store_true", help="also score each model's flip-averaged prediction")
    a = p.parse_args(argv)
    try:
        if a.what == "correction":
            check_int("--steps", a.steps, minimum=1)
            check_float("--lr", a.lr, minimum=0.0, strict_min=True)
            check_float("--pool-weight", a.pool_weight, minimum=0.0)
            check_float("--rehearsal", a.rehearsal, minimum=0.0)
            correction_pilot(a.data, a.params, a.lr, a.steps, a.references, a.pool_weight, rehearsal=a.rehearsal)
        elif a.what == "step-cost":
            from kdmri_lib.core.errors import check_choice
            from kdmri_lib.models import PRESETS

            check_choice("--preset", a.preset, PRESETS)
            if a.teacher_preset is not None:
                check_choice("--teacher-preset", a.teacher_preset, PRESETS)
            for name in ("steps", "seeds", "repeats"):
                check_int(f"--{name}", getattr(a, name), minimum=1)
            out = step_cost(a.preset, a.teacher_preset, a.steps, a.seeds, repeats=a.repeats, device=a.device,
                            teacher_step=not a.no_teacher_step, log=lambda m: print(m, flush=True))
            if a.out:
                import platform

                from kdmri_lib.core.atomic import write_json

                cmd = "python -m kdmri_lib.pilots " + " ".join(argv if argv is not None else sys.argv[1:])
                def clean(v):   # NaN (not measured) as null
                    if isinstance(v, dict):
                        return {k: clean(x) for k, x in v.items()}
                    return None if isinstance(v, float) and v != v else v
                write_json(a.out, {**clean(out), "command": cmd, "torch": str(torch.__version__), "machine": platform.machine(),
                                   "note": "null: not measured (--no-teacher-step)"})
        elif a.what == "regions":
            regions_pilot(a.data, [m.strip() for m in a.models.split(",") if m.strip()], split=a.split, dc=a.dc, tta=a.tta)
        elif a.what == "confidence":
            confidence_pilot(a.data, a.checkpoint)
        else:
            tta_pilot(a.data, a.checkpoint)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
