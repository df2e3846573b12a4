"""The workshop experience in a real browser: JupyterLab and the widgets, end to end.

A real ``jupyter lab`` server is driven by headless Chromium through Selenium (the harness and its
fixtures are in ``conftest.py`` beside this file). For each notebook the test opens it,
runs all cells from the *Run* menu, waits for the explorer widget, moves its controls the way a
person would (drag a slider, pick a menu entry, click a toggle) and checks that the metrics line
and the figure change. Screenshots of every step go to the test's ``tmp_path`` and to
``runs/browser/`` (git-ignored), with the measured update latencies in
``runs/browser/latency.json``.

Without Chromium (``/usr/bin/chromium`` + ``/usr/bin/chromedriver``, Debian's ``chromium`` and
``chromium-driver`` packages; ``KDMRI_CHROMIUM`` / ``KDMRI_CHROMEDRIVER`` name other binaries) or
Selenium the tests skip, unless ``KDMRI_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where they fail
instead. Absolute times are not asserted (only a 5 s sanity bound on a widget update).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "runs" / "browser"
# timeouts (seconds): generous, the machine may be shared; absolute speed is not tested here
T_OPEN = 90
T_RUN_ALL = 300
T_UPDATE = 30
MAX_ROUND_TRIP_S = 5.0  # a sanity bound only; measured numbers go to latency.json

# ----------------------------------------------------------------------------------------------
# helpers: waiting, screenshots, the notebook UI
# ----------------------------------------------------------------------------------------------

def _wait(cond, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - stale elements while JupyterLab re-renders
            last_exc = e
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({last_exc!r})" if last_exc else ""))


class Shots:
    """Screenshots into the test's tmp_path and a stable copy in runs/browser/."""

    def __init__(self, driver, tmp: Path, prefix: str):
        self.driver, self.tmp, self.prefix = driver, tmp, prefix
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob(f"{prefix}_*.png"):
            old.unlink()
        self.files: list[Path] = []

    def __call__(self, step: str, element=None) -> Path:
        f = self.tmp / f"{self.prefix}_{len(self.files) + 1:02d}_{step}.png"
        if element is not None:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
            time.sleep(0.3)
        self.driver.save_screenshot(str(f))
        shutil.copy2(f, SHOTS / f.name)
        self.files.append(f)
        return f


def _record_latency(key: str, value: dict) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    f = SHOTS / "latency.json"
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        data = {}
    data[key] = value
    data["_note"] = ("browser: control event (pointerup / change) -> new figure loaded in the page, in ms "
                     "(performance.now); kernel: the explorer's last_update_s, read from the kernel; "
                     f"machine: {os.cpu_count()} CPUs")
    f.write_text(json.dumps(data, indent=1, sort_keys=True))


def _find_css(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _kernel_idle(driver) -> bool:
    """The open notebook has a started kernel with nothing running.

    Read from the notebook's own toolbar (kernel name not "No Kernel", execution indicator
    ``data-status="idle"``), with the status bar's "<kernel> | Idle" as the alternative. Since
    JupyterLab 4.6 in headless Chromium the status bar's notebook items can stay hidden (no
    current widget while the window has no focus), so the status bar alone is not a signal.
    """
    return bool(driver.execute_script("""
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (panel) {
  const name = panel.querySelector('.jp-Toolbar-kernelName');
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  if (name && ind && !/No Kernel/.test(name.textContent) && name.textContent.trim() !== ''
      && ind.getAttribute('data-status') === 'idle') return true;
}
return Array.from(document.querySelectorAll('.jp-StatusBar-Item:not(.lm-mod-hidden)'))
  .some(e => /\\S \\| Idle$/.test(e.textContent.trim()) && !/No Kernel/.test(e.textContent));
"""))


# the explorer's server-side update time, whatever the notebook named its variable
_KERNEL_TIME = "print([v for v in list(globals().values()) if isinstance(v, kd.widgets._Explorer)][-1].last_update_s)"

_PROMPTS_JS = """
return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'))
  .map(e => e.textContent.trim());
"""


def _all_cells_ran(driver) -> bool:
    prompts = driver.execute_script(_PROMPTS_JS)
    return bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts) and _kernel_idle(driver)


def _open_notebook(driver, lab, rel: str):
    """Open ``rel`` alone: earlier kernels shut down (REST API), JupyterLab's workspace reset."""
    driver.get("about:blank")
    for s in lab.api("sessions"):
        lab.api(f"sessions/{s['id']}", method="DELETE", timeout=30)
    driver.get(lab.url(f"lab/tree/{rel}") + "&reset")
    _wait(lambda: _find_css(driver, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell .jp-InputArea"),
          T_OPEN, f"{rel} to open")
    _wait(lambda: _kernel_idle(driver), T_OPEN, "the kernel to start (notebook toolbar: idle)")
    _wait(lambda: not driver.execute_script(
        "return Array.from(document.querySelectorAll('.jp-Spinner')).some(e => e.offsetParent !== null);"),
        T_OPEN, "the notebook's loading spinner to go")


def _run_all(driver):
    """Run -> Run All Cells, from the menu bar, as a person would."""
    from selenium.webdriver.common.by import By

    menu = _wait(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
                          if e.text.strip() == "Run"], 20, "the Run menu")[0]
    menu.click()
    item = _wait(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                          if e.find_element(By.CSS_SELECTOR, ".lm-Menu-itemLabel").text.strip() == "Run All Cells"],
                 20, "Run All Cells in the Run menu")[0]
    item.click()


def _outputs_report(driver) -> dict:
    """Errors, stderr (warnings) and rendered images in the open notebook's outputs."""
    return driver.execute_script("""
const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
const txt = sel => Array.from(nb.querySelectorAll(sel)).map(e => e.textContent.trim().slice(0, 500));
return {
  errors: txt('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'),
  stderr: txt('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
  images: Array.from(nb.querySelectorAll('.jp-RenderedImage img')).filter(i => i.complete && i.naturalWidth > 0).length,
  widgets: nb.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
};
""")


# JS probe: time from the control event (pointerup/change anywhere in the page) to the figure's
# new src and to its load (the new image displayed), and to the metrics line's change
_PROBE_JS = """
const box = arguments[0];
const img = box.querySelector('img.kdmri-figure, .kdmri-figure img');
const met = box.querySelector('.kdmri-metrics');
const st = window.__kdProbe = window.__kdProbe || {};
Object.assign(st, {armed: true, evt: null, src: null, load: null, metrics: null});
if (!box.__kdHooked) {
  box.__kdHooked = true;
  const onEvt = e => { if (st.armed && st.evt === null) { st.evt = performance.now(); st.kind = e.type; } };
  document.addEventListener('pointerup', onEvt, true);
  document.addEventListener('change', onEvt, true);
  new MutationObserver(() => { if (st.evt !== null && st.src === null) st.src = performance.now(); })
    .observe(img, {attributes: true, attributeFilter: ['src']});
  img.addEventListener('load', () => { if (st.src !== null && st.load === null) st.load = performance.now(); });
  new MutationObserver(() => { if (st.evt !== null && st.metrics === null) st.metrics = performance.now(); })
    .observe(met, {subtree: true, childList: true, characterData: true});
}
"""


def _state(box) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    metrics = box.find_element(By.CSS_SELECTOR, ".kdmri-metrics").text.strip()
    src = box.find_element(By.CSS_SELECTOR, "img.kdmri-figure, .kdmri-figure img").get_attribute("src") or ""
    return metrics, src


def _interact(driver, box, action, what: str) -> dict:
    """Do ``action``; wait until the metrics text and the figure changed; return the timings (ms)."""
    before = _state(box)
    driver.execute_script(_PROBE_JS, box)
    action()
    probe = _wait(lambda: (lambda p: p if p and p.get("load") is not None and p.get("metrics") is not None else None)(
        driver.execute_script("return window.__kdProbe;")), T_UPDATE, f"the figure and metrics to update after {what}",
        poll=0.05)
    after = _wait(lambda: (lambda s: s if s[0] != before[0] and s[1] != before[1] else None)(_state(box)),
                  T_UPDATE, f"a new metrics text and figure after {what}")
    assert after[0] != before[0], f"{what}: the metrics text did not change ({before[0]!r})"
    assert after[1] != before[1], f"{what}: the figure did not change"
    t = {k: round(probe[k] - probe["evt"], 1) for k in ("src", "load", "metrics")}
    t["event"] = probe.get("kind")
    t["metrics_before"], t["metrics_after"] = before[0], after[0]
    assert t["load"] / 1000 < MAX_ROUND_TRIP_S, f"{what}: browser round trip {t['load']:.0f} ms"
    return t


def _control(box, css: str, index: int = 0, label: str | None = None):
    """The ``index``-th control matching ``css`` in the explorer, or the one whose description is ``label``."""
    from selenium.webdriver.common.by import By

    found = box.find_elements(By.CSS_SELECTOR, css)
    if label is not None:
        found = [s for s in found if s.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == label]
    assert len(found) > (index if label is None else 0), f"no control {css} {label or index} in the explorer"
    return found[index if label is None else 0]


def _slider(box, index: int = 0, label: str | None = None):
    return _control(box, ".widget-slider", index, label)


def _drag_slider(driver, slider, steps: int, n_values: int):
    """Drag the slider's handle by ``steps`` positions (of ``n_values`` - 1 in its range)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    track = slider.find_element(By.CSS_SELECTOR, ".noUi-target")
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    dx = round(track.size["width"] * steps / max(n_values - 1, 1))
    if handle.location["x"] + handle.size["width"] / 2 > track.location["x"] + track.size["width"] / 2:
        dx = -dx  # in the right half: move left, so that the value does change
    ActionChains(driver, duration=50).click_and_hold(handle).move_by_offset(dx // 2, 0) \
        .move_by_offset(dx - dx // 2, 0).release().perform()


def _readout(slider) -> str:
    from selenium.webdriver.common.by import By

    return slider.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip()


def _kernel_print(driver, code: str, timeout: float = 30) -> str:
    """Append a code cell at the end of the open notebook, run it, return its text output.

    Typed in command/edit mode through the keyboard; the cell stays for later calls (re-run with
    ``_rerun_last_cell``)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cells = _find_css(driver, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    last = cells[-1]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", last)
    last.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()  # make it the active cell
    ActionChains(driver).send_keys(Keys.ESCAPE).send_keys("b").perform()  # command mode: insert below
    new = _wait(lambda: (lambda c: c[-1] if len(c) == len(cells) + 1 else None)(
        _find_css(driver, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")), 10, "a new cell")
    new.find_element(By.CSS_SELECTOR, ".cm-content").click()
    ActionChains(driver).send_keys(code).perform()
    return _run_last_cell(driver, timeout)


def _run_last_cell(driver, timeout: float = 30) -> str:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cell = _find_css(driver, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")[-1]
    prompt = cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").text.strip()
    cell.find_element(By.CSS_SELECTOR, ".cm-content").click()
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()

    def done():
        p = cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").text.strip()
        if re.fullmatch(r"\[\d+\]:", p) and p != prompt and _kernel_idle(driver):
            return cell.find_element(By.CSS_SELECTOR, ".jp-OutputArea").text.strip() or None
        return None

    return _wait(done, timeout, "the scratch cell to run")


def _open_and_run(driver, lab, rel: str, shots: Shots, explorer_css: str):
    from selenium.webdriver.common.by import By

    t0 = time.perf_counter()
    _open_notebook(driver, lab, rel)
    t_open = time.perf_counter() - t0
    shots("opened")
    t1 = time.perf_counter()
    _run_all(driver)
    box = _wait(lambda: (lambda b: b[0] if b else None)(_find_css(driver, explorer_css)), T_RUN_ALL,
                f"the explorer widget ({explorer_css})")
    _wait(lambda: _all_cells_ran(driver), T_RUN_ALL, "every cell to run (numbered prompts, kernel idle)")
    _wait(lambda: box.find_element(By.CSS_SELECTOR, "img.kdmri-figure, .kdmri-figure img")
          .get_attribute("src"), T_UPDATE, "the explorer's figure")
    _wait(lambda: box.find_element(By.CSS_SELECTOR, ".kdmri-metrics").text.strip(), T_UPDATE, "the metrics line")
    t_run = time.perf_counter() - t1
    report = _outputs_report(driver)
    assert not report["errors"], f"{rel}: error outputs in the browser: {report['errors']}"
    assert not report["stderr"], f"{rel}: stderr output (warnings) in the browser: {report['stderr']}"
    shots("run_all")  # JupyterLab follows the execution: the end of the notebook
    return box, report, {"open_s": round(t_open, 1), "run_all_s": round(t_run, 1)}


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------

def test_01_mask_explorer_in_jupyterlab(lab, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = Shots(driver, tmp_path, "01")
    box, report, times = _open_and_run(driver, lab, "notebooks/01_kspace_basics.ipynb", shots, ".kdmri-mask-explorer")
    # figures of the notebook (show_images, aliasing comparison) render as images in JupyterLab
    assert report["images"] >= 3, f"only {report['images']} rendered figures in notebook 01"
    figs = _find_css(driver, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedImage img")
    shots("figure", figs[-1])
    shots("widget", box)
    img = box.find_element(By.CSS_SELECTOR, "img.kdmri-figure")
    assert img.size["width"] > 400 and driver.execute_script("return arguments[0].naturalWidth;", img) > 0
    assert box.size["width"] <= driver.get_window_size()["width"], "the explorer is wider than the window"

    acc = _slider(box, label="acceleration")
    a0 = int(_readout(acc))
    lat_slider = _interact(driver, box, lambda: _drag_slider(driver, acc, 4, 16 - 2 + 1), "the acceleration slider")
    a1 = int(_readout(acc))
    assert a1 != a0 and f"x{a1}" in lat_slider["metrics_after"], (a0, a1, lat_slider)
    shots("slider_moved", box)
    kernel_slider = float(_kernel_print(driver, _KERNEL_TIME))

    select = _control(box, ".widget-dropdown", label="mask type").find_element(By.CSS_SELECTOR, "select")
    current = Select(select).first_selected_option.text
    target = "equispaced" if current != "equispaced" else "random"
    lat_mask = _interact(driver, box, lambda: Select(select).select_by_visible_text(target), "the mask type")
    assert f"cs {target} x{a1}" in lat_mask["metrics_after"], lat_mask
    shots("mask_type_changed", box)
    kernel_mask = float(_run_last_cell(driver))

    # equal budget: exactly W/R lines, the scan-time readout follows; the noise slider
    budget = box.find_element(By.CSS_SELECTOR, ".widget-checkbox input[type=checkbox]")
    lat_budget = _interact(driver, box, budget.click, "the equal-budget switch")
    assert "equal budget" in lat_budget["metrics_after"] and "scan time" in lat_budget["metrics_after"], lat_budget
    shots("equal_budget", box)
    noise = _slider(box, label="noise")
    lat_noise = _interact(driver, box, lambda: _drag_slider(driver, noise, 10, 51), "the noise slider")
    assert "noise" in lat_noise["metrics_after"] and _readout(noise) != "0.00", lat_noise
    shots("noise", box)

    # the task toggle: sr greys out the cs controls
    sr = [b for b in box.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons button") if b.text.startswith("sr")]
    assert sr, "no 'sr' button in the task toggle"
    lat_task = _interact(driver, box, sr[0].click, "the task toggle (sr)")
    assert lat_task["metrics_after"].startswith("sr x"), lat_task
    _wait(lambda: not select.is_enabled(), T_UPDATE, "the mask type to be greyed out for sr")
    _wait(lambda: not budget.is_enabled(), T_UPDATE, "the equal-budget switch to be greyed out for sr")
    shots("task_sr", box)
    kernel_task = float(_run_last_cell(driver))

    _record_latency("01_mask_explorer", {
        "acceleration_slider": {**lat_slider, "kernel_update_ms": round(kernel_slider * 1000, 1),
                                "value": f"{a0} -> {a1}"},
        "mask_type_dropdown": {**lat_mask, "kernel_update_ms": round(kernel_mask * 1000, 1),
                               "value": f"{current} -> {target}"},
        "task_toggle": {**lat_task, "kernel_update_ms": round(kernel_task * 1000, 1), "value": "cs -> sr"},
        "equal_budget_switch": lat_budget, "noise_slider": lat_noise,
        **times,
    })
    for f in shots.files:
        assert f.stat().st_size > 10_000, f"{f.name}: suspiciously small screenshot"


@pytest.mark.skipif(not (REPO / "notebooks" / "04_distill.ipynb").exists(),
                    reason="notebooks/04_distill.ipynb does not exist yet (the loss explorer comes with it)")
def test_04_loss_explorer_in_jupyterlab(lab, driver, tmp_path):
    from selenium.webdriver.common.by import By

    shots = Shots(driver, tmp_path, "04")
    box, report, times = _open_and_run(driver, lab, "notebooks/04_distill.ipynb", shots, ".kdmri-loss-explorer")
    shots("widget", box)

    slider = _slider(box, 0)
    v0 = _readout(slider)
    lat_slider = _interact(driver, box, lambda: _drag_slider(driver, slider, 3, 11), "the first slider")
    assert _readout(slider) != v0
    shots("slider_moved", box)

    checkboxes = box.find_elements(By.CSS_SELECTOR, ".widget-checkbox input[type=checkbox]")
    toggles = box.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons button:not(.mod-active)")
    toggle_btn = box.find_elements(By.CSS_SELECTOR, "button.widget-toggle-button")
    target = (checkboxes or toggles or toggle_btn or [None])[0]
    assert target is not None, "no checkbox or toggle in the loss explorer"
    label = (target.text or target.find_element(By.XPATH, "./ancestor::div[contains(@class, 'widget-')][1]").text
             or "switch").strip()
    lat_toggle = _interact(driver, box, target.click, f"the first switch ({label})")
    shots("switch_toggled", box)
    kernel = float(_kernel_print(driver, _KERNEL_TIME))

    # the recipe selector: the released code's recipe has no distillation term left (KL = 0)
    from selenium.webdriver.support.ui import Select

    recipe = _control(box, ".widget-dropdown", label="recipe").find_element(By.CSS_SELECTOR, "select")
    lat_recipe = _interact(driver, box, lambda: Select(recipe).select_by_visible_text("kd_vanilla"), "the recipe")
    assert "angle(KD, truth)" in lat_recipe["metrics_after"] and "teacher frozen" in lat_recipe["metrics_after"]
    Select(recipe).select_by_visible_text("released code")
    released = _wait(lambda: (lambda t: t if "angle" not in t else None)(
        box.find_element(By.CSS_SELECTOR, ".kdmri-metrics").text), T_UPDATE, "the released code's recipe")
    assert "released KL term 0.0" in released and "teacher frozen" in released, released
    shots("released_recipe", box)
    # take one step: the student's PSNR change is reported, the frozen teacher's is not
    box.find_element(By.CSS_SELECTOR, "button.kdmri-step").click()
    result = _wait(lambda: (lambda t: t if "one step" in t else None)(
        box.find_element(By.CSS_SELECTOR, ".kdmri-step-result").text), T_UPDATE, "the one-step result")
    assert "teacher unchanged" in result and "student" in result, result
    shots("one_step", box)

    _record_latency("04_loss_explorer", {"first_slider": lat_slider, "first_switch": {**lat_toggle, "label": label},
                                         "recipe": lat_recipe,
                                         "kernel_last_update_ms": round(kernel * 1000, 1), **times})
