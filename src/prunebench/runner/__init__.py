"""The end-to-end job behind ``prunebench run``: run folder handling and the staged pipeline."""

from prunebench.runner.budgets import Budgets
from prunebench.runner.pipeline import RunOutcome, execute_run
from prunebench.runner.rundir import RunDir, RunFolderError, claim, default_out, prepare

__all__ = ["Budgets", "RunDir", "RunFolderError", "RunOutcome", "claim", "default_out", "execute_run", "prepare"]
