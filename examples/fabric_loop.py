"""A hand-written Lightning Fabric loop, recorded as provenance with ProvFabricLogger.

    pip install 'cnnprov[demo]'
    python examples/fabric_loop.py --epochs 3 --store provenance
    cnnprov runs --store provenance
    cnnprov query epoch-metrics --store provenance
    cnnprov query layers --store provenance --param run=<the run id it printed>

Fabric has no callbacks: the loop says where each epoch begins and ends (``logger.epoch``), and
hands the logger the model, optimizer and data Fabric set up, which it records unwrapped.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F

from cnnprov.demo import DigitsCNN, DigitsDataModule
from cnnprov.integrations.fabric import ProvFabricLogger


def train(store: str, epochs: int = 3, lr: float = 0.05, limit: int | None = 600) -> ProvFabricLogger:
    """Train the digits CNN for ``epochs`` in a Fabric loop, recorded in ``store``; returns the logger."""
    logger = ProvFabricLogger(store=store, run_name=f"fabric lr={lr}")
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[logger])
    fabric.seed_everything(0)
    data = DigitsDataModule(batch_size=32, limit=limit)
    data.setup()
    model = DigitsCNN(lr=lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model, optimizer = fabric.setup(model, optimizer)
    train_loader, val_loader = fabric.setup_dataloaders(data.train_dataloader(), data.val_dataloader())

    logger.log_hyperparams({"lr": lr, "epochs": epochs, "batch_size": 32})
    logger.log_graph(model)
    logger.log_optimizer(optimizer)
    logger.log_data("train", train_loader)
    logger.log_data("validation", val_loader)
    step = 0
    with logger.recording():
        for epoch in range(epochs):
            with logger.epoch(epoch):
                model.train()
                with logger.steps():  # values logged at each step: one series an epoch
                    for images, labels in train_loader:
                        loss = F.cross_entropy(model(images), labels)
                        optimizer.zero_grad()
                        fabric.backward(loss)
                        optimizer.step()
                        fabric.log_dict({"train_loss": loss.item()}, step=step)
                        step += 1
                model.eval()
                with torch.no_grad():
                    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in val_loader)
                fabric.log_dict({"val_acc": correct / len(val_loader.dataset), "epoch": epoch}, step=step)
            scheduler.step()
    return logger


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs to train (default: 3)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (default: 0.05)")
    parser.add_argument("--store", default="provenance", help="provenance store directory (default: ./provenance)")
    args = parser.parse_args(argv)
    logger = train(args.store, epochs=args.epochs, lr=args.lr)
    print(f"recorded run {logger.run_id} in {args.store}")


if __name__ == "__main__":
    main()
