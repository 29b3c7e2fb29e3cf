"""An Optuna study whose trials train with ProvLogger, recorded as provenance.

    pip install 'cnnprov[demo,sweeps]'
    python examples/optuna_sweep.py --trials 8 --store provenance
    cnnprov query best-trial --store provenance
    cnnprov query study-trials --store provenance

The objective trains the digits CNN for a few epochs; a trial whose validation
accuracy trails the median of earlier trials at the same epoch is pruned.
"""

from __future__ import annotations

import argparse
import logging

import lightning as L
import optuna

from cnnprov.demo import DigitsCNN, DigitsDataModule
from cnnprov.integrations.optuna import OptunaStudyRecorder


class ReportToTrial(L.Callback):
    """Report val_acc to Optuna after each epoch and stop the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.trial.report(float(trainer.callback_metrics["val_acc"]), step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val_acc trails the median at epoch {trainer.current_epoch}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials to run (default: 8)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default: 4)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--store", default="provenance", help="provenance store (default: ./provenance)")
    parser.add_argument("--name", default="digits", help="study name (default: digits)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = optuna.create_study(
        study_name=args.name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    recorder = OptunaStudyRecorder(study, store=args.store)

    def objective(trial: optuna.Trial) -> float:
        model = DigitsCNN(
            lr=trial.suggest_float("lr", 1e-3, 0.3, log=True),
            dropout=trial.suggest_float("dropout", 0.0, 0.6),
            filters=trial.suggest_categorical("filters", [8, 16, 32]),
        )
        trainer = L.Trainer(
            max_epochs=args.epochs,
            logger=recorder.logger(trial, save_dir=f"{args.store}-checkpoints"),
            callbacks=[ReportToTrial(trial)],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=DigitsDataModule(limit=args.limit))
        return float(trainer.callback_metrics["val_acc"])

    study.optimize(objective, n_trials=args.trials, callbacks=[recorder])
    recorder.finish()
    states = [t.state.name for t in study.trials]
    print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned; "
          f"best val_acc {study.best_value:.3f} with {study.best_params}")


if __name__ == "__main__":
    main()
