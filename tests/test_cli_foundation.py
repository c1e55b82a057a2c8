"""CLI skeleton: help, version, list models, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prunebench import __version__
from prunebench.cli.main import main


def test_version_and_help(capsys):
    assert main(["--version"]) == 0  # answered before the parser (and torch) is loaded
    assert capsys.readouterr().out == f"prunebench {__version__}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "list" in capsys.readouterr().out


def test_list_models_shows_presets_with_parameter_counts(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in ("small", "medium", "large"):
        assert name in out
    assert "1,769,104" in out  # small's total parameter count


def test_bad_argument_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "prunebench", "list", "nothing"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_name_type_lists_the_presets():
    import argparse

    from prunebench.cli.common import model_name

    assert model_name("small") == "small"
    with pytest.raises(argparse.ArgumentTypeError, match="choose from: small, medium, large, custom"):
        model_name("tiny")
