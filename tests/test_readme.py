"""README.md stays a user's guide whose commands parse: every command of its code blocks goes through the real
argument parser (a renamed flag fails here), every flag its inline commands name exists, and the page stays
short and free of commit hashes and issue numbers. Running the commands is ``scripts/readme_commands.py``
(minutes)."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from prunebench.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 220


def _script():
    """``scripts/readme_commands.py`` as a module (the one reader of the README's commands)."""
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strict_parser() -> argparse.ArgumentParser:
    """The CLI's parser without prefix matching, so an old flag name that is a prefix of the new one
    (``--batch-size`` for ``--batch-sizes``) fails instead of being taken as an abbreviation."""
    parser = build_parser()
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.allow_abbrev = False
    return parser


def _parses(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``argv`` (without the program name) parses; else why not."""
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:
        return f"exit {exc.code}"
    return None if getattr(args, "handler", None) is not None else "no subcommand"


def test_every_code_block_command_parses_with_the_real_parser(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _script().readme_commands(README, "/models/minilm")
    assert len(commands) >= 5, commands  # the quick start's commands were found
    assert {c[1] for c in commands} >= {"run", "prune", "bench", "export"}
    assert not any("path/to/" in arg for c in commands for arg in c)  # the placeholder was replaced
    parser = _strict_parser()
    failures = {" ".join(c): why for c in commands if (why := _parses(parser, c))}
    assert not failures, f"README commands the parser refuses: {failures}\n{capsys.readouterr().err}"


def test_the_parse_check_catches_a_renamed_flag() -> None:
    text = ("```bash\nprunebench run --model small --quick\nprunebench run --modle small   # a typo\n"
            "prunebench bench m --batch-size 1,16   # an abbreviation of --batch-sizes\n```\n")
    good, typo, abbreviated = _script().readme_commands(text)
    parser = _strict_parser()
    assert _parses(parser, good) is None
    assert _parses(parser, typo) == "exit 2" and _parses(parser, abbreviated) == "exit 2"


def test_continuations_comments_and_other_languages() -> None:
    text = ("```bash\nmake demo   # not ours\nprunebench prune --model m \\\n    --out pruned/  # two lines\n```\n"
            "```python\nprunebench = 1\n```\n")
    assert _script().readme_commands(text) == [["prunebench", "prune", "--model", "m", "--out", "pruned/"]]


def test_every_flag_of_an_inline_command_exists() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for span in re.findall(r"`prunebench ([a-z]+)([^`]*)`", README):
        command, rest = span
        assert command in sub.choices, f"README names an unknown command: prunebench {command}"
        known = set(sub.choices[command]._option_string_actions)
        missing += [f"{command} {flag}" for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)
                    if flag not in known]
    assert not missing, f"flags the README's inline commands name that the parser lacks: {missing}"


def test_readme_is_short_and_has_no_commit_hashes_or_issue_numbers() -> None:
    lines = README.count("\n") + (not README.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md has {lines} lines; a user's guide keeps to {MAX_LINES}"
    hashes = [h for h in re.findall(r"\b[0-9a-fA-F]{7,40}\b", README)
              if re.search(r"\d", h) and re.search(r"[a-fA-F]", h)]
    assert not hashes, f"commit-hash-like strings in README.md: {hashes}"
    issues = re.findall(r"(?<![\w&/])#\d+\b", README)
    assert not issues, f"issue numbers in README.md: {issues}"
