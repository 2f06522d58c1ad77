"""Training stages: the shared run machinery (run folders, checkpoints, the divergence guard, adapters),
the stage registry (:mod:`workings.train.stages`), SFT and GRPO."""

import logging


class _QuickCheckpoints(logging.Filter):
    """transformers orders checkpoints by modification time and, when the oldest and newest kept
    are less than a second apart, warns that the filesystem's mtime "may not be reliable" and
    orders them by step. A short run (the demo, the tests) saves that fast on any filesystem, and
    ordering by step is what workings wants anyway: the warning says nothing true, so it goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mtime may not be reliable" not in record.getMessage()


logging.getLogger("transformers.trainer_utils").addFilter(_QuickCheckpoints())
