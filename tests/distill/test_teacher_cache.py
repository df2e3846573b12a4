"""The memoised teacher (kdmri_lib.distill.teacher_cache): exact, keyed by the measurement, frozen where it
must be, relabelling with the corrected head, and the same training as without it."""

from __future__ import annotations

import pytest
import torch
from _train_utils import state_of, tiny_cfg

from kdmri_lib import distill as KD
from kdmri_lib.core.errors import ConfigError
from kdmri_lib.datasets.data import batch_operator, build_dataset
from kdmri_lib.distill.teacher_cache import TeacherCache, sample_key, usable
from kdmri_lib.models import build_model


def _batch(demo_dir, idx=(0, 5)):
    ds = build_dataset(demo_dir, "val", "sr", 4)
    b = torch.utils.data.default_collate([ds[i] for i in idx])
    return b, batch_operator(b, "sr", 4)


def _teacher(seed=0):
    torch.manual_seed(seed)
    t = build_model("teacher", "tiny", "sr", 4).eval()
    return t.requires_grad_(False)


def test_cached_outputs_equal_the_teacher_and_hits_skip_the_body(demo_dir, monkeypatch):
    b, op = _batch(demo_dir)
    t = _teacher()
    with torch.no_grad():
        ref, ref_f = t(b["y"], op, return_features=True)
        ref_mean, ref_std = KD.teacher_tta(t, b["y"], op)
    c = TeacherCache(t)
    with torch.no_grad():
        out, feats = c(b["y"], op, return_features=True)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        for a, r in zip(feats, ref_f):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
        mean, std = c.label(b["y"], op)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=1e-5)
        calls = []
        monkeypatch.setattr(t, "body", lambda *a, **k: calls.append(1) / 0)   # a hit must not run the body
        again, _ = c(b["y"], op, return_features=True)
        m2, s2 = c.label(b["y"], op)
    assert not calls and torch.equal(again, out) and torch.equal(m2, mean) and torch.equal(s2, std)
    assert c.hits > 0


def test_keys_tell_measurements_apart_and_batches_compose(demo_dir):
    b, op = _batch(demo_dir, (0, 5))
    assert sample_key(b["y"][0]) != sample_key(b["y"][1])
    assert sample_key(b["y"][0]) == sample_key(b["y"][0].clone())
    c = TeacherCache(_teacher())
    with torch.no_grad():
        both = c(b["y"], op)
        one = c(b["y"][1:], op)     # the second sample alone, from the memo
    assert torch.equal(one[0], both[1])


def test_body_must_be_frozen_and_only_sr_is_memoised():
    t = build_model("teacher", "tiny", "sr", 4)   # every parameter trainable
    with pytest.raises(ConfigError, match="body must be frozen"):
        TeacherCache(t)
    with pytest.raises(ConfigError, match="relabel_every"):
        TeacherCache(_teacher(), relabel_every=0)
    assert usable("sr", False, t) and not usable("cs", False, t) and not usable("sr", True, t)
    assert not usable("sr", False, build_model("student", "tiny", "sr", 4))


def test_head_correction_has_gradients_only_in_the_head_and_relabels_on_schedule(demo_dir):
    b, op = _batch(demo_dir)
    t = _teacher()
    for p in t.head_parameters():
        p.requires_grad_(True)
    c = TeacherCache(t, relabel_every=2)
    out = c(b["y"], op)
    out.mean().backward()
    head = {id(p) for p in t.head_parameters()}
    assert all((p.grad is not None) == (id(p) in head) for p in t.parameters())
    with torch.no_grad():
        before, _ = c.label(b["y"], op)
        for p in t.head_parameters():
            p.add_(0.05)
        c.step()                                   # 1 teacher step: labels not yet refreshed
        assert torch.equal(c.label(b["y"], op)[0], before)
        c.step()                                   # 2 = relabel_every: the corrected head labels
        after, _ = c.label(b["y"], op)
        direct, _ = KD.teacher_tta(t, b["y"], op)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, direct, rtol=1e-5, atol=1e-5)
    state = c.state()
    c2 = TeacherCache(t, relabel_every=2)
    c2.load_state(state)
    with torch.no_grad():
        torch.testing.assert_close(c2.label(b["y"], op)[0], after, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("row", ["kd_uncertainty", "full"])
def test_distillation_trains_the_same_with_and_without_the_memo(demo_dir, tmp_path, row):
    tdir = tmp_path / "teacher"
    from kdmri_lib.engine.train import fit

    fit(tiny_cfg(demo_dir, tdir, mode="teacher", train_files=["*_axial_*"]))   # full: rehearses these
    kw = dict(mode="distill", teacher_checkpoint=str(tdir / "last.pt"), steps_per_epoch=4,
              distill=KD.DistillConfig.preset(row, t_every=2, relabel_every=1), references=4, unlabelled=True,
              train_files=["*_sagittal_*"], val_files=["*_sagittal_*"])
    a = fit(tiny_cfg(demo_dir, tmp_path / "memo", teacher_cache=True, **kw))
    b = fit(tiny_cfg(demo_dir, tmp_path / "plain", teacher_cache=False, **kw))
    for k, v in state_of(tmp_path / "memo" / "last.pt").items():
        torch.testing.assert_close(v, state_of(tmp_path / "plain" / "last.pt")[k], rtol=1e-4, atol=1e-5)
    assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-4)
    assert (a.config.rehearsal_files == ["*_axial_*"]) == (row == "full")
