"""The loss explorer's plumbing (kdmri_lib.teaching.loss_explorer): recipes, the choice of student,
the angle between gradients and the "take one step" button, without a browser."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from kdmri_lib import distill as KD  # noqa: E402
from kdmri_lib.datasets.data import build_dataset, collate  # noqa: E402
from kdmri_lib.models import build_model  # noqa: E402
from kdmri_lib.teaching import loss_explorer as LE  # noqa: E402
from kdmri_lib.teaching.released import weights_hash  # noqa: E402


@pytest.fixture(scope="module")
def setup(demo_dir):
    torch.manual_seed(0)
    ds = build_dataset(demo_dir, "train", "sr", 4, include=["*_sagittal_*"], references=6, unlabelled=True)
    batch = collate([ds[i] for i in range(4)])                     # 2 references, 2 pool slices
    op = ds.operator(batch)
    student = build_model("student", "tiny", "sr", 4)
    teacher = build_model("teacher", "tiny", "sr", 4)
    adapters = KD.Adapters.for_models(student, teacher)
    return student, teacher, adapters, batch, op


def test_gradient_angle_is_that_of_the_two_gradients(setup):
    student, teacher, adapters, batch, op = setup
    cfg = KD.DistillConfig.preset("kd_vanilla", correction=False)  # KD and truth on the same slices
    out = KD.distill_losses(student, teacher, adapters, batch["y"], op, batch["target"], cfg,
                            labelled=batch["labelled"])
    params = [p for p in student.parameters() if p.requires_grad]
    g = [torch.cat([x.reshape(-1) for x in torch.autograd.grad(out.weights[k] * out.terms[k], params,
                                                                  retain_graph=True)]) for k in ("kd", "rec")]
    ref = float(torch.rad2deg(torch.arccos(g[0] @ g[1] / (g[0].norm() * g[1].norm()))))
    assert KD.gradient_angle(out, student) == pytest.approx(ref, abs=1e-3)
    off = KD.distill_losses(student, teacher, adapters, batch["y"], op, batch["target"],
                            KD.DistillConfig.preset("kd_vanilla", output_kd=False), labelled=batch["labelled"])
    assert KD.gradient_angle(off, student) is None


def test_one_step_works_on_copies_and_moves_only_what_trains(setup):
    student, teacher, adapters, batch, op = setup
    hs, ht = weights_hash(student), weights_hash(teacher)
    frozen = LE.one_step(student, teacher, adapters, batch, op, KD.DistillConfig.preset("kd_output"))
    assert frozen["student"][1] != frozen["student"][0] and not frozen["teacher_changed"]
    assert frozen["teacher"][0] == frozen["teacher"][1]
    full = LE.one_step(student, teacher, adapters, batch, op, KD.DistillConfig.preset("full"))
    assert full["teacher_changed"] and full["teacher"][1] != full["teacher"][0]
    assert (weights_hash(student), weights_hash(teacher)) == (hs, ht)          # the originals are untouched
    no_truth = dict(batch, labelled=torch.zeros_like(batch["labelled"]))
    with pytest.raises(ValueError, match="ground truth"):
        LE.one_step(student, teacher, adapters, no_truth, op, KD.DistillConfig.preset("kd_output"))


def test_explorer_recipes_students_and_step_button(setup):
    student, teacher, adapters, batch, op = setup
    other = build_model("student", "tiny", "sr", 4)
    ex = LE.LossExplorer(student, teacher, adapters, batch, op, KD.DistillConfig.preset("kd_vanilla"),
                         students={"untrained": student, "another": other})
    assert list(ex.student_choice.options) == ["untrained", "another"]
    assert "angle(KD, truth)" in ex.metrics_html.value
    ex.recipe.value = "released code"
    assert not any(ex.switches[k].value for k in ("output_kd", "feature_kd", "attention_kd", "correction"))
    assert "angle" not in ex.metrics_html.value and "released KL term 0.0" in ex.metrics_html.value
    ex.recipe.value = "full"
    assert ex.switches["correction"].value and ex.kd_on.value == "unlabelled"
    assert ex.config().t_params == "head" and ex.config().teacher_tta
    ex.student_choice.value = "another"
    assert ex.student is other
    ex.step_button.click()
    assert "one step (another): student" in ex.step_html.value and "teacher" in ex.step_html.value
    assert ex.last_step["teacher_changed"]
