"""Rehearsal in teacher correction (kdmri_lib.engine.rehearsal): its batches, its gradient, its
configuration checks, and a real distillation run that uses it (and resumes exactly)."""

from __future__ import annotations

import csv

import pytest
import torch
from _train_utils import assert_same_weights, tiny_cfg

from kdmri_lib import distill as KD
from kdmri_lib.core.errors import ConfigError, DataError
from kdmri_lib.datasets.data import build_dataset
from kdmri_lib.engine.rehearsal import SourceRehearsal, setup_rehearsal
from kdmri_lib.engine.train import fit
from kdmri_lib.models import build_model

SOURCE = ["*_axial_*"]


def _rehearsal(demo_dir, weight=1.0, seed=0):
    ds = build_dataset(demo_dir, "train", "sr", 4, include=SOURCE)
    return SourceRehearsal(ds, weight, 2, seed, "sr", 4, SOURCE)


def test_batches_depend_on_seed_and_step_only(demo_dir):
    r = _rehearsal(demo_dir)
    assert r.indices(7) == r.indices(7) == _rehearsal(demo_dir).indices(7)
    assert r.indices(7) != r.indices(8) or r.indices(8) != r.indices(9)
    assert _rehearsal(demo_dir, seed=1).indices(7) != r.indices(7) or _rehearsal(demo_dir, seed=1).indices(8) != r.indices(8)
    assert all(0 <= i < len(r.dataset) for s in range(20) for i in r.indices(s))


def test_loss_reaches_the_teacher_and_scales_with_its_weight(demo_dir):
    torch.manual_seed(0)
    teacher = build_model("teacher", "tiny", "sr", 4)
    one = _rehearsal(demo_dir, 1.0).loss(teacher, 3, torch.device("cpu"))
    one.backward()
    grads = [p.grad for p in teacher.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    half = _rehearsal(demo_dir, 0.5).loss(teacher, 3, torch.device("cpu"))
    assert float(half.detach()) == pytest.approx(0.5 * float(one.detach()), rel=1e-5)


def test_no_matching_source_file_is_a_clear_error(demo_dir, tmp_path):
    empty = build_dataset(demo_dir, "train", "sr", 4, include=["*_axial_00*"])
    with pytest.raises(DataError, match=r"rehearsal_files \['\*_oblique_\*'\]"):
        SourceRehearsal(torch.utils.data.Subset(empty, []), 1.0, 2, 0, "sr", 4, ["*_oblique_*"])


def test_config_checks(demo_dir, tmp_path):
    with pytest.raises(ConfigError, match="only used by teacher correction"):
        tiny_cfg(demo_dir, tmp_path, rehearsal_files=SOURCE).validate(check_paths=False)
    off = KD.DistillConfig(correction=False, t_rehearsal=1.0)
    with pytest.raises(ConfigError, match="only used by teacher correction"):
        tiny_cfg(demo_dir, tmp_path, mode="distill", teacher_checkpoint="x.pt", distill=off,
                 rehearsal_files=SOURCE).validate(check_paths=False)
    with pytest.raises(ConfigError, match="t_rehearsal"):
        KD.DistillConfig(t_rehearsal=-1.0)


def _distill_cfg(demo_dir, tmp_path, **kw):
    return tiny_cfg(demo_dir, tmp_path, mode="distill", teacher_checkpoint="x.pt", train_files=["*_sagittal_*"],
                    references=6, unlabelled=True, distill=KD.DistillConfig(correction=True, t_rehearsal=1.0), **kw)


def test_the_rehearsed_files_come_from_the_teacher_record_and_never_from_the_target(demo_dir, tmp_path):
    record = {"train_config": {"train_files": ["*_axial_*", "*_coronal_*"]}}
    cfg, r = setup_rehearsal(_distill_cfg(demo_dir, tmp_path), record, verbose=False)
    assert cfg.rehearsal_files == ["*_axial_*", "*_coronal_*"] and len(r.dataset) > 0
    assert all("sagittal" not in str(f) for f in r.dataset.files)
    cfg, r = setup_rehearsal(_distill_cfg(demo_dir, tmp_path, rehearsal_files=SOURCE), record, verbose=False)
    assert cfg.rehearsal_files == SOURCE                                       # given patterns win
    assert setup_rehearsal(_distill_cfg(demo_dir, tmp_path), {"train_config": {}}, verbose=False)[1] is None
    with pytest.raises(ConfigError, match=r"match training files of this run.*never the target"):
        setup_rehearsal(_distill_cfg(demo_dir, tmp_path, rehearsal_files=["*_sagittal_0*"]), None, verbose=False)
    with pytest.raises(DataError, match="rehearsal_files"):
        setup_rehearsal(_distill_cfg(demo_dir, tmp_path, rehearsal_files=["*_oblique_*"]), None, verbose=False)


@pytest.mark.slow
def test_a_rehearsing_correction_trains_changes_the_teacher_and_resumes_exactly(demo_dir, tmp_path):
    teacher = fit(tiny_cfg(demo_dir, tmp_path / "t", mode="teacher", steps_per_epoch=1, train_files=SOURCE)).last_checkpoint
    common = dict(mode="distill", teacher_checkpoint=str(teacher), train_files=["*_sagittal_*"], references=6,
                  unlabelled=True, epochs=2, steps_per_epoch=4)
    dcfg = dict(correction=True, t_params="head", t_every=1, teacher_lr=1e-3, t_anchor=0.0)
    plain = fit(tiny_cfg(demo_dir, tmp_path / "plain", distill=KD.DistillConfig(**dcfg, t_rehearsal=0.0), **common))
    reh = fit(tiny_cfg(demo_dir, tmp_path / "reh", distill=KD.DistillConfig(**dcfg, t_rehearsal=1.0), **common))
    assert reh.config.rehearsal_files == SOURCE                                # from the teacher's record
    ta, tb = plain.teacher.state_dict(), reh.teacher.state_dict()
    assert plain.config.rehearsal_files is None
    assert any(not torch.equal(ta[k], tb[k]) for k in ta)          # rehearsal changed the correction
    rows = list(csv.DictReader(open(tmp_path / "reh" / "steps.csv")))
    assert len(rows) == 8 and all(float(r["t_rehearsal"]) > 0 for r in rows)
    # interrupted after one epoch and resumed: the same weights as the uninterrupted run
    part = tiny_cfg(demo_dir, tmp_path / "resumed", distill=KD.DistillConfig(**dcfg, t_rehearsal=1.0),
                    rehearsal_files=SOURCE, epoch_limit=1, **common)
    fit(part)
    done = fit(part.replace(epoch_limit=None, resume=True))
    assert_same_weights(done.teacher.state_dict(), tb)
    assert_same_weights(done.model.state_dict(), reh.model.state_dict())
