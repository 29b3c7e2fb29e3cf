"""A real training process for the live-reading tests: it waits at the start of each epoch k >= 1
until the file ``go-k`` appears in a gate directory, so a test can read the store between epochs.

Usage: python paced_training.py STORE GATE_DIR EPOCHS
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L

from cnnprov import ProvLogger
from cnnprov.demo import DigitsCNN, DigitsDataModule


class PacedCNN(DigitsCNN):
    def __init__(self, gate: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate = Path(gate)

    def on_train_epoch_start(self) -> None:
        # LightningModule hooks run after callbacks: cnnprov has stored the previous epoch by now
        epoch = self.current_epoch
        print(f"epoch {epoch} waiting", flush=True)
        if epoch == 0:
            return
        deadline = time.monotonic() + 120
        while not (self.gate / f"go-{epoch}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"nobody opened gate {epoch}")
            time.sleep(0.02)


def main() -> None:
    store, gate, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=ProvLogger(store=store, run_name="paced"),
        limit_train_batches=3,
        limit_val_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=gate,
    )
    trainer.fit(PacedCNN(gate), datamodule=DigitsDataModule(batch_size=16, limit=160))
    print("finished", flush=True)


if __name__ == "__main__":
    main()
