"""Entry point of the ``prunebench`` command: parse argv, dispatch, turn user errors into one line."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence

from prunebench._version import __version__
from prunebench.errors import PrunebenchError, UntrustedTiming

#: Subcommand modules (under ``prunebench.cli``); each exposes ``register(subparsers)`` and sets ``handler`` on
#: its parser. Imported by :func:`build_parser`, not here: they import torch, which ``--version`` must not wait for.
COMMANDS = ("run_cmd", "list_cmd", "report_cmd", "compare_cmd", "bench_cmd", "prune_cmd", "search_cmd",
            "train_cmd", "eval_cmd", "export_cmd")

VERBOSE_HELP = "more log output, tracebacks on errors"


def _asks_version(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for ``--version`` before any subcommand (where argparse would honour it)."""
    for arg in argv:
        if arg == "--version":
            return True
        if not arg.startswith("-"):
            return False
    return False


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    from prunebench.cli.common import OneLineParser

    parser = OneLineParser(
        prog="prunebench",
        description="Prune a transformer encoder, then measure honestly how much faster, smaller and "
        "less accurate it got.",
    )
    parser.add_argument("--version", action="version", version=f"prunebench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"prunebench.cli.{name}").register(sub)
    for command in sub.choices.values():
        # -v also after the subcommand (`prunebench run -v`); SUPPRESS keeps a -v given before it.
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (an OSError with its file name, whatever else is in it)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        # Said plainly: the results store's own wording ("database or disk is full") read as a broken store.
        text = f"disk full: no space left to write {exc.filename}" if exc.filename else "disk full: no space left"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, RecursionError):
        text = "input nested too deeply"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if _asks_version(argv):
        sys.stdout.write(f"prunebench {__version__}\n")
        return 0
    parser = build_parser()
    from prunebench.cli.common import EXIT_UNTRUSTED

    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Commands may lower the prunebench logger's level to feed a debug log file (run.log); the console
    # handler keeps its own level so the terminal shows only progress, results and warnings (-v: all).
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    try:
        return int(args.handler(args) or 0)
    except UntrustedTiming as exc:
        sys.stderr.write(f"prunebench {args.command}: {_one_line(exc)}\n")
        return EXIT_UNTRUSTED
    except (PrunebenchError, ValueError) as exc:
        if args.verbose:
            logging.getLogger("prunebench").exception("failed")
        sys.stderr.write(f"prunebench {args.command}: error: {_one_line(exc)}\n")
        return 2
    except (OSError, RecursionError) as exc:
        # A file system failure the up-front checks could not foresee (disk full, a folder removed mid-run):
        # still one line, never a traceback (-v logs it); exit 1, since the input itself was fine.
        logging.getLogger("prunebench").debug("failed", exc_info=True)
        if args.verbose:
            logging.getLogger("prunebench").exception("failed")
        sys.stderr.write(f"prunebench {args.command}: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("prunebench: interrupted\n")
        return 130
