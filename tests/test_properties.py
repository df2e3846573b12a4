"""Property tests (hypothesis): the contracts hold for *any* input, not just the examples.

Example counts are kept small (the whole file runs in well under a minute on 2 cores) and every
test is deterministic across runs (``derandomize=True``): CI never flakes, and a failure is
reproduced by running the test again.

* operators: shapes, adjointness for random sizes / factors / batches of both tasks; sizes a task
  cannot take give :class:`ConfigError` (and nothing else);
* masks: 0/1 values, fully-sampled centre, realised acceleration within bounds, seed-determinism;
* parameter checks: ``check_int`` / ``check_float`` / ``check_choice`` and the notebooks'
  ``_validate`` over values of every type;
* the dataset transform on random small complex k-space: finite, normalised output, or a
  :class:`DataError` / :class:`ConfigError`;
* damaged files: any truncation or corruption of an HDF5 volume is read or refused with a
  :class:`DataError` (never another exception);
* metrics: PSNR / SSIM / NMSE do not change when both images are scaled;
* atomic writes: a writer that fails at any point leaves the previous file intact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kdmri_lib.core.atomic import atomic_write, write_text
from kdmri_lib.core.errors import ConfigError, DataError, check_choice, check_float, check_int
from kdmri_lib.datasets.data import MRISliceDataset, SliceTransform
from kdmri_lib.mri import physics
from kdmri_lib.mri.fastmri_format import write_volume
from kdmri_lib.mri.masks import make_mask, realised_acceleration
from kdmri_lib.mri.metrics import volume_metrics

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SR_SCALES = (2, 3, 4, 8)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rand(shape, seed, complex_=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    if complex_:
        x = torch.complex(x, torch.randn(*shape, generator=g, dtype=torch.float64))
    return x


def _inner(a, b):
    return torch.sum(a * b.conj())


# --------------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------------

@FAST
@given(scale=st.sampled_from(SR_SCALES), h=st.integers(1, 6), w=st.integers(1, 6), batch=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_sr_operator_shapes_and_adjointness(scale, h, w, batch, seed):
    H, W = scale * max(h, 1), scale * max(w, 1)
    assume(H >= 2 and W >= 2)
    op = physics.build_operator("sr", scale, (H, W))
    x, y = _rand((batch, 1, H, W), seed), _rand((batch, 1, H // scale, W // scale), seed + 1)
    Ax, Ahy = op.forward(x), op.adjoint(y)
    assert Ax.shape == y.shape and Ahy.shape == x.shape and op.initial(y).shape == y.shape
    lhs, rhs = _inner(Ax, y), _inner(x, Ahy)
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


@FAST
@given(acc=st.integers(1, 8), H=st.integers(2, 40), W=st.integers(2, 40), batch=st.integers(1, 3),
       seed=st.integers(0, 2**16), mask_type=st.sampled_from(["random", "equispaced", "equispaced_fraction"]))
def test_cs_operator_builds_and_is_adjoint_or_refuses_clearly(acc, H, W, batch, seed, mask_type):
    try:
        op = physics.build_operator("cs", acc, (H, W), seed=seed, mask_type=mask_type)
    except ConfigError:
        assert acc > 1                     # only an under-sampled mask can be impossible (too few columns)
        return
    assert op.mask.shape == (1, 1, 1, W) and bool(op.mask.any())
    x, y = _rand((batch, 1, H, W), seed), _rand((batch, 1, H, W), seed + 1)
    lhs, rhs = _inner(op.forward(x), y), _inner(x, op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))
    assert torch.allclose(op.initial(op.forward(x)), op.normal(x))


@FAST
@given(acc=st.sampled_from([2, 4, 8]), H=st.integers(4, 24), W=st.integers(8, 24), dh=st.integers(0, 16),
       dw=st.integers(0, 16), seed=st.integers(0, 2**16))
def test_cropped_cs_operator_is_adjoint(acc, H, W, dh, dw, seed):
    op = physics.build_operator("cs", acc, (H, W), seed=seed, center_fraction=0.5 / acc,
                                kspace_shape=(H + dh, W + dw))
    x, y = _rand((2, 1, H, W), seed), _rand((2, 1, H + dh, W + dw), seed + 1)
    lhs, rhs = _inner(op.forward(x), y), _inner(x, op.adjoint(y))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


@FAST
@given(scale=st.sampled_from(SR_SCALES), H=st.integers(2, 64), W=st.integers(2, 64))
def test_sr_sizes_the_scale_does_not_divide_are_refused(scale, H, W):
    if H % scale or W % scale:
        with pytest.raises(ConfigError, match="does not divide"):
            physics.build_operator("sr", scale, (H, W))
    else:
        assert physics.build_operator("sr", scale, (H, W)).meas_shape == (H // scale, W // scale)


@FAST
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=5), task=st.sampled_from(["sr", "cs"]))
def test_operators_refuse_any_wrong_shape_with_a_config_error(shape, task):
    op = physics.build_operator(task, 2, (4, 4))
    x = torch.zeros(tuple(shape))
    ok = x.dim() == 4 and x.shape[0] >= 1 and tuple(x.shape[1:]) == (1, 4, 4)
    if ok:
        op.forward(x)
    else:
        with pytest.raises(ConfigError):
            op.forward(x)


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------

@FAST
@given(width=st.integers(16, 400), acc=st.integers(2, 8), seed=st.integers(0, 2**31),
       mask_type=st.sampled_from(["random", "equispaced", "equispaced_fraction"]))
def test_mask_values_centre_and_realised_acceleration(width, acc, seed, mask_type):
    from kdmri_lib.mri.masks import default_center_fraction

    try:
        m = make_mask(width, acc, mask_type=mask_type, seed=seed)
    except ConfigError as e:
        assert "measures no column" in str(e) or "larger than the number" in str(e)
        return
    assert m.shape == (width,) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m, make_mask(width, acc, mask_type=mask_type, seed=seed))       # seed-determinism
    centre = round(width * default_center_fraction(acc))
    if centre:
        lo = (width - centre + 1) // 2
        assert bool(m[lo: lo + centre].all())                  # fastMRI's fully-sampled centre
    r = realised_acceleration(m)
    assert 1.0 <= r <= width / max(1, centre)
    if mask_type == "equispaced_fraction" and width >= 64:
        assert abs(r - acc) / acc < 0.35                       # the requested acceleration, not just any


# --------------------------------------------------------------------------------------------
# parameter checks
# --------------------------------------------------------------------------------------------

ANY = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                st.text(max_size=5), st.lists(st.integers(), max_size=2), st.just(b"4"), st.just(np.int64(3)),
                st.just(np.float32(2.0)))


def _int_like(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    return isinstance(v, float) and math.isfinite(v) and v.is_integer()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(v=ANY, lo=st.one_of(st.none(), st.integers(-5, 5)), hi=st.one_of(st.none(), st.integers(-5, 50)))
def test_check_int(v, lo, hi):
    ok = _int_like(v) and (lo is None or int(v) >= lo) and (hi is None or int(v) <= hi)
    if ok:
        out = check_int("n", v, lo, hi)
        assert type(out) is int and out == int(v)
    else:
        with pytest.raises(ConfigError, match="^n must be"):
            check_int("n", v, lo, hi)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(v=ANY, lo=st.one_of(st.none(), st.floats(-5, 5)), strict=st.booleans())
def test_check_float(v, lo, strict):
    real = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    ok = real and math.isfinite(float(v)) and (lo is None or (float(v) > lo if strict else float(v) >= lo))
    if ok:
        assert check_float("x", v, lo, strict_min=strict) == float(v)
    else:
        with pytest.raises(ConfigError, match="^x must be"):
            check_float("x", v, lo, strict_min=strict)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(v=ANY)
def test_check_choice(v):
    choices = ("sr", "cs", 4)
    try:
        ok = v in choices
    except Exception:  # noqa: BLE001 - e.g. numpy comparisons; then it is not a choice either
        ok = False
    if ok and not isinstance(v, (bool, np.bool_)):
        assert check_choice("task", v, choices) == v
    elif not ok:
        with pytest.raises(ConfigError, match="^task must be one of 'sr', 'cs', 4; got"):
            check_choice("task", v, choices)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(key=st.sampled_from(["epochs", "batch_size", "steps_per_epoch", "val_slices", "scale",
                            "acceleration", "teacher_epochs", "seed", "lr", "teacher_lr", "task", "preset", "device",
                            "data_dir", "correction", "confidence", "mask_type", "volume"]), value=ANY)
def test_notebook_validate_gives_a_value_or_a_config_error_naming_the_parameter(key, value):
    from kdmri_lib.teaching.notebook import _validate

    try:
        out = _validate({key: value})
    except ConfigError as e:
        assert f"notebook parameter '{key}'" in str(e)
        return
    v = out[key]
    if key in ("epochs", "batch_size", "steps_per_epoch", "val_slices", "acceleration", "teacher_epochs", "seed",
               "scale"):
        assert v is None or (type(v) is int and v >= 0)
        assert v is not None or key in ("steps_per_epoch", "val_slices", "batch_size")
    elif key in ("lr", "teacher_lr"):
        assert v is None or (type(v) is float and v > 0 and math.isfinite(v))
    elif key == "correction":
        assert isinstance(v, bool)
    elif key in ("task", "preset", "confidence", "mask_type", "device"):
        assert isinstance(v, str)


# --------------------------------------------------------------------------------------------
# the dataset transform
# --------------------------------------------------------------------------------------------

@FAST
@given(task=st.sampled_from(["sr", "cs"]), factor=st.sampled_from([2, 4]), h=st.integers(2, 8), w=st.integers(2, 8),
       amp=st.sampled_from([0.0, 1e-30, 1e-6, 1.0, 1e6]), seed=st.integers(0, 2**16), train=st.booleans())
def test_transform_output_is_finite_and_normalised_or_a_clear_error(task, factor, h, w, amp, seed, train):
    H, W = 4 * h, 4 * w
    k = (amp * _rand((H, W), seed).to(torch.complex64)).numpy()
    t = SliceTransform(task, factor, train_masks=train)
    try:
        s = t(k, None, None, {}, "vol ü.h5", 0)
    except (DataError, ConfigError) as e:
        assert "vol ü.h5" in str(e)
        assert amp <= 1e-30 or task == "cs"
        return
    for key in ("y", "initial", "target"):
        assert torch.isfinite(torch.view_as_real(s[key]) if s[key].is_complex() else s[key]).all()
    assert float(s["scale"]) > 0 and math.isfinite(float(s["scale"]))
    assert float(s["initial"].abs().max()) == pytest.approx(1.0, rel=1e-4)


# --------------------------------------------------------------------------------------------
# damaged files
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_h5(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("h5")
    k = physics.fft2c(torch.rand(2, 32, 32)).numpy().astype(np.complex64)
    write_volume(d / "v.h5", k, np.abs(physics.ifft2c(torch.from_numpy(k)).numpy()).astype(np.float32),
                 {"acquisition": "AXT1", "patient_id": "p"}, tmp_dir=d)
    return (d / "v.h5").read_bytes()


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(how=st.sampled_from(["truncate", "flip", "smear"]), where=st.floats(0, 1, exclude_max=True),
       seed=st.integers(0, 2**16))
def test_a_damaged_volume_is_read_or_refused_with_a_data_error(good_h5, tmp_path, how, where, seed):
    rng = np.random.default_rng(seed)
    b = bytearray(good_h5)
    i = int(where * len(b))
    if how == "truncate":
        b = b[:i]
    elif how == "flip":
        for j in rng.integers(0, len(b), 8):
            b[j] ^= 1 << int(rng.integers(0, 8))
    else:
        b[i: i + 64] = rng.integers(0, 256, len(b[i: i + 64]), dtype=np.uint8).tobytes()
    d = tmp_path / f"d{seed}-{how}-{i}"
    d.mkdir(exist_ok=True)   # hypothesis may replay an example in the same tmp_path
    (d / "v ü.h5").write_bytes(bytes(b))
    try:
        ds = MRISliceDataset(d, "cs", 4)
        for j in range(len(ds)):
            ds[j]
    except DataError as e:
        assert "v ü.h5" in str(e)
    except ConfigError as e:                # damaged header sizes: a matrix the task cannot take
        assert "v ü.h5" in str(e) or "shape" in str(e)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

@FAST
@given(seed=st.integers(0, 2**16), c=st.floats(1e-3, 1e3), slices=st.integers(1, 3))
def test_metrics_do_not_depend_on_the_intensity_scale(seed, c, slices):
    rng = np.random.default_rng(seed)
    gt = rng.random((slices, 24, 24)).astype(np.float64) + 0.1
    pred = gt + 0.05 * rng.standard_normal(gt.shape)
    a, b = volume_metrics(gt, pred), volume_metrics(c * gt, c * pred)
    assert b["PSNR"] == pytest.approx(a["PSNR"], abs=1e-6)
    assert b["NMSE"] == pytest.approx(a["NMSE"], rel=1e-6)
    assert b["SSIM"] == pytest.approx(a["SSIM"], abs=1e-6)


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.binary(max_size=200), new=st.binary(max_size=200), fail_after=st.integers(0, 200),
       exc=st.sampled_from([OSError, KeyboardInterrupt, RuntimeError]))
def test_a_failing_writer_leaves_the_previous_file_intact(tmp_path, old, new, fail_after, exc):
    d = tmp_path / f"w{abs(hash((old, new, fail_after, exc.__name__)))}"
    d.mkdir()
    target = d / "file ü.bin"
    target.write_bytes(old)
    with pytest.raises(exc):
        with atomic_write(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(new[:fail_after])
            raise exc("simulated failure in the middle of a write")
    assert target.read_bytes() == old
    assert sorted(p.name for p in d.iterdir()) == ["file ü.bin"]        # no temporary file left
    write_text(target, "done")                                          # and the next write still works
    assert target.read_text() == "done" and sorted(p.name for p in d.iterdir()) == ["file ü.bin"]
