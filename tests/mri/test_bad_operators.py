"""The bad-input corpus for the operators and masks: one clear error naming the input (``tests/_corpus.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _corpus import (  # the corpus's shared helpers
    C64,
    CS,
    IMG,
    SR,
    declare,
    record,
)

from kdmri_lib.core.errors import ConfigError
from kdmri_lib.mri import physics
from kdmri_lib.mri.masks import make_mask

# --------------------------------------------------------------------------------------------
# 2. operators: build_operator, forward / adjoint / initial / simulate, masks
# --------------------------------------------------------------------------------------------


OPERATOR_CASES = {
    "task-None": (lambda: physics.build_operator(None, 4, (32, 32)), "task must be one of"),
    "task-uppercase": (lambda: physics.build_operator("SR", 4, (32, 32)), "task must be one of"),
    "task-list": (lambda: physics.build_operator(["sr"], 4, (32, 32)), "task must be one of"),
    "factor-bool": (lambda: physics.build_operator("cs", True, (32, 32)), "acceleration must be an integer"),
    "factor-2.5": (lambda: physics.build_operator("sr", 2.5, (32, 32)), "scale must be an integer"),
    "factor-string": (lambda: physics.build_operator("sr", "4", (32, 32)), "scale must be an integer"),
    "factor-zero": (lambda: physics.build_operator("sr", 0, (32, 32)), "scale must be >= 1"),
    "factor-negative": (lambda: physics.build_operator("cs", -8, (32, 32)), "acceleration must be >= 1"),
    "acceleration-above-width": (lambda: physics.build_operator("cs", 64, (32, 32)), "acceleration 64 is larger"),
    "acceleration-8-on-4-columns": (lambda: physics.build_operator("cs", 8, (32, 4)), "acceleration 8 is larger"),
    "shape-None": (lambda: physics.build_operator("cs", 4, None), "shape must be a pair"),
    "shape-3-tuple": (lambda: physics.build_operator("cs", 4, (32, 32, 1)), "shape must be a pair"),
    "shape-float": (lambda: physics.build_operator("cs", 4, (32.5, 32)), "must be an integer"),
    "shape-negative": (lambda: physics.build_operator("cs", 4, (-32, 32)), "must be >= 2"),
    "shape-1x1": (lambda: physics.build_operator("sr", 2, (1, 1)), "must be >= 2"),
    "sr-size-not-divisible": (lambda: physics.build_operator("sr", 8, (36, 32)), "does not divide"),
    "center-fraction-nan": (lambda: physics.build_operator("cs", 4, (32, 32), center_fraction=float("nan")), "finite"),
    "center-fraction-negative": (lambda: physics.build_operator("cs", 4, (32, 32), center_fraction=-0.1), ">= 0.0"),
    "center-fraction-above-1/acc": (lambda: physics.build_operator("cs", 4, (32, 32), center_fraction=0.5), "center_fraction"),
    "mask-type-unknown": (lambda: physics.build_operator("cs", 4, (32, 32), mask_type="spiral"), "mask_type must be one of"),
    "magic-mask-width-not-divisible": (lambda: physics.build_operator("cs", 4, (32, 30), mask_type="magic"), "divisible"),
    "mask-seed-string": (lambda: physics.build_operator("cs", 4, (32, 32), seed="abc"), "seed must be an integer"),
    "mask-seed-negative": (lambda: physics.build_operator("cs", 4, (32, 32), seed=-1), "seed must be >= 0"),
    "mask-seed-2**40": (lambda: physics.build_operator("cs", 4, (32, 32), seed=2**40), "seed must be <="),
    "mask-seed-tuple-of-strings": (lambda: physics.build_operator("cs", 4, (32, 32), seed=("a",)), "mask seed must be"),
    "mask-seed-empty-tuple": (lambda: physics.build_operator("cs", 4, (32, 32), seed=()), "mask seed must be"),
    "mask-wrong-width": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.ones(31)), "mask must be a real tensor"),
    "mask-nan": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.full((32,), float("nan"))), "0 or 1"),
    "mask-values-2": (lambda: physics.build_operator("cs", 4, (32, 32), mask=2 * torch.ones(32)), "0 or 1"),
    "mask-all-zero": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.zeros(2, 1, 1, 32)), "no k-space column"),
    "mask-complex": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.ones(32, dtype=C64)), "real tensor"),
    "mask-scalar": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.tensor(1.0)), "real tensor"),
    "mask-string": (lambda: physics.build_operator("cs", 4, (32, 32), mask="all"), "mask must be"),
    "kspace-shape-smaller": (lambda: physics.build_operator("cs", 4, (32, 32), kspace_shape=(16, 40)), "at least the image"),
    "forward-numpy": (lambda: SR().forward(np.zeros((1, 1, 32, 32))), "must be a torch.Tensor"),
    "forward-list": (lambda: CS().forward([[0.0]]), "must be a torch.Tensor"),
    "forward-3d": (lambda: SR().forward(IMG(1, 32, 32)), r"\(B, 1, 32, 32\)"),
    "forward-5d": (lambda: SR().forward(IMG(1, 1, 1, 32, 32)), r"\(B, 1, 32, 32\)"),
    "forward-2-channels": (lambda: CS().forward(IMG(1, 2, 32, 32)), r"got \(1, 2, 32, 32\)"),
    "forward-wrong-size": (lambda: CS().forward(IMG(1, 1, 32, 31)), r"got \(1, 1, 32, 31\)"),
    "forward-empty-batch": (lambda: SR().forward(IMG(0, 1, 32, 32)), "B >= 1"),
    "forward-masks-vs-batch": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.ones(3, 1, 1, 32))
                               .forward(IMG(2, 1, 32, 32)), "3 masks but the batch has 2"),
    "adjoint-image-sized-y": (lambda: SR().adjoint(IMG(1, 1, 32, 32, dtype=C64)), r"\(B, 1, 8, 8\)"),
    "adjoint-numpy": (lambda: SR().adjoint(np.zeros((1, 1, 8, 8))), "must be a torch.Tensor"),
    "initial-wrong-size": (lambda: SR().initial(IMG(1, 1, 16, 16, dtype=C64)), r"\(B, 1, 8, 8\)"),
    "initial-empty-batch": (lambda: CS().initial(IMG(0, 1, 32, 32, dtype=C64)), "B >= 1"),
    "simulate-nan-image": (lambda: SR().simulate(torch.full((1, 1, 32, 32), float("nan"))), "NaN or Inf"),
    "simulate-inf-image": (lambda: CS().simulate(torch.full((1, 1, 32, 32), float("inf"))), "NaN or Inf"),
    "simulate-noise-negative": (lambda: SR().simulate(IMG(1, 1, 32, 32), noise_std=-1), "noise_std must be >= 0"),
    "simulate-noise-nan": (lambda: SR().simulate(IMG(1, 1, 32, 32), noise_std=float("nan")), "noise_std must be finite"),
    "simulate-noise-string": (lambda: SR().simulate(IMG(1, 1, 32, 32), noise_std="0.1"), "noise_std must be a number"),
    "simulate-wrong-shape": (lambda: SR().simulate(IMG(32, 32)), r"\(B, 1, 32, 32\)"),
    "band-split-keep-0": (lambda: physics.band_split(IMG(8, 8), 0), "keep must be > 0"),
    "band-split-keep-1.5": (lambda: physics.band_split(IMG(8, 8), 1.5), "keep must be <= 1"),
    "centre-crop-larger": (lambda: physics.centre_crop(IMG(8, 8), (9, 9)), "cannot crop"),
    "centre-pad-smaller": (lambda: physics.centre_pad(IMG(8, 8), (4, 4)), "cannot pad"),
    "channels-to-complex-3ch": (lambda: physics.channels_to_complex(IMG(1, 3, 8, 8)), "expected 2 channels"),
    "make-mask-width-1": (lambda: make_mask(1, 4), "width must be >= 2"),
    "make-mask-too-few-columns": (lambda: make_mask(8, 8, center_fraction=0.0, seed=0), "measures no column"),
}
declare("operators", list(OPERATOR_CASES))


@pytest.mark.parametrize("case", list(OPERATOR_CASES), ids=list(OPERATOR_CASES))
def test_operator_bad_input(case):
    thunk, match = OPERATOR_CASES[case]
    with pytest.raises(ConfigError, match=match):
        thunk()
    record("operators", case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.float64])
def test_operators_accept_other_real_dtypes(dtype):
    """Not errors: integer, bool and half-precision images are promoted (FFTs need float32 on CPU)."""
    x = torch.ones(2, 1, 32, 32).to(dtype)
    for op in (SR(), CS()):
        y = op.forward(x)
        assert y.is_complex() and torch.isfinite(torch.view_as_real(y)).all()
        assert op.adjoint(y).shape == (2, 1, 32, 32)
