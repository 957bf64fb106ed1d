"""Runners: ``runner_base`` (:class:`EpochRunner`, epochs) and ``runner_iter`` (:class:`IterationRunner`,
iterations) around one shared loop. The registry names are LAVIS's, so LAVIS project yamls keep working.

Importing this package registers them and the lr schedules (``registry.get_runner_class``).
"""

from lavislite.runners import lr_schedulers  # noqa: F401  (registers the schedules)
from lavislite.runners.epoch_runner import EpochRunner
from lavislite.runners.iteration_runner import IterationRunner

RunnerBase = EpochRunner  # LAVIS's class names, for code ported from LAVIS
RunnerIter = IterationRunner

__all__ = ["EpochRunner", "IterationRunner", "RunnerBase", "RunnerIter"]
