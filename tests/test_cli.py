"""The ``kdmri`` command: every subcommand reaches its module's ``main`` with the same flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdmri_lib import cli


@pytest.mark.parametrize("cmd", list(cli.COMMANDS))
def test_every_command_shows_its_modules_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("source", list(cli.DATA_COMMANDS))
def test_every_data_source_shows_its_help(source, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["data", source, "--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out


def test_usage_and_unknown_commands(capsys):
    assert cli.main([]) == 2 and "commands:" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["trian"]) == 2 and "unknown command 'trian'" in capsys.readouterr().err
    assert cli.main(["data", "knee"]) == 2 and "expected one of demo, fastmri" in capsys.readouterr().err


def test_a_command_runs_with_its_exit_code(tmp_path, demo_dir, capsys):
    """A real run through the dispatcher: a bad flag value is the module's own error (exit 2), and the
    demo data command reports the existing data."""
    assert cli.main(["train", "student", "--data", str(demo_dir), "--out", str(tmp_path / "o"), "--lr", "-1"]) == 2
    assert "lr must be > 0" in capsys.readouterr().err
    assert cli.main(["data", "demo", "--out", str(demo_dir), "--summary", "--quiet"]) == 0


def test_the_console_script_is_installed():
    """`pip install` (make install) puts the `kdmri` script beside the interpreter."""
    script = Path(sys.executable).parent / "kdmri"
    assert script.exists(), f"{script} missing: reinstall the package (make install) after pyproject changes"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "kdmri COMMAND" in out.stdout
