"""The browser harness of ``test_browser.py``: Chromium + chromedriver discovery, a real
``jupyter lab`` server on 127.0.0.1 (random token and port, temporary Jupyter folders, a temporary copy
of ``notebooks/`` beside a link to the demo data) and a headless Chromium driven through Selenium, as
module-scoped fixtures (``browser_tools``, ``lab``, ``driver``).

Without Chromium (``/usr/bin/chromium`` + ``/usr/bin/chromedriver``, Debian's ``chromium`` and
``chromium-driver`` packages; ``KDMRI_CHROMIUM`` / ``KDMRI_CHROMEDRIVER`` name other binaries) or
Selenium the browser tests skip, unless ``KDMRI_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where they
fail instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("KDMRI_REQUIRE_BROWSER", "").strip() not in ("", "0", "false", "no")

# the server start-up timeout (seconds): generous, the machine may be shared
T_SERVER = 90


# ----------------------------------------------------------------------------------------------
# tools: Chromium, chromedriver, Selenium
# ----------------------------------------------------------------------------------------------

def _missing(reason: str):
    msg = f"browser test: {reason}"
    if REQUIRE:
        pytest.fail(msg + " (KDMRI_REQUIRE_BROWSER is set: CI must run this test)", pytrace=False)
    pytest.skip(msg + "; install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


def _which(*names: str):
    for n in names:
        p = Path(n) if n.startswith("/") else (Path(shutil.which(n)) if shutil.which(n) else None)
        if p is not None and p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


@pytest.fixture(scope="module")
def browser_tools():
    env_chromium, env_driver = os.environ.get("KDMRI_CHROMIUM"), os.environ.get("KDMRI_CHROMEDRIVER")
    chromium = _which(env_chromium) if env_chromium else _which("/usr/bin/chromium", "chromium", "chromium-browser")
    driver = _which(env_driver) if env_driver else _which("/usr/bin/chromedriver", "chromedriver")
    if chromium is None:
        _missing(f"Chromium not found ({env_chromium or '/usr/bin/chromium'})")
    if driver is None:
        _missing(f"chromedriver not found ({env_driver or '/usr/bin/chromedriver'})")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("the Python package selenium is not installed (pip install -e '.[test]')")
    return chromium, driver


# ----------------------------------------------------------------------------------------------
# the JupyterLab server
# ----------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc), children first found first."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Lab:
    """A running ``jupyter lab`` server (see the ``lab`` fixture)."""

    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5):
        req = urllib.request.Request(f"{self.base}/api/{path.lstrip('/')}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Shut the server and its kernels down: the API first, then signals to the ids it started."""
        kids = _descendants(self.proc.pid)  # kernels run in their own sessions: remember them now
        if self.proc.poll() is None:
            try:
                self.api("shutdown", method="POST")
            except Exception:  # noqa: BLE001 - fall through to signals
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = [p for p in kids if _alive(p)]
            for p in left:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            while left and time.monotonic() < deadline:
                time.sleep(0.1)
                left = [p for p in left if _alive(p)]
            if not left:
                break


def _write_jupyter_config(home: Path) -> dict:
    """Temporary Jupyter folders: no news, no update check, no terminals, all cells in the DOM."""
    cfg, runtime, data = home / "config", home / "runtime", home / "data"
    settings, workspaces = home / "lab-settings", home / "lab-workspaces"
    for d in (cfg, runtime, data, settings, workspaces):
        d.mkdir(parents=True, exist_ok=True)
    (cfg / "jupyter_server_config.py").write_text(
        "c.LabApp.news_url = None\n"
        "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
        "c.ServerApp.terminals_enabled = False\n"
        "c.LabApp.extension_manager = 'readonly'\n"
        "c.ServerApp.open_browser = False\n"
        # kernels on local sockets (as `make lab` starts them): no TCP ports, no ipykernel warning
        "c.KernelManager.transport = 'ipc'\n"
    )
    user_settings = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                          "checkForUpdates": False},
        # every cell attached to the DOM: the test reads prompts and outputs of all of them
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, value in user_settings.items():
        f = settings / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    return {
        "JUPYTER_CONFIG_DIR": str(cfg),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(workspaces),
    }


#: parameters a workshop leader would lower to see the widgets quickly (the test is about the
#: widgets in a browser, not about training: notebook 04 otherwise trains for minutes first)
QUICK_PARAMS = {"04_distill": {"teacher_epochs": "1", "epochs": "1", "steps_per_epoch": "10", "val_slices": "2"}}


def _prepare_copy(path: Path) -> None:
    """Clear the stored outputs (and saved widget state) of a notebook copy, so that everything the
    test sees was produced by the browser's kernel, and lower the parameters of QUICK_PARAMS."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    quick = QUICK_PARAMS.get(path.stem, {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if quick and "parameters" in cell.metadata.get("tags", []):
            lines = cell.source.splitlines()
            for i, line in enumerate(lines):
                name = line.split("=", 1)[0].strip()
                if "=" in line and name in quick:
                    lines[i] = f"{name} = {quick[name]}"
            cell.source = "\n".join(lines)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def lab(browser_tools, demo_dir, tmp_path_factory):
    """``jupyter lab`` on 127.0.0.1 serving a temporary copy of the notebooks.

    Layout: ``root/notebooks/*.ipynb``, ``root/data/demo`` -> the demo data, ``root/runs/``: the
    notebooks' default parameters (``../data/demo``, ``../runs/demo``) point there unchanged.
    """
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for nb_path in (root / "notebooks").glob("*.ipynb"):
        _prepare_copy(nb_path)
    (root / "data").mkdir()
    (root / "data" / "demo").symlink_to(Path(demo_dir).resolve(), target_is_directory=True)
    (root / "runs").mkdir()
    env = dict(os.environ)
    env.update(_write_jupyter_config(tmp_path_factory.mktemp("jupyter")))
    # the kernel must import this checkout's kdmri_lib (CI installs it editable: then this is a no-op)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "2")
    token = secrets.token_hex(24)
    log = root.parent / f"{root.name}-server.log"
    server = None
    try:
        for attempt in range(3):  # a free port can be taken between the probe and the server's bind
            port = _free_port()
            cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                   "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
                cmd.append("--allow-root")
            with open(log, "ab") as fh:
                proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            server = Lab(root, port, token, proc, log)
            deadline = time.monotonic() + T_SERVER
            while proc.poll() is None:
                try:
                    server.api("status", timeout=2)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"jupyter lab did not answer within {T_SERVER} s:\n{server.log_tail()}")
                    time.sleep(0.3)
            if proc.poll() is None:
                break
            if attempt == 2 or "already in use" not in server.log_tail():
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
        yield server
    finally:
        if server is not None:
            server.stop()


# ----------------------------------------------------------------------------------------------
# the browser
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def driver(browser_tools, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_tools
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
              "--mute-audio", "--window-size=1440,1000", "--force-device-scale-factor=1",
              f"--user-data-dir={profile}"):
        opts.add_argument(a)
    service = Service(executable_path=chromedriver, log_output=str(profile.parent / f"{profile.name}-driver.log"))
    try:
        drv = webdriver.Chrome(service=service, options=opts)
    except Exception as e:  # noqa: BLE001
        if REQUIRE:
            raise
        pytest.skip(f"browser test: Chromium did not start through chromedriver: {e}")
    drv.set_window_size(1440, 1000)
    try:
        yield drv
    finally:
        drv.quit()
