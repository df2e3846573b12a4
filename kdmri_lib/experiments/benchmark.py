r"""Profiling: parameters, FLOPs, latency and peak memory of the reconstruction models; ``make bench``.

Conventions
-----------
* **Parameters**: ``sum(p.numel())`` over ``model.parameters()``.
* **FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass (batch 1 unless
  asked), where **one multiply-add counts as 2 FLOPs** (the counter's convention). It counts
  convolutions, matrix products and attention; element-wise operations, normalisations,
  softmax and FFTs are not counted (the student's exact data term costs a few FFTs: about
  ``5 N log2 N`` ~ 9 MFLOP per 320x320 FFT, negligible next to its GFLOPs). On CPU,
  ``scaled_dot_product_attention`` runs as ``aten._scaled_dot_product_flash_attention_for_cpu``,
  which the counter of torch 2.x does not know (it would count 0): :func:`flop_counter` adds the
  standard SDPA formula for it.
* **Latency**: median wall time of ``repeats`` forward passes ``model(y, op)`` under
  :func:`torch.inference_mode`, after ``warmup`` untimed passes, on the chosen device with the
  chosen number of CPU threads (CUDA is synchronised around each pass). With a time budget the
  number of repeats adapts to the model: ``repeats = clamp(budget / t_one_pass, 1, repeats)``, and
  models slower than ``slow_s`` seconds use their FLOP-counting pass as the only warm-up.
* **Peak memory**: CUDA only, ``torch.cuda.max_memory_allocated`` during one forward pass,
  including the weights (``None`` on CPU).

``make bench`` (``python -m kdmri_lib.benchmark --out runs/bench``) measures, in one run, at a
320x320 output, for ``sr`` x4, ``sr`` x2 and ``cs`` x4: the ``paper`` teacher, the student
(``tiny``, ``small``, ``paper``), the ``paper`` fastMRI U-Net and a **CHPNet-like re-creation** of
the released student (:class:`kdmri_lib.models.CHPNetLike`), and writes ``bench.md`` (tables,
the teacher/student ratios against the acceptance bars, and the design brief's anchor numbers in a
separate, clearly-labelled section that is *not* a measurement) and ``bench.json`` (one object per
measured row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch.utils import flop_counter as _fc

from kdmri_lib.core.atomic import ensure_dir, write_text
from kdmri_lib.core.device import amp_dtype, autocast, describe, get_device
from kdmri_lib.core.errors import ConfigError, KdmriError, check_float, check_int
from kdmri_lib.core.resources import catch_oom
from kdmri_lib.mri.physics import Operator, build_operator

#: the (task, factor) pairs of ``make bench``
BENCH_TASKS = (("sr", 4), ("sr", 2), ("cs", 4))
#: the project design brief's anchors (2-core CPU, 320x320; the brief is not part of this repository): quoted, never presented as measurements
DESIGN_ANCHORS = (
    ("SwinIR x4 (paper teacher config)", "11.90 M", "167", "1.22 s"),
    ("SwinIR x2", "11.75 M", "638", "6.6 s"),
    ("CHPNet released student (x2, x4)", "1.36 M", "421", "2.0 s"),
    ("fastmri.models.Unet (chans 32, 4 pools)", "7.76 M", "37.6", "0.19 s"),
)
#: acceptance bars of the paper student against the paper teacher
BARS = {"student_params": 1.0e6, "student_gflops": 20.0, "flops_ratio": 8.0, "latency_ratio": 1.0}


# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------

def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    mapping = {}
    aten = torch.ops.aten
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_sdpa_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_sdpa_backward_flop
    return mapping


def flop_counter(display: bool = False) -> _fc.FlopCounterMode:
    """A :class:`~torch.utils.flop_counter.FlopCounterMode` that also counts CPU flash attention."""
    return _fc.FlopCounterMode(display=display, custom_mapping=_custom_mapping())


def count_flops(model: nn.Module, y: torch.Tensor, op: Operator) -> int:
    """FLOPs of one forward pass ``model(y, op)`` (1 multiply-add = 2 FLOPs; see the module docstring)."""
    with torch.inference_mode(), flop_counter() as counter:
        model(y, op)
    return int(counter.get_total_flops())


def model_flops(kind: str, preset: str, task: str, factor: int, shape: Sequence[int] = (320, 320),
                batch: int = 1, **overrides) -> int:
    """FLOPs of ``build_model(kind, preset, task, factor, **overrides)`` at output ``shape``, counted
    on the ``meta`` device: no memory is allocated and nothing is computed, so even the ``paper``
    teacher is counted in well under a second. Same numbers as :func:`count_flops` on real data."""
    from kdmri_lib.models import build_model

    y, op = sample_measurement(task, factor, shape, batch)
    with torch.device("meta"):
        model = build_model(kind, preset, task, factor, **overrides).eval()
    return count_flops(model, y.to("meta"), op.to("meta"))


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _threads(n: Optional[int]):
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(check_int("threads", n, minimum=1))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(model: nn.Module, y: torch.Tensor, op: Operator, device: torch.device, channels_last: bool):
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    return y.to(device), op.to(device)


def measure_latency(model: nn.Module, y: torch.Tensor, op: Operator, repeats: int = 10, warmup: int = 2,
                    device: str | torch.device = "cpu", threads: Optional[int] = None,
                    budget_s: Optional[float] = None, amp: bool = False, channels_last: bool = False,
                    hint_s: Optional[float] = None) -> dict[str, Any]:
    """Median latency of ``model(y, op)`` (see the module docstring).

    The model is moved to ``device`` and put in eval mode (in place).

    Args:
        repeats: timed passes (at most, when ``budget_s`` is given).
        warmup: untimed passes before timing.
        device: "cpu", "cuda", "auto", ...
        threads: CPU intra-op threads during the measurement (restored afterwards).
        budget_s: time budget for the timed passes: fewer repeats for slow models (at least 1).
        amp: autocast (bfloat16 on recent CUDA GPUs; no effect on CPU).
        channels_last: convert the model's 4-D weights to channels-last memory format.
        hint_s: a previous estimate of one pass (e.g. the FLOP-counting pass) when ``warmup`` is 0.

    Returns:
        dict with ``median_ms``, ``min_ms``, ``times_ms`` (list), ``repeats``, ``warmup``,
        ``device`` (description) and ``threads``.
    """
    repeats = check_int("repeats", repeats, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    dev = get_device(device)
    y, op = _prepare(model, y, op, dev, channels_last)
    with _threads(threads) as n_threads, torch.inference_mode(), autocast(dev, amp):
        t_one = hint_s
        for _ in range(warmup):
            _sync(dev)
            t0 = time.perf_counter()
            model(y, op)
            _sync(dev)
            t_one = time.perf_counter() - t0
        if budget_s is not None and t_one:
            repeats = max(1, min(repeats, int(budget_s / max(t_one, 1e-6))))
        times = []
        for _ in range(repeats):
            _sync(dev)
            t0 = time.perf_counter()
            model(y, op)
            _sync(dev)
            times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times, "repeats": repeats,
            "warmup": warmup, "device": describe(dev) if dev.type != "cpu" else f"cpu ({n_threads} threads)",
            "threads": n_threads}


def peak_memory(model: nn.Module, y: torch.Tensor, op: Operator, device: str | torch.device = "cpu",
                amp: bool = False, channels_last: bool = False) -> Optional[float]:
    """Peak CUDA memory (MiB) of one forward pass, weights included; ``None`` on other devices."""
    dev = get_device(device)
    if dev.type != "cuda":
        return None
    y, op = _prepare(model, y, op, dev, channels_last)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode(), autocast(dev, amp):
        model(y, op)
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / 2 ** 20


# --------------------------------------------------------------------------------------------
# one model, one table
# --------------------------------------------------------------------------------------------

def sample_measurement(task: str, factor: int, shape: Sequence[int] = (320, 320), batch: int = 1,
                       seed: int = 0) -> tuple[torch.Tensor, Operator]:
    """A measurement of a random complex image and its operator (content does not change cost)."""
    op = build_operator(task, factor, shape=tuple(shape), seed=seed)
    g = torch.Generator().manual_seed(seed)
    img = torch.complex(torch.rand(batch, 1, *shape, generator=g), 0.1 * torch.randn(batch, 1, *shape, generator=g))
    return op.forward(img), op


def profile_model(model: nn.Module, task: Optional[str] = None, factor: Optional[int] = None,
                  shape: Sequence[int] = (320, 320), batch: int = 1, device: str | torch.device = "auto",
                  threads: Optional[int] = None, repeats: int = 10, warmup: int = 2,
                  budget_s: Optional[float] = None, slow_s: float = 5.0, amp: bool = False,
                  channels_last: bool = False, flops: bool = True) -> dict[str, Any]:
    """Parameters, FLOPs, latency and peak memory of one model on a random measurement.

    The FLOP-counting pass runs first on the target device and doubles as a warm-up; models
    slower than ``slow_s`` get no further warm-up. Returns one benchmark row (a dict).
    """
    task = task or getattr(model, "task")
    factor = factor or getattr(model, "factor")
    dev = get_device(device)
    y, op = sample_measurement(task, factor, shape, batch)
    y, op = _prepare(model, y, op, dev, channels_last)
    n_flops, t_flop = None, None
    if flops:
        with _threads(threads), autocast(dev, amp):
            t0 = time.perf_counter()
            n_flops = count_flops(model, y, op)
            _sync(dev)
            t_flop = time.perf_counter() - t0
    lat = measure_latency(model, y, op, repeats=repeats, warmup=warmup if (t_flop is None or t_flop < slow_s) else 0,
                          device=dev, threads=threads, budget_s=budget_s, amp=amp, channels_last=channels_last,
                          hint_s=t_flop)
    return {
        "task": task, "factor": int(factor), "model": getattr(model, "kind", type(model).__name__),
        "preset": getattr(model, "preset", ""), "shape": list(shape), "batch": batch,
        "params": count_params(model), "flops": n_flops,
        "gflops": None if n_flops is None else n_flops / 1e9,
        "latency_ms": lat["median_ms"], "latency_min_ms": lat["min_ms"], "repeats": lat["repeats"],
        "warmup": lat["warmup"], "peak_mem_mb": peak_memory(model, y, op, dev, amp, channels_last),
        "device": lat["device"], "threads": lat["threads"], "amp": bool(amp and amp_dtype(dev) is not None),
        "channels_last": bool(channels_last),
    }


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def acceptance(rows: list[dict]) -> list[dict]:
    """Per (task, factor): the paper student against the paper teacher (ratios and bars)."""
    out = []
    for task, factor in dict.fromkeys((r["task"], r["factor"]) for r in rows):
        get = {(r["model"], r["preset"]): r for r in rows if (r["task"], r["factor"]) == (task, factor)}
        t, s = get.get(("teacher", "paper")), get.get(("student", "paper"))
        if not t or not s:
            continue
        fr = t["flops"] / s["flops"] if t["flops"] and s["flops"] else None
        lr = t["latency_ms"] / s["latency_ms"]
        out.append({
            "task": task, "factor": factor, "student_params": s["params"], "student_gflops": s["gflops"],
            "teacher_gflops": t["gflops"], "flops_ratio": fr, "latency_ratio": lr,
            "teacher_latency_ms": t["latency_ms"], "student_latency_ms": s["latency_ms"],
            "ok_params": s["params"] <= BARS["student_params"],
            "ok_gflops": s["gflops"] is not None and s["gflops"] <= BARS["student_gflops"],
            "ok_flops_ratio": fr is not None and fr >= BARS["flops_ratio"],
            "ok_latency": lr > BARS["latency_ratio"],
        })
    return out


_LABELS = {"chpnet_like": "CHPNet-like re-creation", "unet": "fastMRI U-Net", "teacher": "teacher (Swin)",
           "student": "student (unrolled CNN)"}


def to_markdown(rows: list[dict], meta: dict) -> str:
    """The benchmark tables (one per task), the acceptance ratios and the design brief's anchors."""
    L = [f"# kdmri benchmark: {meta['shape'][0]}x{meta['shape'][1]} output, batch {meta['batch']}", ""]
    L.append(f"- device: {meta['device']}; torch {meta['torch']}; {meta['platform']}; {meta['date']}")
    L.append("- FLOPs: `torch.utils.flop_counter` on one forward pass, 1 multiply-add = 2 FLOPs "
             "(convolutions, matmuls, attention; FFTs and element-wise ops not counted).")
    L.append(f"- latency: median of the timed forward passes (`torch.inference_mode`) after warm-up; repeats adapt "
             f"to a budget of {meta['budget_s']} s per model (at most {meta['repeats']}; models slower than "
             f"{meta['slow_s']} s: FLOP pass as warm-up, then at least 1 timed pass).")
    if meta.get("amp") or meta.get("channels_last"):
        L.append(f"- amp: {meta.get('amp')}, channels_last: {meta.get('channels_last')}")
    L.append("- CHPNet-like re-creation: the released student's layout rebuilt in this project "
             "(`kdmri_lib.models.CHPNetLike`), measured here; for cs it is a same-cost stand-in (s = 1).")
    L.append("")
    for task, factor in dict.fromkeys((r["task"], r["factor"]) for r in rows):
        L += [f"## {task} x{factor}", "",
              "| model | preset | params (M) | GFLOPs | latency (ms) | min (ms) | repeats | peak mem (MB) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if (r["task"], r["factor"]) != (task, factor):
                continue
            L.append(f"| {_LABELS.get(r['model'], r['model'])} | {r['preset']} | {r['params'] / 1e6:.3f} | "
                     f"{_fmt(r['gflops'], 1)} | {_fmt(r['latency_ms'], 1)} | {_fmt(r['latency_min_ms'], 1)} | "
                     f"{r['repeats']} | {_fmt(r['peak_mem_mb'], 0)} |")
        L.append("")
    acc = acceptance(rows)
    if acc:
        L += ["## Acceptance: paper student vs paper teacher", "",
              f"Bars: student params <= {BARS['student_params'] / 1e6:.1f} M, student <= {BARS['student_gflops']:.0f} GFLOPs, "
              f"teacher/student FLOPs >= {BARS['flops_ratio']:.0f}x, student faster than teacher (latency ratio > 1).", "",
              "| task | student params (M) | student GFLOPs | teacher GFLOPs | FLOPs ratio | teacher (ms) | student (ms) | latency ratio | all bars |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for a in acc:
            ok = a["ok_params"] and a["ok_gflops"] and a["ok_flops_ratio"] and a["ok_latency"]
            L.append(f"| {a['task']} x{a['factor']} | {a['student_params'] / 1e6:.3f} | {_fmt(a['student_gflops'], 1)} | "
                     f"{_fmt(a['teacher_gflops'], 1)} | {_fmt(a['flops_ratio'], 1)}x | {a['teacher_latency_ms']:.0f} | "
                     f"{a['student_latency_ms']:.0f} | {a['latency_ratio']:.1f}x | {'pass' if ok else 'FAIL'} |")
        L.append("")
    L += ["## Reference (from the project's design brief, not measured here)", "",
          "Numbers quoted from the design brief (2-core CPU, 320x320 output) for orientation only.", "",
          "| model | params | GFLOPs | latency |", "|---|---:|---:|---:|"]
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in DESIGN_ANCHORS]
    return "\n".join(L) + "\n"


def bench(out: str | Path = "runs/bench", tasks: Sequence[tuple[str, int]] = BENCH_TASKS,
          presets: Optional[Sequence[str]] = None, student_presets: Sequence[str] = ("tiny", "small", "paper"),
          size: int = 320, batch: int = 1, repeats: int = 10, warmup: int = 2, threads: Optional[int] = None,
          device: str = "auto", budget_s: float = 8.0, slow_s: float = 5.0, reference: bool = True,
          amp: bool = False, channels_last: bool = False, log=print) -> list[dict]:
    """Run the benchmark and write ``bench.md`` and ``bench.json`` under ``out``.

    Args:
        presets: presets for every learned kind; default: teacher and U-Net ``paper``, student
            ``student_presets``.
        reference: also measure the CHPNet-like re-creation.
        (others: see :func:`profile_model`.)

    Returns:
        the measured rows.
    """
    from kdmri_lib.models import CHPNetLike, build_model

    out = ensure_dir(out, "benchmark output folder")
    dev = get_device(device)
    shape = (size, size)
    plan: list[tuple[str, str, str, int]] = []
    for task, factor in tasks:
        for kind in ("teacher", "student", "unet"):
            ps = presets if presets is not None else (student_presets if kind == "student" else ("paper",))
            plan += [(kind, p, task, factor) for p in ps]
        if reference:
            plan.append(("chpnet_like", "released", task, factor))
    rows = []
    t_start = time.perf_counter()
    for kind, preset, task, factor in plan:
        torch.manual_seed(0)
        model = CHPNetLike(task, factor) if kind == "chpnet_like" else build_model(kind, preset, task, factor)
        with catch_oom(f"profiling the {kind} {preset} ({task} x{factor}, {size}x{size})", dev,
                       note="Lower --size or --batch, or leave the large presets out (--presets tiny,small)",
                       batch=batch, size=size):
            row = profile_model(model, task, factor, shape=shape, batch=batch, device=dev, threads=threads,
                                repeats=repeats, warmup=warmup, budget_s=budget_s, slow_s=slow_s, amp=amp,
                                channels_last=channels_last)
        rows.append(row)
        log(f"[bench] {task}x{factor} {kind:12s} {preset:8s} params {row['params'] / 1e6:7.3f} M  "
            f"{_fmt(row['gflops'], 1):>8s} GFLOPs  {row['latency_ms']:9.1f} ms  (x{row['repeats']})")
        del model
    meta = {"shape": list(shape), "batch": batch, "device": rows[0]["device"] if rows else describe(dev),
            "torch": torch.__version__, "platform": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": repeats, "budget_s": budget_s, "slow_s": slow_s,
            "amp": amp, "channels_last": channels_last, "seconds": round(time.perf_counter() - t_start, 1)}
    md = to_markdown(rows, meta)
    write_text(out / "bench.md", md)
    keys = ("task", "factor", "model", "preset", "params", "gflops", "latency_ms", "peak_mem_mb", "device", "threads")
    json_rows = [{**{k: r[k] for k in keys}, **{k: v for k, v in r.items() if k not in keys}} for r in rows]
    write_text(out / "bench.json", json.dumps(json_rows, indent=1))
    log(md)
    log(f"[bench] wrote {out / 'bench.md'} and {out / 'bench.json'} in {meta['seconds']} s")
    return rows


def _parse_tasks(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        task, num = item[:2], item[2:].lstrip("x")
        if task not in ("sr", "cs") or not num.isdigit():
            raise ConfigError(f"tasks must look like 'sr4,sr2,cs4'; got {item!r}")
        out.append((task, int(num)))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdmri_lib.benchmark",
                                description="Profile the reconstruction models (params, FLOPs, latency, peak memory).")
    p.add_argument("--out", default="runs/bench", help="output folder for bench.md and bench.json")
    p.add_argument("--presets", default=None,
                   help="comma-separated presets for every model kind (default: teacher/U-Net paper, student tiny,small,paper)")
    p.add_argument("--tasks", default="sr4,sr2,cs4", help="comma-separated task+factor list (default: sr4,sr2,cs4)")
    p.add_argument("--size", type=int, default=320, help="output image size H = W (default 320)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="maximum timed passes per model (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before timing (default 2)")
    p.add_argument("--budget", type=float, default=8.0, help="seconds of timed passes per model (default 8)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on recent CUDA GPUs)")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights")
    p.add_argument("--no-reference", action="store_true", help="skip the CHPNet-like re-creation")
    a = p.parse_args(argv)
    try:
        presets = None if a.presets is None else [s.strip() for s in a.presets.split(",") if s.strip()]
        if presets is not None:
            from kdmri_lib.models import PRESETS
            for s in presets:
                if s not in PRESETS:
                    raise ConfigError(f"--presets: each must be one of {', '.join(PRESETS)}; got {s!r}")
        tasks, size = _parse_tasks(a.tasks), check_int("--size", a.size, minimum=8)
        from kdmri_lib.models import check_task_factor

        for task, factor in tasks:    # every combination is checked before anything runs or is written
            check_task_factor(task, factor)
            build_operator(task, factor, (size, size))
        threads = None if a.threads is None else check_int("--threads", a.threads, minimum=1)
        get_device(a.device)
        bench(a.out, tasks=tasks, presets=presets, size=size,
              batch=check_int("--batch", a.batch, minimum=1), repeats=check_int("--repeats", a.repeats, minimum=1),
              warmup=check_int("--warmup", a.warmup, minimum=0), threads=threads, device=a.device,
              budget_s=check_float("--budget", a.budget, minimum=0.0, strict_min=True), reference=not a.no_reference,
              amp=a.amp, channels_last=a.channels_last)
    except (KdmriError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
