"""The released recipe's demonstrations: each outcome is asserted, and each helper can fail."""

from __future__ import annotations

import torch

from kdmri_lib.datasets.data import MRISliceDataset, batch_operator
from kdmri_lib.models import build_model
from kdmri_lib.teaching import released as R


def _batch(demo_dir, idx=(10, 50)):
    ds = MRISliceDataset(demo_dir / "singlecoil_train", "sr", 4)
    b = torch.utils.data.default_collate([ds[i] for i in idx])
    return b["y"], batch_operator(b, "sr", 4), b["target"]


def test_released_step_leaves_the_teacher_unchanged_and_its_kl_and_canny_terms_carry_nothing(demo_dir):
    torch.manual_seed(0)
    student, teacher = build_model("student", "tiny", "sr", 4), build_model("teacher", "tiny", "sr", 4)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    y, op, x = _batch(demo_dir)
    out = R.released_step(student, teacher, opt, y, op, x)
    assert out["teacher_before"] == out["teacher_after"]          # frozen: no correction happens
    assert out["student_before"] != out["student_after"]          # the student did learn (the hash can tell)
    assert out["kl"] == 0.0 and out["kl_grad_norm"] == 0.0        # softmax over one channel is 1
    assert out["canny"] > 0 and out["canny_requires_grad"] is False


def test_canny_ab_from_identical_weights_gives_identical_weights(demo_dir):
    torch.manual_seed(0)
    student = build_model("student", "tiny", "sr", 4)
    batch = _batch(demo_dir)
    res = R.canny_ab(student, lambda i: batch, steps=3)
    assert res["canny_mean"] > 0                                  # the term is not zero ...
    assert res["max_weight_difference"] == 0.0 and res["hash_a"] == res["hash_b"]   # ... yet changes nothing


def test_weights_hash_changes_with_any_weight():
    m = build_model("student", "tiny", "sr", 4)
    h = R.weights_hash(m)
    with torch.no_grad():
        next(m.parameters()).view(-1)[0] += 1e-3
    assert R.weights_hash(m) != h


def test_dead_zone_and_confidence_agreement_on_constructed_pixels():
    x = torch.tensor([1.0, 1.0, 1.0, 1.0])
    S = torch.tensor([1.5, 1.5, 0.5, 2.0])
    T = torch.tensor([2.0, 1.2, 0.8, 3.0])
    # pixel 0: S between x (1) and T (2): dead; 1: T between: live; 2: live; 3: S between: dead
    assert R.dead_zone_fraction(S, T, x, foreground=0.0) == 0.5
    c = R.confidence_agreement(S, T, x)
    assert c["weighted_fraction"] == 0.5 and c["agreement"] == 1.0  # pixels 1, 2: teacher closer, same side
