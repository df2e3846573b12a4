"""Collect, score and report every model of a run folder (notebook 05 and ``make demo``).

A run folder (``run_dir``) holds what the notebooks train::

    run_dir/teacher/best.pt          the ViT teacher (notebook 02)
    run_dir/student/best.pt          the student trained alone (notebook 03)
    run_dir/distill/best.pt          the distilled student (notebook 04)
    run_dir/distill/teacher_last.pt  notebook 04's (source-domain) teacher after correction while teaching
    run_dir/unet/best.pt             a fastMRI U-Net, if one was trained

:func:`collect_methods` loads what exists next to the parameter-free baselines;
:func:`summary_rows` scores them (fastMRI's metrics on the held-out slices, parameters, FLOPs and
latency at 320 x 320); :func:`write_results` writes ``results.md`` and ``results.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from kdmri_lib.core.atomic import write_json, write_text

#: (display name, checkpoint path inside run_dir), in the order of the results table
#: (display name, path in run_dir): notebook 04's pair is the distilled student and its control (the
#: student alone on the same references, final weights); notebook 03's student trained on every slice
CHECKPOINTS = (
    ("U-Net (fastMRI)", "unet/best.pt"),
    ("student alone", "student_refs/last.pt"),
    ("student · every training slice", "student/best.pt"),
    ("distilled student", "distill/last.pt"),
    ("teacher", "teacher/best.pt"),
    ("source teacher of 04, after correction", "distill/teacher_last.pt"),   # not the "teacher" row above
)
BASELINE_NAMES = {"zero_filled": "zero-filled", "lowres": "low-res (nearest)", "bicubic": "bicubic"}


def collect_methods(run_dir: str | os.PathLike, task: str, factor: int, device: str | torch.device = "cpu",
                    pretrained: bool = True) -> dict:
    """Baselines, every checkpoint of :data:`CHECKPOINTS` found in ``run_dir`` (for this task) and,
    with ``pretrained``, every model of the shipped zoo for this task and factor.

    Returns:
        dict display name -> ``{"model": nn.Module, "source": str}`` (``source``: checkpoint path
        relative to ``run_dir``, ``"pretrained:NAME"`` or ``"baseline"``).
    """
    from kdmri_lib.models import baselines_for, build_model
    from kdmri_lib.models.checkpoint import load_model

    run_dir = Path(run_dir)
    out = {}
    for b in baselines_for(task):
        out[BASELINE_NAMES.get(b, b)] = {"model": build_model(b, "tiny", task, factor).to(device), "source": "baseline"}
    for name, rel in CHECKPOINTS:
        p = run_dir / rel
        if p.exists():
            model, _ = load_model(p, device=device, expect={"task": task, "factor": factor})
            out[name] = {"model": model.eval(), "source": rel}
    if pretrained:
        from kdmri_lib import pretrained as zoo

        labels = {"teacher": "teacher", "student": "student alone", "unet": "U-Net (fastMRI)"}
        for e in zoo.manifest()["models"]:
            if (e["task"], int(e["factor"])) == (task, int(factor)):
                model, _ = zoo.load(e["name"], device=device)
                out[f"{labels.get(e['kind'], e['kind'])} · zoo {e['name']}"] = {"model": model.eval(),
                                                                             "source": zoo.PREFIX + e["name"]}
    return out


def score_methods(methods: Mapping[str, dict], data_dir, task: str, factor: int, device="cpu",
                  val_slices: Optional[int] = None, split: str = "val", progress=None) -> dict:
    """fastMRI's metrics of every method on the held-out split: name -> ``evaluate`` result."""
    from kdmri_lib.engine.reconstruct import evaluate

    scores = {}
    for name, m in methods.items():
        if progress:
            progress(name)
        scores[name] = evaluate(m["model"], data_dir, split, task, factor, device=device, val_slices=val_slices)
    return scores


def summary_rows(methods: Mapping[str, dict], scores: Mapping[str, dict], task: str, factor: int,
                 shape: Sequence[int] = (320, 320), latency: bool = True, device="cpu", repeats: int = 3) -> list[dict]:
    """One row per method: ``method``, ``source``, ``params``, ``GFLOPs`` and ``latency_ms`` at
    ``shape`` (latency optional), and the mean ``PSNR``, ``SSIM``, ``NMSE`` of ``scores``."""
    from kdmri_lib.core.resources import catch_oom
    from kdmri_lib.experiments.benchmark import count_params, model_flops, profile_model

    rows = []
    for name, m in methods.items():
        model = m["model"]
        params = count_params(model)
        if getattr(model, "kind", None) in ("teacher", "student", "unet"):
            gflops = model_flops(model.kind, model.preset, task, factor, shape, **_overrides(model)) / 1e9
        else:
            gflops = 0.0
        row = {"method": name, "source": m["source"], "params": params, "GFLOPs": gflops}
        if latency:
            with catch_oom(f"timing {name} at {shape[0]}x{shape[1]}", device,
                           note="Set profile_latency=False, or time on the CPU (device='cpu')"):
                row["latency_ms"] = profile_model(model, task, factor, shape, device=device, repeats=repeats, warmup=1,
                                                  flops=False, budget_s=10.0)["latency_ms"]
        means = scores[name]["means"]
        row.update({k: means[k] for k in ("PSNR", "SSIM", "NMSE")})
        rows.append(row)
    return rows


def what_it_shows(rows: Sequence[Mapping], where: str = "the held-out slices", metric: str = "PSNR",
                  baseline: str = "zero-filled") -> list[str]:
    """Sentences that state what a results table shows, computed from it (never typed by hand).

    Args:
        rows: dicts with ``method`` and ``metric`` (as :func:`summary_rows` gives them).
        where: what the rows were scored on, for the sentences.
        baseline: the parameter-free reference every learned model must beat.

    Returns:
        The winner and its margin over the runner-up and the baseline; every learned model below
        the baseline by name; the teacher against the student alone, and the distilled student
        against the student alone, when both are in the table (rows named exactly ``teacher``,
        ``student alone``, ``distilled student`` — the same run's budgets — else the best row whose
        name starts so).
    """
    # baselines may be named by their kind ("zero_filled") or their display name ("zero-filled")
    vals = {BASELINE_NAMES.get(r["method"], r["method"]): float(r[metric]) for r in rows if r.get(metric) is not None}
    if not vals:
        return []
    unit = " dB" if metric == "PSNR" else ""
    order = sorted(vals, key=vals.get, reverse=True)
    out = [f"On {where}, {order[0]} is best ({vals[order[0]]:.2f}{unit} {metric})"
           + (f", {vals[order[0]] - vals[order[1]]:+.2f}{unit} over {order[1]}." if len(order) > 1 else ".")]
    base = vals.get(baseline)
    if base is not None:
        below = [m for m in order if m not in BASELINE_NAMES.values() and vals[m] < base]
        above = [m for m in order if m not in BASELINE_NAMES.values() and vals[m] >= base]
        if above:
            out.append(f"Above {baseline} ({base:.2f}{unit}): " + ", ".join(f"{m} {vals[m] - base:+.2f}{unit}" for m in above) + ".")
        if below:
            out.append(f"Below {baseline}, i.e. worse than doing nothing learned: "
                       + ", ".join(f"{m} {vals[m] - base:+.2f}{unit}" for m in below) + ".")

    def first(prefix):   # the row of exactly this name (the same run's budget), else the best of its kind
        return prefix if prefix in vals else next((m for m in order if m.startswith(prefix)), None)

    teacher, alone, distilled = first("teacher"), first("student alone"), first("distilled student")
    if teacher and alone:
        d = vals[teacher] - vals[alone]
        out.append(f"The teacher ({teacher}) is {abs(d):.2f}{unit} {'above' if d >= 0 else 'below'} the student trained "
                   f"alone ({alone})" + ("." if d >= 0 else ": it has little to teach here."))
    if distilled and alone:
        d = vals[distilled] - vals[alone]
        out.append(f"In this run (one seed, so no spread), distillation {'helped' if d > 0 else 'did not help'}: the "
                   f"distilled student is {d:+.2f}{unit} against the student alone ({alone}).")
    return out


def reference_costs(task: str, factor: int, shape: Sequence[int] = (320, 320)) -> dict[str, dict]:
    """The cost of two models this toolkit does not train for the demo, for the quality-against-cost
    plot (they get a cost, not a PSNR): the released student's layout rebuilt
    (:class:`~kdmri_lib.models.CHPNetLike`) and the paper-size teacher. ``{label: {"GFLOPs", "params"}}``
    at ``shape``, counted on the ``meta`` device (nothing is allocated)."""
    from kdmri_lib.experiments.benchmark import count_flops, count_params, model_flops, sample_measurement
    from kdmri_lib.models import CHPNetLike, build_model

    y, op = sample_measurement(task, factor, shape, 1)
    with torch.device("meta"):
        released = CHPNetLike(task, factor).eval()
        teacher = build_model("teacher", "paper", task, factor)
    return {"released student's layout (CHPNet-like)": {"GFLOPs": count_flops(released, y.to("meta"), op.to("meta")) / 1e9,
                                                        "params": count_params(released)},
            "paper-size teacher (Swin)": {"GFLOPs": model_flops("teacher", "paper", task, factor, shape) / 1e9,
                                          "params": count_params(teacher)}}


def _overrides(model) -> dict:
    return {k: v for k, v in getattr(model, "config", {}).items() if k not in ("kind", "preset", "task", "factor")}


def per_slice(scores: Mapping[str, dict], metric: str = "PSNR") -> dict[str, list[float]]:
    """name -> list of per-slice values of ``metric`` (for box plots)."""
    return {n: [s[metric] for s in r["per_slice"]] for n, r in scores.items()}


def to_markdown(rows: Sequence[Mapping], shape: Sequence[int] = (320, 320)) -> str:
    """The results table in Markdown."""
    lat = any("latency_ms" in r for r in rows)
    head = ["method", "params", f"GFLOPs ({shape[0]}x{shape[1]})"] + ([f"latency ms ({shape[0]}x{shape[1]})"] if lat else []) \
        + ["PSNR (dB)", "SSIM", "NMSE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['params'] / 1e6:.3f} M" if r["params"] else "0", f"{r['GFLOPs']:.2f}"]
        if lat:
            cells.append(f"{r['latency_ms']:.0f}" if r.get("latency_ms") is not None else "")
        cells += [f"{r['PSNR']:.2f}", f"{r['SSIM']:.4f}", f"{r['NMSE']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(run_dir: str | os.PathLike, rows: Sequence[Mapping], meta: Mapping,
                  shape: Sequence[int] = (320, 320)) -> tuple[Path, Path]:
    """Write ``run_dir/results.md`` and ``run_dir/results.json`` (atomically)."""
    run_dir = Path(run_dir)
    md = [f"# kdmri results: {meta.get('task')} x{meta.get('factor')}", "",
          f"Held-out slices of `{meta.get('data')}` ({meta.get('slices', '?')} slices), fastMRI's metrics "
          f"(volume-wise PSNR/SSIM/NMSE, mean over volumes). Parameters and FLOPs of the models as trained; "
          f"FLOPs and latency at {shape[0]}x{shape[1]} output on {meta.get('device', '?')}.", "", to_markdown(rows, shape), ""]
    md_path = write_text(run_dir / "results.md", "\n".join(md))
    json_path = write_json(run_dir / "results.json", {"meta": dict(meta), "rows": [dict(r) for r in rows]})
    return md_path, json_path


def natural_transfer(methods: Mapping[str, dict], image_dir, task: str, factor: int, device="cpu") -> list[dict]:
    """Every method on the natural images of ``image_dir`` (e.g. the Set5 stand-in): one row per
    (image, method) with PSNR / SSIM / NMSE (fastMRI's definitions on the single image)."""
    from kdmri_lib.datasets.data import NaturalImageDataset, batch_operator, collate, to_device
    from kdmri_lib.mri.metrics import volume_metrics

    ds = NaturalImageDataset(image_dir, task, factor)
    rows = []
    with torch.no_grad():
        for i in range(len(ds)):
            b = to_device(collate([ds[i]]), device)
            op = batch_operator(b, task, factor).to(device)
            tgt = b["target"][0, 0].float().cpu().numpy()
            for name, m in methods.items():
                pred = m["model"](b["y"], op)[0, 0].float().cpu().numpy()
                rows.append({"image": ds.files[i].stem, "method": name, **volume_metrics(tgt[None], pred[None])})
    return rows


def mean_by(rows: Sequence[Mapping], key: str, metrics: Sequence[str] = ("PSNR", "SSIM", "NMSE")) -> list[dict]:
    """Average ``metrics`` of ``rows`` grouped by ``key`` (order of first appearance)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return [{key: k, **{m: float(np.mean([r[m] for r in v])) for m in metrics}} for k, v in groups.items()]


def _read_ablation(path: Path) -> Optional[dict]:
    """``ablation.json`` of a folder (or the file itself) as ``{"settings", "meta", "rows", "source"}``;
    None when absent or in a format without settings (a table whose task is unknown is not shown)."""
    import json

    p = path / "ablation.json" if path.is_dir() or not path.suffix else path
    if not p.is_file():
        return None
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict) or "rows" not in data:
        return None
    return {**data, "source": str(p)}


def short_run_context(steps: int, task: str, factor: int, path: Optional[Path] = None) -> list[str]:
    """Sentences that set a short notebook run (``steps`` optimiser steps per student) beside the
    shipped ablation of the same task and factor, computed from its ``ablation.json``: its budget and
    every paired difference against the student alone on the target-domain slices. Empty when there
    is no matching ablation."""
    found = _read_ablation(Path(path) if path is not None else shipped_ablation())
    if found is None or found["settings"].get("task") != task or int(found["settings"].get("factor", -1)) != int(factor):
        return []
    st = found["settings"]
    budget = int(st["epochs"]) * int(st["steps_per_epoch"])
    comps = [c for c in found["meta"].get("comparisons", []) if c["b"] == "student" and c["set"] == "scored"]
    out = [f"This run trained {steps} steps per student; the shipped ablation trained {budget} "
           f"({len(st['seeds'])} seeds, teacher {st.get('teacher')}) on the same protocol and measured, against the "
           f"student alone on the target-domain slices:"]
    out += [f"  {c['a']}: {c['mean']:+.2f} dB (95 % interval {c['lo']:+.2f} to {c['hi']:+.2f})" for c in comps]
    if steps < budget:
        out.append("Short runs are limited by their steps rather than by their data (measured in docs/training.md, "
                   "'Why 2 x 800 steps'), and what the teacher adds is data: its labels on the measurement-only pool.")
    return out


def shipped_ablation() -> Path:
    """The default run's ``ablation.json`` shipped with the zoo (``kdmri_lib/pretrained/ablation.json``)."""
    from kdmri_lib.pretrained import ABLATION

    return ABLATION


def load_or_run_ablation(ablation_dir, fallback_dir, run: bool, task: str, factor: int, preset: str = "tiny",
                         epochs: int = 1, steps_per_epoch: Optional[int] = 60, data_dir="data/demo",
                         device: str = "auto", seed: int = 0, val_slices: Optional[int] = None,
                         shipped: bool = True) -> Optional[dict]:
    """The distillation ablation for notebook 05, only when its settings match ``task`` and ``factor``.

    Looks in ``ablation_dir`` (``make bench-distill``), then ``fallback_dir`` (an earlier small
    run), then (``shipped``) the zoo's copy of the default run; else, with ``run=True``, runs
    :func:`kdmri_lib.experiments.ablation.run` into ``fallback_dir`` with the given small budget (one seed).

    Returns:
        dict with ``rows`` (display rows: row, params, GFLOPs, PSNR, PSNR_sd, SSIM, held-out PSNR,
        seeds), ``comparisons`` (sentences with the paired bootstrap intervals), ``source``,
        ``budget`` (a sentence), ``settings`` and ``raw`` (the JSON rows); or None.
    """
    def matches(found: Optional[dict]) -> bool:
        if found is None:
            return False
        st = found["settings"]
        return st.get("task") == task and int(st.get("factor", -1)) == int(factor)

    places = [Path(ablation_dir), Path(fallback_dir)] + ([shipped_ablation()] if shipped else [])
    found = next((c for c in map(_read_ablation, places) if matches(c)), None)
    if found is None and run:
        from kdmri_lib.experiments.ablation import AblationSettings
        from kdmri_lib.experiments.ablation import run as run_ablation

        st = AblationSettings(out=str(fallback_dir), data=str(data_dir), task=task, factor=factor, preset=preset,
                              epochs=epochs, steps_per_epoch=steps_per_epoch, seeds=(seed,), device=device,
                              val_slices=val_slices, progress=False)
        run_ablation(st)
        found = _read_ablation(Path(fallback_dir))
    if found is None:
        return None
    from kdmri_lib.experiments.ablation_report import comparison_sentences, volume_label, volume_sentences

    st = found["settings"]
    budget = (f"{st.get('epochs')} epochs x {st.get('steps_per_epoch')} steps per run, seeds "
              f"{', '.join(map(str, st.get('seeds', [])))}, {st.get('preset')} student, teacher {st.get('teacher')}, "
              f"{st.get('protocol', {}).get('references')} target references")
    rows = [{"row": r.get("label", r.get("name")), "params": r.get("params"), "GFLOPs": r.get("GFLOPs"),
             "PSNR": r.get("PSNR"), "PSNR_sd": r.get("PSNR_sd"), "SSIM": r.get("SSIM"),
             **{f"{volume_label(v)} PSNR": p for v, p in (r.get("volume_PSNR") or {}).items()},
             "held-out PSNR": r.get("heldout_PSNR"), "seeds": r.get("seeds")} for r in found["rows"]]
    comps = comparison_sentences(found["rows"], found.get("meta", {}).get("comparisons", []))
    return {"rows": rows, "comparisons": comps, "pairs": found.get("meta", {}).get("comparisons", []),
            "by_volume": volume_sentences(found["rows"], found.get("meta", {}).get("split", "")),
            "source": found["source"], "budget": budget, "settings": st,
            "raw": found["rows"], "command": found.get("meta", {}).get("command")}
