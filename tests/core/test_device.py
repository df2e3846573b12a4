"""Device layer: selection, AMP dtype, seeding, RNG snapshots, distributed no-ops."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kdmri_lib.core import device


def test_auto_and_cpu():
    d = device.get_device("auto")
    assert d.type in ("cpu", "cuda", "mps")
    assert device.get_device("cpu") == torch.device("cpu")
    assert device.amp_dtype(torch.device("cpu")) is None
    with device.autocast(torch.device("cpu")):
        pass


def test_bad_device_names():
    with pytest.raises(ValueError, match="device must be one of"):
        device.get_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            device.get_device("cuda")


def test_seed_everything_reproducible_and_rng_roundtrip():
    device.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    device.seed_everything(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    from kdmri_lib.models.checkpoint import plain_rng_state, restore_rng_state

    state = plain_rng_state()
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == b
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        device.seed_everything(-1)


def test_distributed_helpers_single_process():
    assert device.world_size() == 1 and device.rank() == 0 and device.is_main_process()
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(device.all_reduce_sum(t), t)
    assert device.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert device.init_distributed(torch.device("cpu")) is False


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_amp_dtype():  # pragma: no cover - no GPU in CI
    d = device.get_device("cuda")
    assert device.amp_dtype(d) in (torch.bfloat16, torch.float16)
