"""The pilot commands behind docs/training.md's diagnosis run, log what they measured, and refuse bad input."""
import pytest

from kdmri_lib.experiments import pilots


def test_correction_pilot_changes_only_what_it_trains_and_reports_both_contrasts(demo_dir):
    lines = []
    rows = pilots.correction_pilot(str(demo_dir), params="head", lr=1e-3, steps=2, log=lines.append)
    assert [r["step"] for r in rows] == [1, 2]
    assert set(rows[-1]["PSNR"]) == set(rows[-1]["delta"]) == {"T1", "T2"}
    assert "12 reference slices, 66 pool slices" in lines[0]
    assert any(v != 0 for v in rows[-1]["delta"].values())   # two steps at 1e-3 move the head


def test_stratified_references_take_one_volume_per_contrast(demo_dir):
    refs, pool = pilots._training_slices(str(demo_dir), "stratified")
    assert len(refs) == 12 and pool == []
    assert {f.name.split("_")[0] for f in refs.files} == {"mni152", "mni152t2"}


def test_pilot_cli_rejects_bad_numbers(capsys):
    assert pilots.main(["correction", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pilots.main(["correction", "--params", "body"])


def test_protocol_references_and_pool_follow_the_protocol_split(demo_dir):
    from kdmri_lib.datasets.protocol import DEFAULT

    refs, pool = pilots._training_slices(str(demo_dir), "protocol")
    assert len(refs) == DEFAULT.references and len(pool) == 66
    assert float(refs[0]["labelled"]) == 1.0 and float(pool[0]["labelled"]) == 0.0 and not pool[0]["target"].any()


def test_step_cost_multiplies_the_measured_steps_out(capsys):
    """The knee ablation's cost estimate is the measured seconds per step times the steps per row and seeds."""
    out = pilots.step_cost("tiny", steps=100, seeds=2, kspace_shape=(48, 40), image_shape=(32, 32), repeats=1, device="cpu")
    t, h = out["seconds_per_step"], out["hours"]
    assert set(t) == {"student_b1", "student_b2", "unet_b1", "teacher_label_tta", "teacher_b1"}
    assert all(v > 0 for v in t.values())
    assert h["student"] == pytest.approx(round(t["student_b1"] * 200 / 3600, 1), abs=0.051)
    assert h["teacher pre-training"] == pytest.approx(round(3 * 100 * t["teacher_b1"] / 3600, 1), abs=0.051)
    assert "[pilot] step cost at 48x40 k-space, 32x32 images" in capsys.readouterr().out
    assert pilots.main(["step-cost", "--preset", "huge"]) == 2


def test_the_knee_cost_in_the_docs_is_the_stored_measurement():
    """docs/training.md's expected cost of the knee protocol quotes docs/measured/step_cost_paper_cpu.json."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    m = json.loads((root / "docs" / "measured" / "step_cost_paper_cpu.json").read_text())
    text = " ".join((root / "docs" / "training.md").read_text().split())
    t, h = m["seconds_per_step"], m["hours"]
    assert f"takes {t['student_b1']:.2f} s (batch 1) and {t['student_b2']:.2f} s (batch 2), of the paper U-Net " \
           f"{t['unet_b1']:.2f} s" in text
    assert f"flip-averaged label of one slice {t['teacher_label_tta']:.1f} s" in text
    assert f"{h['student']:.1f} hours for the student alone and {h['unet']:.1f} for the U-Net" in text
    assert f"{h['kd_output']:.0f} hours for `kd_output`" in text and f"{h['kd_tta']:.0f} for a row" in text
    assert m["steps_per_row"] == 50000 and m["seeds"] == 3 and "--preset paper" in m["command"]


def _docs_text():
    from pathlib import Path

    return " ".join((Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text().split())


def test_regions_pilot_splits_the_error_and_the_docs_quote_it(demo_dir):
    """The head / air split of the zoo models' error (docs/training.md quotes this measurement)."""
    import re

    from kdmri_lib.pretrained.index import card

    lines = []
    names = ("sr4_student_tiny", "sr4_teacher_small", "sr4_unet_tiny")
    out = pilots.regions_pilot(str(demo_dir), names, log=lines.append)
    for name, r in out.items():
        assert r["PSNR"] == pytest.approx(card(name)["metrics"]["PSNR"], abs=0.05)   # the zoo card's own score
        assert r["PSNR_head"] < r["PSNR"] < r["PSNR_air"] and 0 < r["air_share"] < 1
    m = re.search(r"the student (\d+\.\d+) dB in the head and (\d+\.\d+) in the air, the teacher (\d+\.\d+) and (\d+\.\d+), "
                  r"the U-Net (\d+\.\d+) and (\d+\.\d+)\. Most of the teacher's lead is in the air; in the interior of the "
                  r"head it is below the student \((\d+\.\d+) against (\d+\.\d+) dB\)", _docs_text())
    assert m, "docs/training.md: the regions sentence is missing"
    measured = [out[n][k] for n in names for k in ("PSNR_head", "PSNR_air")]
    measured += [out["sr4_teacher_small"]["PSNR_interior"], out["sr4_student_tiny"]["PSNR_interior"]]
    assert [float(v) for v in m.groups()] == pytest.approx(measured, abs=0.011)
    assert out["sr4_teacher_small"]["PSNR_interior"] < out["sr4_student_tiny"]["PSNR_interior"]
    assert len(lines) == 3


def test_regions_pilot_scores_baselines_on_the_heldout_scan_and_the_docs_quote_it(demo_dir):
    """``--split heldout --dc``: zero-filling's score is the manifest's baseline score, and a
    data-consistency projection of the zero-filled image is that image (it already is the
    measurement), so its ``_dc`` scores are the same; a learned model's are not. The rim /
    interior sentence of docs/training.md is this measurement."""
    import re

    from kdmri_lib.pretrained import manifest

    names = ("zero_filled", "sr4_student_tiny", "sr4_teacher_small", "sr4_unet_tiny")
    out = pilots.regions_pilot(str(demo_dir), names, split="heldout", dc=True, tta=True, log=lambda m: None)
    zf = out["zero_filled"]
    assert zf["PSNR"] == pytest.approx(manifest()["baselines"]["sr4_zero_filled"]["heldout"]["PSNR"], abs=0.05)
    for k in ("PSNR", "PSNR_head", "PSNR_air", "PSNR_rim", "PSNR_interior"):
        assert zf[f"{k}_dc"] == pytest.approx(zf[k], abs=1e-3)
    # the head is its rim and its interior: its squared error is between theirs
    assert min(zf["PSNR_rim"], zf["PSNR_interior"]) < zf["PSNR_head"] < max(zf["PSNR_rim"], zf["PSNR_interior"])
    unet = out["sr4_unet_tiny"]
    assert unet["PSNR_dc"] - unet["PSNR"] > 0.1 and unet["PSNR_interior_dc"] < zf["PSNR_interior"]
    m = re.search(r"rim / interior: zero-filling (\d+\.\d+) / (\d+\.\d+) dB, the student (\d+\.\d+) / (\d+\.\d+), "
                  r"the teacher (\d+\.\d+) / (\d+\.\d+), the U-Net (\d+\.\d+) / (\d+\.\d+) \((\d+\.\d+) in the interior "
                  r"after a data-consistency projection\)", _docs_text())
    assert m, "docs/training.md: the held-out rim / interior sentence is missing"
    measured = [out[n][k] for n in names for k in ("PSNR_rim", "PSNR_interior")] + [unet["PSNR_interior_dc"]]
    assert [float(v) for v in m.groups()] == pytest.approx(measured, abs=0.011)
    t = out["sr4_teacher_small"]
    assert f"moves the teacher by {t['PSNR_dc'] - t['PSNR']:.2f} dB on the held-out scan" in _docs_text()
    s = out["sr4_student_tiny"]
    assert (f"+{t['PSNR_tta'] - t['PSNR']:.2f} dB to the teacher on the held-out scan and "
            f"+{s['PSNR_tta'] - s['PSNR']:.2f} to the student alone") in _docs_text()
    assert zf["PSNR_tta"] == zf["PSNR"]   # a baseline has nothing to average
    with pytest.raises(SystemExit):
        pilots.main(["regions", "--split", "test"])
