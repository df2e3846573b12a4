"""Profiling helpers and the FLOP acceptance bars (FLOPs are deterministic; latency is only benchmarked)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdmri_lib import models as M
from kdmri_lib.experiments import benchmark as P


def test_count_params():
    m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Linear(4, 5))
    assert P.count_params(m) == (2 * 4 * 9 + 4) + (4 * 5 + 5)
    m[1].weight.requires_grad_(False)
    assert P.count_params(m, trainable_only=True) == (2 * 4 * 9 + 4) + 5


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1, bias=False)

    def forward(self, y, op):
        return self.conv(torch.cat([y.real, y.imag], 1))


def test_flops_count_multiply_adds_twice():
    y, op = P.sample_measurement("cs", 4, (16, 16))
    assert P.count_flops(_Conv(), y, op) == 2 * (2 * 8 * 9) * 16 * 16


def test_cpu_flash_attention_is_counted():
    q = torch.randn(6, 2, 64, 16)
    with torch.inference_mode(), P.flop_counter() as c:
        F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(6, 2, 64, 64))
    assert c.get_total_flops() == 2 * 2 * 6 * 2 * 64 * 64 * 16  # QK^T and AV, 2 FLOPs per multiply-add


def test_paper_student_meets_the_bars_at_320_sr4():
    """Acceptance: at 320x320 sr x4 the paper student has <= 1.0M parameters, <= 20 GFLOPs and
    >= 8x fewer FLOPs than the paper teacher (SwinIR x4: 167 GFLOPs)."""
    ft = P.model_flops("teacher", "paper", "sr", 4, (320, 320))
    fs = P.model_flops("student", "paper", "sr", 4, (320, 320))
    assert 160e9 < ft < 175e9  # SwinIR's classical x4 configuration: 167 GFLOPs
    assert P.count_params(M.build_model("student", "paper", "sr", 4)) <= 1.0e6
    assert fs <= 20e9
    assert ft / fs >= 8.0, ft / fs


def test_meta_flops_equal_real_flops():
    torch.manual_seed(0)
    for kind in ("teacher", "student", "unet"):
        y, op = P.sample_measurement("cs", 4, (40, 48))
        real = P.count_flops(M.build_model(kind, "tiny", "cs", 4).eval(), y, op)
        assert real > 0 and P.model_flops(kind, "tiny", "cs", 4, (40, 48)) == real


def test_latency_and_memory_helpers():
    model = M.build_model("student", "tiny", "cs", 4)
    y, op = P.sample_measurement("cs", 4, (32, 32))
    lat = P.measure_latency(model, y, op, repeats=3, warmup=1, device="cpu", threads=1)
    assert lat["repeats"] == 3 and len(lat["times_ms"]) == 3 and lat["median_ms"] > 0 and lat["threads"] == 1
    lat = P.measure_latency(model, y, op, repeats=50, warmup=1, device="cpu", budget_s=1e-9)
    assert lat["repeats"] == 1  # the budget cuts the repeats, never below one
    assert P.peak_memory(model, y, op, "cpu") is None
    assert not model.training  # measured in eval mode


def test_bench_cli_writes_tables(tmp_path, capsys):
    rc = P.main(["--out", str(tmp_path), "--size", "32", "--presets", "tiny", "--tasks", "sr4,cs4",
                 "--repeats", "1", "--warmup", "0", "--threads", "1"])
    assert rc == 0
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert {(r["task"], r["factor"]) for r in rows} == {("sr", 4), ("cs", 4)}
    assert {r["model"] for r in rows} == {"teacher", "student", "unet", "chpnet_like"}
    for r in rows:
        for key in ("task", "factor", "model", "preset", "params", "gflops", "latency_ms", "peak_mem_mb", "device", "threads"):
            assert key in r
        assert r["latency_ms"] > 0 and r["gflops"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "CHPNet-like re-creation" in md and "not measured here" in md
    assert "| sr x4" not in md or "FLOPs ratio" in md
    assert "## cs x4" in capsys.readouterr().out


def test_bench_cli_rejects_bad_options(capsys):
    assert P.main(["--presets", "huge", "--out", "/nonexistent/never-written"]) == 2
    assert "tiny, small, paper" in capsys.readouterr().err
    assert P.main(["--tasks", "mri4"]) == 2


def test_acceptance_summary_from_rows():
    base = dict(task="sr", factor=4, device="cpu", threads=1, peak_mem_mb=None)
    rows = [dict(base, model="teacher", preset="paper", params=11.9e6, flops=167e9, gflops=167.0, latency_ms=1200.0),
            dict(base, model="student", preset="paper", params=0.9e6, flops=10e9, gflops=10.0, latency_ms=90.0)]
    (a,) = P.acceptance(rows)
    assert a["flops_ratio"] == pytest.approx(16.7) and a["latency_ratio"] == pytest.approx(1200 / 90)
    assert a["ok_params"] and a["ok_gflops"] and a["ok_flops_ratio"] and a["ok_latency"]
