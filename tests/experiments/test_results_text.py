"""The sentences that notebooks print about their results are computed from the numbers."""

from kdmri_lib.experiments.results import what_it_shows


def test_what_it_shows_names_the_measured_winner_and_the_models_below_the_baseline():
    rows = [{"method": "zero-filled", "PSNR": 20.0}, {"method": "bicubic", "PSNR": 19.0},
            {"method": "student alone", "PSNR": 22.5}, {"method": "teacher", "PSNR": 23.0},
            {"method": "distilled student", "PSNR": 22.25}, {"method": "U-Net (fastMRI)", "PSNR": 19.5}]
    text = what_it_shows(rows, "x")
    assert text[0] == "On x, teacher is best (23.00 dB PSNR), +0.50 dB over student alone."
    assert "Below zero-filled" in text[2] and "U-Net (fastMRI) -0.50 dB" in text[2] and "bicubic" not in text[2]
    assert any(t.startswith("The teacher (teacher) is 0.50 dB above the student trained alone") for t in text)
    assert any(t.startswith("In this run (one seed, so no spread), distillation did not help: the distilled student is -0.25 dB") for t in text)
    # the same rows in another order give the same sentences; a better distilled student flips the verdict
    assert what_it_shows(rows[::-1], "x") == text
    rows[4]["PSNR"] = 22.75
    assert any(t.startswith("In this run (one seed, so no spread), distillation helped: the distilled student is +0.25 dB") for t in what_it_shows(rows, "x"))
    assert what_it_shows([], "x") == []
    raw = [{"method": "zero_filled", "PSNR": 20.0}, {"method": "teacher", "PSNR": 19.0}]   # kind names work too
    assert what_it_shows(raw, "x")[-1].startswith("Below zero-filled") and "teacher -1.00 dB" in what_it_shows(raw, "x")[-1]
    # a better pretrained student elsewhere in the table does not replace the same-budget comparison
    rows.append({"method": "student alone · zoo tiny", "PSNR": 30.0})
    assert any(t.startswith("In this run (one seed, so no spread), distillation helped: the distilled student is +0.25 dB against the student alone "
                            "(student alone)") for t in what_it_shows(rows, "x"))


def test_short_run_context_quotes_the_ablation_of_the_same_task(tmp_path):
    """The sentences come from the ablation.json they cite: its budget and its paired differences
    against the student alone on the target slices; nothing for another task or factor."""
    import json

    from kdmri_lib.experiments.results import short_run_context

    comps = [{"a": "kd_output", "b": "student", "set": "scored", "mean": 0.5, "lo": 0.25, "hi": 0.75},
             {"a": "kd_output", "b": "student", "set": "heldout", "mean": 9.0, "lo": 8.0, "hi": 10.0},
             {"a": "full", "b": "kd_vanilla", "set": "scored", "mean": 7.0, "lo": 6.0, "hi": 8.0}]
    (tmp_path / "ablation.json").write_text(json.dumps({
        "settings": {"task": "sr", "factor": 4, "epochs": 2, "steps_per_epoch": 100, "seeds": [0, 1, 2]},
        "meta": {"comparisons": comps}, "rows": []}))
    lines = short_run_context(50, "sr", 4, tmp_path)
    assert "trained 50 steps" in lines[0] and "trained 200 (3 seeds, teacher" in lines[0]
    assert lines[1].strip() == "kd_output: +0.50 dB (95 % interval +0.25 to +0.75)" and len(lines) == 3
    assert len(short_run_context(200, "sr", 4, tmp_path)) == 2            # as long as the ablation: no caveat
    assert short_run_context(50, "sr", 2, tmp_path) == [] and short_run_context(50, "cs", 4, tmp_path) == []


def test_volume_sentences_are_computed_from_the_per_volume_columns():
    """Each row against the student alone per scored volume, and the contrast the references miss."""
    from kdmri_lib.experiments.ablation_report import volume_sentences

    vols = ["mni152_sagittal_val.h5", "mni152t2_sagittal_val.h5"]
    rows = [{"name": "student", "volume_PSNR": dict(zip(vols, (22.0, 20.0)))},
            {"name": "kd_output", "volume_PSNR": dict(zip(vols, (22.5, 21.25)))}]
    split = "references: 12 slices of 2 volume(s) (mni152_sagittal_02.h5, mni152_sagittal_03.h5)\npool: ..."
    text = volume_sentences(rows, split)
    assert text[0] == "By scored volume (T1w / T2w): student alone 22.00 / 20.00 dB."
    assert text[1] == "  kd_output: +0.50 / +1.25 dB against the student alone"
    assert "are all T1w: on the T2w volume" in text[2]
    both = "references: 12 slices of 2 volume(s) (mni152_sagittal_02.h5, mni152t2_sagittal_02.h5)\npool: ..."
    assert len(volume_sentences(rows, both)) == 2 and volume_sentences(rows[1:], split) == []
