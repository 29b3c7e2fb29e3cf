"""Wall-time overhead of ProvLogger and its peers on real training.

Trains :class:`cnnprov.demo.DigitsCNN` on scikit-learn's digits (two conv
layers, ~23 batches an epoch) with ``log_every_n_steps=1`` and a
``ModelCheckpoint`` that writes every epoch, once without a logger and once
with each logger, in pairs that run back to back in one process (the order
inside a pair alternates). Each pair gives one ratio ``t(logger) / t(none)``;
the median of those ratios is the overhead, and min/max show the spread, so a
noisy, shared machine shows as a wide range rather than a wrong median. CPU
time is compared the same way, for the whole process (a logger's background
threads included) and for the training thread alone: on a busy machine these
move less than wall time, and their difference is the work a logger moved off
the training thread.

``--workload realistic`` trains instead a 4-conv BatchNorm CNN on synthetic 3×32×32 images
(CIFAR-shaped, made here from a fixed seed), logging every 10 steps, a checkpoint every
epoch, 3 epochs: batches of ~0.1 s rather than ~3 ms, where a logger's fixed per-run and
per-epoch costs are what is left to find. The CPU of a logger's background threads is
reported as a share of the training thread's: the process CPU outside the training thread,
less that of the run without a logger in the same pair.

Usage::

    python benchmarks/overhead.py                 # 9 pairs × 20 epochs (a few minutes)
    python benchmarks/overhead.py --workload realistic --loggers csv,prov
    python benchmarks/overhead.py --pairs 15 --json overhead.json
    python benchmarks/overhead.py --smoke         # seconds: 1 pair, 1 tiny epoch

TensorBoardLogger and MLFlowLogger take part when ``tensorboard`` and ``mlflow``
import.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from cnnprov.demo import DigitsCNN, DigitsDataModule
from cnnprov.storage.local import wait_released

from _common import machine, median, peer_logger, quiet_lightning, table, write_json

quiet_lightning()


def available_loggers() -> list[str]:
    """null and csv always; tensorboard and mlflow where they import; prov last."""
    names = ["null", "csv"]
    names += [name for name in ("tensorboard", "mlflow") if importlib.util.find_spec(name) is not None]
    return [*names, "prov"]


class NullLogger(Logger):
    """A logger that records nothing: what Lightning's own logging path costs any logger."""

    @property
    def name(self) -> str:
        return "null"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass


def make_logger(kind: str, root: Path) -> Any:
    if kind == "none":
        return False
    if kind == "null":
        return NullLogger()
    return peer_logger(kind, root, "overhead")


class RealisticCNN(L.LightningModule):
    """Four 3×3 conv layers with BatchNorm, for 3×32×32 images in 10 classes."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[torch.nn.Module] = []
        channels = 3
        for width in (32, 64, 128, 128):
            layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU()]
            layers.append(torch.nn.MaxPool2d(2))
            channels = width
        self.net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(128 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(1) == labels).float().mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def realistic_data(smoke: bool) -> tuple[Any, Any]:
    """Synthetic CIFAR-shaped images (a fixed seed): 64 training and 8 validation batches of 32."""
    generator = torch.Generator().manual_seed(0)
    train, val = (2, 1) if smoke else (64, 8)
    loaders = []
    for batches in (train, val):
        images = torch.randn(batches * 32, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (batches * 32,), generator=generator)
        dataset = torch.utils.data.TensorDataset(images, labels)
        loaders.append(torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=batches == train))
    return loaders[0], loaders[1]


def train_once(kind: str, epochs: int, smoke: bool, workload: str = "stress") -> dict[str, float]:
    """One run in a fresh directory; returns wall and process-CPU seconds of logger + Trainer + fit."""
    root = Path(tempfile.mkdtemp(prefix=f"cnnprov-overhead-{kind}-"))
    try:
        L.seed_everything(0, verbose=False)
        if workload == "realistic":
            model: L.LightningModule = RealisticCNN()
            train, val = realistic_data(smoke)
            fit_data: dict[str, Any] = {"train_dataloaders": train, "val_dataloaders": val}
            limits: dict[str, Any] = {}
            every = 10
        else:
            model = DigitsCNN()
            fit_data = {"datamodule": DigitsDataModule(batch_size=64, limit=160 if smoke else None)}
            limits = dict(limit_train_batches=3, limit_val_batches=1) if smoke else {}
            every = 1
        wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
        trainer = L.Trainer(
            max_epochs=epochs,
            logger=make_logger(kind, root),
            callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1)],
            log_every_n_steps=every,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(root),
            **limits,
        )
        trainer.fit(model, **fit_data)
        return {
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
            "train_thread_cpu_s": time.thread_time() - thread,
        }
    finally:
        if kind.startswith("prov"):  # finalize lets go of the store before fit returns: this finds nothing to wait for
            wait_released(root / "provenance")
        shutil.rmtree(root, ignore_errors=True)


def background_cpu(run: dict[str, float]) -> float:
    """CPU seconds the process spent outside the training thread."""
    return run["cpu_s"] - run["train_thread_cpu_s"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=9, help="measured pairs per logger (default 9)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20; realistic: 3)")
    parser.add_argument(
        "--workload", choices=("stress", "realistic"), default="stress",
        help="stress: the digits CNN, every step logged; realistic: a 4-conv BatchNorm CNN on 3×32×32 images",
    )
    parser.add_argument(
        "--loggers", default=None,
        help="comma-separated subset of csv,tensorboard,mlflow,prov; prov-nousage is ProvLogger(resource_use=False)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the pair order")
    parser.add_argument(
        "--smoke", action="store_true", help="1 pair of 1 tiny epoch: checks the script, measures nothing"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.workload == "realistic" else 20
    if args.smoke:
        args.pairs, args.epochs = 1, 1
    torch.set_num_threads(1)
    loggers = available_loggers()
    if args.loggers:
        wanted = args.loggers.split(",")
        loggers = [name for name in [*loggers, "prov-nousage"] if name in wanted]
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}")
    print(f"versions: {info['versions']}")
    print(f"{args.pairs} pairs × {args.epochs} epochs, loggers: none vs {', '.join(loggers)}")

    for kind in ["none", *loggers]:  # warm-up: imports, first-use caches, the digits file
        train_once(kind, 1 if not args.smoke else args.epochs, args.smoke, args.workload)

    order = random.Random(args.seed)
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in loggers}
    for pair in range(args.pairs):
        kinds = list(loggers)
        order.shuffle(kinds)
        for kind in kinds:
            if (pair + kinds.index(kind)) % 2 == 0:
                base = train_once("none", args.epochs, args.smoke, args.workload)
                with_logger = train_once(kind, args.epochs, args.smoke, args.workload)
            else:
                with_logger = train_once(kind, args.epochs, args.smoke, args.workload)
                base = train_once("none", args.epochs, args.smoke, args.workload)
            samples[kind].append(
                {
                    "none_s": base["wall_s"],
                    "logger_s": with_logger["wall_s"],
                    "ratio": with_logger["wall_s"] / base["wall_s"],
                    "cpu_ratio": with_logger["cpu_s"] / base["cpu_s"],
                    "train_thread_cpu_ratio": with_logger["train_thread_cpu_s"] / base["train_thread_cpu_s"],
                    # the logger's threads: CPU outside the training thread, less the run without it
                    "background_share": (background_cpu(with_logger) - background_cpu(base))
                    / with_logger["train_thread_cpu_s"],
                }
            )
        print(f"pair {pair + 1}/{args.pairs}: " + ", ".join(f"{k} {samples[k][-1]['ratio']:.3f}" for k in loggers))

    results = {}
    for kind in loggers:
        ratios = [s["ratio"] for s in samples[kind]]
        results[kind] = {
            "median_overhead_pct": (median(ratios) - 1) * 100,
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "median_cpu_overhead_pct": (median([s["cpu_ratio"] for s in samples[kind]]) - 1) * 100,
            "median_train_thread_cpu_overhead_pct": (median([s["train_thread_cpu_ratio"] for s in samples[kind]]) - 1)
            * 100,
            "median_background_share_pct": median([s["background_share"] for s in samples[kind]]) * 100,
            "median_run_s": median([s["logger_s"] for s in samples[kind]]),
            "median_baseline_s": median([s["none_s"] for s in samples[kind]]),
            "pairs": samples[kind],
        }
    print()
    print(
        table(
            [
                "logger",
                "median wall overhead",
                "min ratio",
                "max ratio",
                "process CPU",
                "training-thread CPU",
                "background / training thread",
                "median run (s)",
                "no logger (s)",
            ],
            [
                [
                    kind,
                    f"{r['median_overhead_pct']:+.2f} %",
                    f"{r['min_ratio']:.3f}",
                    f"{r['max_ratio']:.3f}",
                    f"{r['median_cpu_overhead_pct']:+.2f} %",
                    f"{r['median_train_thread_cpu_overhead_pct']:+.2f} %",
                    f"{r['median_background_share_pct']:+.2f} %",
                    f"{r['median_run_s']:.3f}",
                    f"{r['median_baseline_s']:.3f}",
                ]
                for kind, r in results.items()
            ],
        )
    )
    payload = {
        "benchmark": "overhead",
        "machine": info,
        "config": {
            "pairs": args.pairs,
            "epochs": args.epochs,
            "smoke": args.smoke,
            "loggers": loggers,
            "workload": args.workload,
        },
        "results": results,
    }
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
