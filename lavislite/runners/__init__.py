"""Runners: ``runner_base`` (epochs) and ``runner_iter`` (iterations) around one shared loop.

Importing this package registers them and the lr schedules (``registry.get_runner_class``).
"""

from lavislite.runners import lr_schedulers  # noqa: F401  (registers the schedules)
from lavislite.runners.runner_base import RunnerBase
from lavislite.runners.runner_iter import RunnerIter

__all__ = ["RunnerBase", "RunnerIter"]
