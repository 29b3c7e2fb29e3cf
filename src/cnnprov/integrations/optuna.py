"""Record an Optuna study: the study as an activity, its sampler as an agent, each trial's run linked to it.

Every trial trains with its own :class:`~cnnprov.integrations.lightning.ProvLogger`, made by
:meth:`OptunaStudyRecorder.logger`; the recorder, passed to
``study.optimize(callbacks=[...])``, links each finished trial's run to the
study with its number, state (``COMPLETE``, ``PRUNED``, ``FAIL``), objective
value and the settings the sampler chose (attributed to the sampler).

Example::

    import optuna
    from cnnprov.integrations.optuna import OptunaStudyRecorder

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    recorder = OptunaStudyRecorder(study, store="provenance")

    def objective(trial):
        model = DigitsCNN(lr=trial.suggest_float("lr", 1e-3, 0.3, log=True))
        trainer = L.Trainer(max_epochs=5, logger=recorder.logger(trial))
        trainer.fit(model, datamodule=DigitsDataModule())
        return trainer.callback_metrics["val_acc"].item()

    study.optimize(objective, n_trials=8, callbacks=[recorder])
    recorder.finish()

Then ``cnnprov query best-trial`` and ``cnnprov query study-trials`` answer
"the best trial and its settings" and "how the sampler's choices evolved".
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from cnnprov.capture import records
from cnnprov.capture import study as study_records
from cnnprov.capture.nodes import run_node
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import DEFAULT_BASE, iri, kind_segment
from cnnprov.storage.location import StoreLocation
from cnnprov.storage.protocols import Session

#: The trial attribute that names the cnnprov run a trial trained in.
RUN_ID_ATTRIBUTE = "cnnprov_run_id"


class OptunaStudyRecorder:
    """Record an Optuna study and link every trial's run to it.

    It holds the store for the whole study (one session, shared by every trial's run), so
    trials do not open and let go of it one by one; :meth:`finish` lets go of it.

    Args:
        study: the ``optuna.Study`` to record.
        store: the store the trials' runs are recorded in (directory or endpoint URL, a
            :class:`~cnnprov.storage.location.StoreLocation`, or a session to share).
        base: namespace in which IRIs are minted (as for the runs).
    """

    def __init__(
        self,
        study: Any,
        store: str | os.PathLike[str] | StoreLocation | Session | None = None,
        base: str = DEFAULT_BASE,
    ) -> None:
        self.study = study
        self._owns_session = not isinstance(store, Session)
        self.session: Session = StoreLocation.parse(store).open_session() if not isinstance(store, Session) else store
        self.base = base
        self.study_id = str(uuid.uuid4())
        self.activity = iri(base, kind_segment("study", self.study_id))
        self.bundle = iri(base, "bundle", kind_segment("study", self.study_id))
        sampler = type(study.sampler)
        self.sampler = iri(base, "agent", "sampler", kind_segment("study", self.study_id))
        self._sampler_class = f"{sampler.__module__}.{sampler.__qualname__}"
        self._write(self._study_records(time.time()))

    def logger(self, trial: Any, **options: Any) -> Any:
        """A ProvLogger for this trial's run, named after the trial; ``options`` go to ProvLogger."""
        from cnnprov.integrations.lightning import ProvLogger

        options.setdefault("run_name", f"{self.study.study_name} trial {trial.number}")
        logger = ProvLogger(store=self.session, base=self.base, **options)
        trial.set_user_attr(RUN_ID_ATTRIBUTE, logger.run_id)
        return logger

    def __call__(self, study: Any, trial: Any) -> None:
        """Optuna callback: record a finished trial (any state) and link its run."""
        run_id = trial.user_attrs.get(RUN_ID_ATTRIBUTE)
        if run_id is None:
            return  # the trial trained without a logger from this recorder
        run = run_node(self.base, run_id)
        self._write(
            study_records.trial(
                run, self.activity, self.sampler, self.base, trial.number, trial.state.name, trial.value, trial.params
            )
        )

    def finish(self) -> None:
        """Record the study's end and its best trial's run."""
        try:
            best = self.study.best_trial
        except ValueError:  # no completed trial
            best = None
        best_run = None
        if best is not None and RUN_ID_ATTRIBUTE in best.user_attrs:
            best_run = run_node(self.base, best.user_attrs[RUN_ID_ATTRIBUTE])
        self._write(study_records.study_end(self.activity, time.time(), best_run))
        if self._owns_session:
            self.session.close()

    def _study_records(self, started: float) -> list[Triple]:
        direction = self.study.direction.name.lower()
        return study_records.study(
            self.bundle,
            self.activity,
            self.study.study_name,
            direction,
            started,
            self.sampler,
            self._sampler_class,
            _optuna_version(),
        )

    def _write(self, triples: list[Triple]) -> None:
        target = self.session.target(f"study {self.study_id}")
        target.extend(records.in_graph(triples, self.bundle))
        target.close()


def _optuna_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("optuna")
    except Exception:  # optuna installed oddly: the version is a nicety
        return None
