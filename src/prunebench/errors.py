"""Exception types whose message is a complete one-line explanation for the user.

The CLI prints ``str(error)`` of these (and of ``ValueError``) as a single line and exits with code 2
(:class:`UntrustedTiming`: code 3).
"""


class PrunebenchError(Exception):
    """Base class of errors that carry a user-facing, one-line message."""


class CheckpointError(PrunebenchError):
    """A saved model folder is missing, truncated, corrupted or does not match its config."""


class UntrustedTiming(PrunebenchError):
    """A measurement the result would rest on could not be trusted (most often: the machine was busy while it
    was taken). The CLI prints the one-line message and exits with code 3, not 2: the input was fine."""


def install_hint(extra: str) -> str:
    """The command that installs an optional extra, as a user with a clone runs it (prunebench is on no package
    index, so ``pip install 'prunebench[extra]'`` would fail)."""
    return f'pip install -e ".[{extra}]"'
