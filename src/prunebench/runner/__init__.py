"""The end-to-end job behind ``prunebench run``: run folder handling and the staged pipeline."""

from prunebench.runner.pipeline import QuickBudget, RunOutcome, execute_run
from prunebench.runner.rundir import RunDir, RunFolderError, default_out, prepare

__all__ = ["QuickBudget", "RunDir", "RunFolderError", "RunOutcome", "default_out", "execute_run", "prepare"]
