"""Fault injection for tests/test_reliability.py, loaded by `train.py` through the Hydra callbacks group
(`+callbacks.kill._target_=_faults.KillAtStep`, with tests/ on PYTHONPATH). Not a test module."""
import os
import signal

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """SIGKILL the training process once `step` optimizer steps are done: no cleanup, no handler, no final save."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
