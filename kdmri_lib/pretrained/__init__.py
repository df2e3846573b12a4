r"""The pretrained zoo shipped with the package: verified checkpoints with a card each.

``manifest.json`` (beside this file, package data) lists one entry per model::

    name      "sr4_teacher_tiny"                  what ``load(name)`` and ``pretrained:NAME`` take
    file      "sr4_teacher_tiny.pt"               relative to the manifest
    sha256    hex digest of that file             checked before the file is opened
    kind, preset, task, factor                    the model (``build_model`` arguments)
    metrics   {"PSNR", "SSIM", "NMSE", "slices", "volumes"} on the demo validation slices
              (fastMRI's metric functions, volume-wise means: :func:`kdmri_lib.engine.reconstruct.evaluate`)
    heldout   the same on ``singlecoil_heldout`` (real anatomy that no model trains on), or None
    data      {"digest", "manifest_sha256"} of the demo data it was trained and scored on
    command   the exact command that made it (``make pretrained`` runs it for every entry)
    steps, seconds, seed, torch                   the training budget, wall time, seed and torch version
    curve     [[step, val_PSNR], ...]             the validation PSNR after every epoch

Usage::

    model, card = kd.pretrained.load("sr4_teacher_tiny", device="cpu")
    python -m kdmri_lib.reconstruct --checkpoint pretrained:sr4_teacher_tiny --data data/demo --out recon

:func:`load` verifies the sha256 first and then reads the file with ``torch.load(weights_only=True)``
(:func:`kdmri_lib.models.checkpoint.load_checkpoint`); a missing, truncated or tampered file is a
:class:`~kdmri_lib.core.errors.CheckpointError` naming the file, the expected and the actual hash.
``python -m kdmri_lib.pretrained.build`` (``make pretrained``) rebuilds the zoo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from kdmri_lib.pretrained.index import (  # noqa: F401 (the zoo's index)
    MANIFEST,
    PREFIX,
    ZOO_DIR,
    card,
    find,
    manifest,
    names,
    path,
    resolve,
    sha256_file,
    verify,
    zoo_name,
)

__all__ = ["ZOO_DIR", "MANIFEST", "PREFIX", "manifest", "names", "card", "path", "verify", "load", "resolve",
           "find", "sha256_file", "zoo_name"]


def load(name: str, device: Any = "cpu", manifest_path: str | os.PathLike = MANIFEST):
    """``(model, card)``: the zoo model ``name`` in eval mode on ``device`` and its manifest entry.

    The file's sha256 is checked before it is opened, then it is read with ``weights_only=True``.
    """
    from kdmri_lib.models.checkpoint import load_model

    c = card(name, manifest_path)
    p = verify(name, manifest_path)
    model, _ = load_model(p, device, expect={k: c[k] for k in ("kind", "preset", "task", "factor")})
    return model, c


def _trained_on(e: dict) -> str:
    """A card's training data in words (the tables' "trained on" column)."""
    on = "every training file" if not e.get("train_files") else ", ".join(f"`{p}`" for p in e["train_files"])
    return on + (" + natural images 1:1" if e.get("natural") else "") + (" + random warps" if e.get("augment") else "")


def markdown_table(manifest_path: Optional[str | os.PathLike] = None) -> str:
    """The zoo as a Markdown table with the baselines of the same splits (the README's results
    table is this text; a test checks that they agree)."""
    m = manifest(manifest_path or MANIFEST)
    fmt = lambda d, k, f: format(d[k], f) if d and k in d else "–"  # noqa: E731
    lines = ["| model | trained on | params | steps | train time (s) | demo val PSNR / SSIM | "
             "held-out real EPI PSNR / SSIM |",
             "|---|---|---:|---:|---:|---|---|"]
    for name, b in sorted(m.get("baselines", {}).items()):
        v, h = b.get("val"), b.get("heldout")
        lines.append(f"| {name} (baseline) | – | 0 | – | – | {fmt(v, 'PSNR', '.2f')} / {fmt(v, 'SSIM', '.4f')} | "
                     f"{fmt(h, 'PSNR', '.2f')} / {fmt(h, 'SSIM', '.4f')} |")
    for e in m["models"]:
        v, h = e.get("metrics"), e.get("heldout")
        on = _trained_on(e)
        lines.append(f"| `{e['name']}` ({e['kind']} {e['preset']}) | {on} | {e.get('params', 0) / 1e6:.3f} M | "
                     f"{e['steps']} | {e['seconds']:.0f} | {fmt(v, 'PSNR', '.2f')} / {fmt(v, 'SSIM', '.4f')} | "
                     f"{fmt(h, 'PSNR', '.2f')} / {fmt(h, 'SSIM', '.4f')} |")
    return "\n".join(lines)


#: cards of measured candidates that are not shipped (``build.CANDIDATES``), kept without their weights
CANDIDATE_CARDS = Path(__file__).resolve().parents[2] / "docs" / "measured" / "zoo_candidates.json"


def margin_table(reference: str = "sr4_student_tiny", manifest_path: Optional[str | os.PathLike] = None,
                 candidates: Optional[str | os.PathLike] = CANDIDATE_CARDS) -> str:
    """Every learned model of the zoo (and of the candidates' cards, when that file exists) against
    the student trained alone (``reference``) and zero-filling, on the demo validation slices and
    on the held-out real scan: PSNR and the differences, from the cards (docs/training.md's
    margin table is this text; a test checks that they agree)."""
    m = manifest(manifest_path or MANIFEST)
    rows = [(e, "") for e in m["models"]]
    if candidates is not None and Path(candidates).is_file():
        rows += [(e, " (candidate, not shipped)") for e in manifest(candidates)["models"]]
    ref = next(e for e, _ in rows if e["name"] == reference)
    zf = m.get("baselines", {}).get(f"{ref['task']}{ref['factor']}_zero_filled", {})
    lines = [f"| model | trained on | demo val PSNR | - `{reference}` | held-out PSNR | - `{reference}` | - zero-filled |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for e, note in rows:
        if e["name"] == reference or (e["task"], e["factor"]) != (ref["task"], ref["factor"]):
            continue
        v, h = e["metrics"]["PSNR"], e["heldout"]["PSNR"]
        lines.append(f"| `{e['name']}` ({e['kind']} {e['preset']}){note} | {_trained_on(e)} | {v:.2f} | "
                     f"{v - ref['metrics']['PSNR']:+.2f} | {h:.2f} | {h - ref['heldout']['PSNR']:+.2f} | "
                     f"{h - zf['heldout']['PSNR']:+.2f} |")
    lines.append(f"| `{reference}` (reference) | every training file | {ref['metrics']['PSNR']:.2f} | | "
                 f"{ref['heldout']['PSNR']:.2f} | | {ref['heldout']['PSNR'] - zf['heldout']['PSNR']:+.2f} |")
    return "\n".join(lines)


README_START, README_END = "<!-- zoo:start -->", "<!-- zoo:end -->"
MARGIN_START, MARGIN_END = "<!-- margin:start -->", "<!-- margin:end -->"
ABLATION_START, ABLATION_END = "<!-- ablation:start -->", "<!-- ablation:end -->"
#: the default run of ``make bench-distill``, shipped so that notebook 05 and the README show it
ABLATION = ZOO_DIR / "ablation.json"


def readme_block(text: str, start: str = README_START, end: str = README_END) -> str:
    """The text between two markers of a README (stripped)."""
    if start not in text or end not in text:
        raise ValueError(f"no {start} ... {end} block in this text")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def ablation_summary(path: str | os.PathLike = ABLATION) -> str:
    """The README's distillation summary: :func:`kdmri_lib.experiments.ablation.summary_markdown` of the
    shipped ``ablation.json`` (or a sentence saying there is none)."""
    import json

    from kdmri_lib.experiments.ablation_report import summary_markdown

    p = Path(path)
    if not p.is_file():
        return "No ablation has been shipped yet: `make bench-distill` measures it."
    return summary_markdown(json.loads(p.read_text()))


def _replace_block(text: str, start: str, end: str, new: str) -> str:
    head, rest = text.split(start, 1)
    return head + start + "\n" + new + "\n" + end + rest.split(end, 1)[1]


def update_readme(path: str | os.PathLike, manifest_path: Optional[str | os.PathLike] = None) -> bool:
    """Write :func:`markdown_table` between the zoo markers of ``path``, :func:`ablation_summary`
    between its ablation markers and :func:`margin_table` between its margin markers (each block
    only where ``path`` has its markers; at least one); True if it changed."""
    from kdmri_lib.core.atomic import write_text

    p = Path(path)
    text = new_text = p.read_text()
    blocks = ((README_START, README_END, lambda: markdown_table(manifest_path)),
              (ABLATION_START, ABLATION_END, ablation_summary),
              (MARGIN_START, MARGIN_END, lambda: margin_table(manifest_path=manifest_path)))
    found = [(a, b, make) for a, b, make in blocks if a in text and b in text]
    if not found:
        raise ValueError(f"{p}: no generated block ({', '.join(a for a, _, _ in blocks)}) to write")
    for a, b, make in found:
        new_text = _replace_block(new_text, a, b, make())
    if new_text == text:
        return False
    write_text(p, new_text)
    return True


def describe(manifest_path: Optional[str | os.PathLike] = None) -> str:
    """A small text table of the zoo (name, model, steps, demo-val PSNR / SSIM)."""
    rows = manifest(manifest_path or MANIFEST)["models"]
    if not rows:
        return "the pretrained zoo is empty (run `make pretrained`)"
    out = [f"{'name':24s} {'model':22s} {'steps':>6s} {'PSNR':>7s} {'SSIM':>6s}"]
    for e in rows:
        m = e.get("metrics", {})
        out.append(f"{e['name']:24s} {e['kind'] + ' ' + e['preset'] + ' ' + e['task'] + ' x' + str(e['factor']):22s} "
                   f"{e.get('steps', 0):6d} {m.get('PSNR', float('nan')):7.2f} {m.get('SSIM', float('nan')):6.4f}")
    return "\n".join(out)
