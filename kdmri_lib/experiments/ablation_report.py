"""Reporting of a finished ablation (read-only: it trains nothing): the paired per-slice differences
with bootstrap intervals, the comparisons the acceptance names, the Markdown table, the README's
summary block and the figure. :mod:`kdmri_lib.experiments.ablation` computes the rows these functions read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from kdmri_lib.core.atomic import atomic_write
from kdmri_lib.distill import ABLATION_ROWS

__all__ = ["volume_means", "volume_label", "volume_sentences", "paired_difference", "comparisons", "comparison_sentences", "summary_markdown", "to_markdown", "figure"]



def volume_means(slice_psnr: Sequence[float], slice_files: Sequence[str]) -> dict[str, float]:
    """``{file name: mean PSNR of its slices}``, in the order the files first appear (the demo's scored
    volumes are one per contrast, so this is the per-contrast view of a row)."""
    if len(slice_psnr) != len(slice_files):
        raise ValueError(f"volume_means: {len(slice_psnr)} slice values for {len(slice_files)} slice files")
    out: dict[str, list[float]] = {}
    for v, f in zip(slice_psnr, slice_files):
        out.setdefault(str(f), []).append(float(v))
    return {f: float(np.mean(v)) for f, v in out.items()}


def paired_difference(a: dict, b: dict, key: str = "slice_PSNR", reps: int = 10000, seed: int = 0) -> dict:
    """Mean per-slice PSNR difference ``a - b`` (each slice's PSNR averaged over the row's seeds)
    and its 95 % bootstrap interval over slices (``reps`` resamples, fixed ``seed``)."""
    d = np.asarray(a[key], dtype=float) - np.asarray(b[key], dtype=float)
    if d.size == 0:
        raise ValueError("paired_difference: no slices")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(reps, d.size))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "slices": int(d.size),
            "excludes_zero": bool(lo > 0 or hi < 0)}


def comparisons(rows: Sequence[dict], extra: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """Paired differences (scored set, and held-out where present) of ``full`` against ``student``,
    ``kd_vanilla`` and ``kd_tta`` (its frozen-teacher twin: the correction's effect on the student),
    of ``kd_vanilla`` and ``kd_output`` (output-space KD on the pool, the first row without adapters)
    against ``student``, of the teacher against the student and of the
    corrected teacher against the teacher. Each: ``{"a", "b", "set", "mean", "lo", "hi", "slices",
    "excludes_zero"}``. ``extra``: more ``(a, b)`` pairs (a candidate row against its base)."""
    by = {r["name"]: r for r in rows}
    pairs = [("full", "student"), ("full", "kd_vanilla"), ("full", "kd_tta"), ("kd_vanilla", "student"),
             ("kd_output", "student"), ("teacher", "student"), ("teacher_corrected", "teacher"), *extra]
    out = []
    for a, b in pairs:
        if a not in by or b not in by:
            continue
        for key, pre in (("scored", ""), ("heldout", "heldout_")):
            if f"{pre}slice_PSNR" in by[a] and f"{pre}slice_PSNR" in by[b]:
                out.append({"a": a, "b": b, "set": key, **paired_difference(by[a], by[b], f"{pre}slice_PSNR")})
    return out


def comparison_sentences(rows: Sequence[dict], comps: Sequence[dict]) -> list[str]:
    lines = []
    for c in comps:
        where = "target-domain validation slices" if c["set"] == "scored" else "held-out real scan"
        verdict = ("better" if c["lo"] > 0 else "worse" if c["hi"] < 0 else "no difference the interval can resolve")
        lines.append(f"`{c['a']}` - `{c['b']}` on the {where}: {c['mean']:+.3f} dB (95 % bootstrap interval "
                     f"{c['lo']:+.3f} to {c['hi']:+.3f}, {c['slices']} slices) -> {verdict}")
    return lines


def volume_label(fname: str) -> str:
    """A scored volume's column title: its contrast for the demo's volumes (``T2w volume``), else its file."""
    from kdmri_lib.datasets.demo_data import _PREFIX

    stem = fname.split("_")[0]
    contrast = {prefix: c for c, prefix in _PREFIX.items()}.get(stem)
    return f"{contrast} volume" if contrast else f"`{fname}`"


def volume_sentences(rows: Sequence[dict], split: str = "") -> list[str]:
    """What the per-volume columns show, computed from them: each learned row's PSNR per scored volume
    against the student alone, and which contrasts the references cover (from the split text,
    :func:`kdmri_lib.datasets.protocol.describe`)."""
    by = {r["name"]: r for r in rows if r.get("volume_PSNR")}
    if "student" not in by or len(by["student"]["volume_PSNR"]) < 2:
        return []
    vols = list(by["student"]["volume_PSNR"])
    labels = [volume_label(v).replace(" volume", "") for v in vols]
    base = by["student"]["volume_PSNR"]
    out = [f"By scored volume ({' / '.join(labels)}): student alone "
           + " / ".join(f"{base[v]:.2f}" for v in vols) + " dB."]
    for name in [n for n in by if n not in ("student", "zero_filled", "lowres", "bicubic", "student_matched")]:
        vp = by[name]["volume_PSNR"]
        out.append(f"  {name}: " + " / ".join(f"{vp[v] - base[v]:+.2f}" for v in vols) + " dB against the student alone")
    m = re.search(r"references:[^\n]*\(([^()]+)\)", split)
    refs = m.group(1).split(", ") if m else []
    covered = {volume_label(f).replace(" volume", "") for f in refs}
    missing = [lab for lab in labels if lab not in covered]
    if refs and missing:
        out.append(f"The references ({', '.join(refs)}) are all {' / '.join(sorted(covered))}: on the "
                   f"{' / '.join(missing)} volume a student learns only from its teacher's labels.")
    return out


def _interval(c: dict) -> str:
    verdict = "better" if c["lo"] > 0 else "worse" if c["hi"] < 0 else "no resolved difference"
    return f"{c['mean']:+.2f} dB [{c['lo']:+.2f}, {c['hi']:+.2f}] ({verdict})"


def summary_markdown(result: dict) -> str:
    """A short Markdown summary of an ablation (the README's): each row's PSNR (mean +- sd over seeds)
    on the target-domain slices, per scored volume and on the held-out scan; one line per paired
    comparison (both sets, 95 % bootstrap intervals); the budget and the command."""
    s, meta, rows = result["settings"], result["meta"], result["rows"]
    vols = list((rows[0].get("volume_PSNR") or {})) if rows else []
    lines = ["| row | seeds | target PSNR (dB) | " + "".join(f"{volume_label(v)} | " for v in vols) + "held-out PSNR (dB) |",
             "|---|---:|---:|" + "---:|" * len(vols) + "---:|"]
    for r in rows:
        sd = f" +- {r['PSNR_sd']:.2f}" if r["seeds"] > 1 else ""
        hp = f"{r['heldout_PSNR']:.2f}" if "heldout_PSNR" in r else "-"
        vp = r.get("volume_PSNR") or {}
        lines.append(f"| {r['label']} (`{r['name']}`) | {r['seeds'] if r['params'] else '-'} | {r['PSNR']:.2f}{sd} | "
                     + "".join(f"{vp[v]:.2f} | " if v in vp else "- | " for v in vols) + f"{hp} |")
    by_pair: dict = {}
    for c in meta.get("comparisons", []):
        by_pair.setdefault((c["a"], c["b"]), {})[c["set"]] = c
    lines.append("")
    for (a, b), sets in by_pair.items():
        parts = [f"{_interval(sets['scored'])} on the target slices"] if "scored" in sets else []
        parts += [f"{_interval(sets['heldout'])} on the held-out scan"] if "heldout" in sets else []
        lines.append(f"* `{a}` - `{b}`: " + "; ".join(parts))
    lines += ["", f"Paired per-slice differences with 95 % bootstrap intervals. {s['epochs']} x {s['steps_per_epoch']} "
                  f"steps per run, seeds {', '.join(map(str, s['seeds']))}, teacher `{s['teacher']}`, "
                  f"{s['protocol']['references']} target references; `{meta.get('command')}` on {meta['device']} "
                  f"({meta['date']}); {_cost_text(rows, meta, wall=False)}."]
    return "\n".join(lines)


def _cost_text(rows: Sequence[dict], meta: dict, wall: bool = True) -> str:
    """The training runs' summed run time (whichever invocation trained them) and this invocation's wall time."""
    runs = [p["train_time_s"] for r in rows for p in r.get("per_seed", []) if p.get("train_time_s")]
    parts = [f"{len(runs)} training runs of {sum(runs) / 60:.0f} min in all (summed run times; `--jobs N` runs N at "
             f"once)"] if runs else []
    if wall or not runs:
        parts.append(f"this invocation {meta['wall_time_s'] / 60:.0f} min wall")
    return ", ".join(parts)


def to_markdown(result: dict) -> str:
    s, meta, rows = result["settings"], result["meta"], result["rows"]
    p = s["protocol"]
    sc = meta["sets"]["scored"]
    held = meta["sets"].get("heldout")
    lines = ["# Distillation ablation", "",
             "## Protocol", "",
             f"* teacher: `{s['teacher']}`, pre-trained with ground truth on the source domain "
             f"(`{'`, `'.join(p['source'])}` files of the training split) only;",
             f"* target domain: the `{'`, `'.join(p['target'])}` training files: {p['references']} reference slices "
             f"with ground truth (whole volumes, split seed {p['split_seed']}), every other target volume a "
             f"measurement-only pool (its ground truth is never read);",
             *([f"* the split: {meta['split']};".replace("\n", "; ")] if meta.get("split") else []),
             "* student alone and U-Net: the references only; distillation rows: the references + the pool "
             "(interleaved 1:1, batches twice as large, so that every row sees the references equally often), the "
             "teacher's label on the pool; `student_matched`: the student alone with the distillation rows' batch "
             "(their student compute); `full`'s teacher is corrected on the references while it rehearses its own "
             "source-domain slices;",
             f"* every learned row: {s['epochs']} epochs x {s['steps_per_epoch']} steps, seeds "
             f"{', '.join(map(str, s['seeds']))}, each model kind's recipe (`kdmri_lib.engine.train.RECIPES`), "
             f"task `{s['task']}` x{s['factor']}, preset `{s['preset']}`;",
             f"* scored (final weights, fastMRI's metric functions): {sc['slices']} target-domain validation slices "
             f"({', '.join(sc['files'])})" + (f" and the {held['slices']} slices of the held-out real scan" if held else "")
             + "; no model saw their ground truth.", "",
             "## Results", "",
             "PSNR / SSIM / NMSE: mean over seeds (+- sample sd where there are several seeds).", "",
             "| row | params | GFLOPs | PSNR (dB) | SSIM | NMSE | held-out PSNR (dB) | train time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sd = f" +- {r['PSNR_sd']:.3f}" if r["seeds"] > 1 else ""
        hsd = f" +- {r['heldout_PSNR_sd']:.3f}" if r["seeds"] > 1 and "heldout_PSNR_sd" in r else ""
        hp = f"{r['heldout_PSNR']:.3f}{hsd}" if "heldout_PSNR" in r else "-"
        lines.append(f"| {r['label']} (`{r['name']}`) | {r['params']:,} | {r['GFLOPs']:.3f} | {r['PSNR']:.3f}{sd} | "
                     f"{r['SSIM']:.4f} | {r['NMSE']:.5f} | {hp} | {r['train_time_s']:.0f} |")
    vols = [f for f in (rows[0].get("volume_PSNR") or {})] if rows else []
    if len(vols) > 1:
        lines += ["", "### By scored volume", "",
                  "Mean PSNR (dB) of each scored volume's slices (seed-averaged); the demo's scored volumes are one "
                  "per contrast, and the references are whole volumes, so a contrast can lack references.", "",
                  "| row | " + " | ".join(f"`{f}`" for f in vols) + " |", "|---|" + "---:|" * len(vols)]
        for r in rows:
            vp = r.get("volume_PSNR") or {}
            lines.append(f"| `{r['name']}` | " + " | ".join(f"{vp[f]:.3f}" if f in vp else "-" for f in vols) + " |")
    cl = comparison_sentences(rows, meta.get("comparisons", []))
    if cl:
        lines += ["", "## Paired differences", "",
                  "Per-slice PSNR (each slice averaged over the row's seeds), difference of the two rows, with a 95 % "
                  "bootstrap interval over slices:", ""] + [f"* {c}" for c in cl]
    lines += ["", f"Command: `{meta['command'] or 'kdmri_lib.experiments.ablation.run(...)'}`  ",
              f"Cost: {_cost_text(rows, meta)}; on {meta['device']}"
              + (f" ({len(meta['reused'])} run(s) reused from an earlier invocation with the same settings)"
                 if meta["reused"] else "")
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
    err = [r.get("PSNR_sd", 0.0) for r in rows][::-1]
    colors = ["#999999" if r["params"] == 0 else "#d62728" if r["name"] in ABLATION_ROWS else "#1f77b4"
              for r in rows][::-1]
    ax.barh(names, psnr, xerr=err, color=colors, error_kw={"ecolor": "black", "capsize": 2, "lw": 0.8})
    base = [r["PSNR"] for r in rows if r["name"] == "student"]
    if base:
        ax.axvline(base[0], color="#1f77b4", lw=0.8, ls="--", label="student alone")
        ax.legend(loc="lower right", fontsize=8)
    lo = min(psnr) - 0.5
    ax.set_xlim(lo, max(p + e for p, e in zip(psnr, err)) + 0.4)
    for y, (v, e) in enumerate(zip(psnr, err)):
        ax.text(v + e + 0.02, y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("PSNR (dB) on the target-domain validation slices (mean +- sd over seeds)")
    ax.set_title("Distillation ablation (grey: baselines, red: distillation rows)")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
