"""cnnprov: record deep-learning training as W3C PROV provenance and analyse it with SPARQL.

``ProvLogger`` is imported lazily so that reading a store (the CLI, the query
API) never pays for importing torch and Lightning.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "OptunaStudyRecorder",
    "ProvLogger",
    "ProvStore",
    "RunRecorder",
    "StoreLocation",
    "__version__",
    "open_session",
]

if TYPE_CHECKING:
    from cnnprov.analysis.provstore import ProvStore
    from cnnprov.capture.recorder import RunRecorder
    from cnnprov.integrations.lightning import ProvLogger
    from cnnprov.integrations.optuna import OptunaStudyRecorder
    from cnnprov.storage.location import StoreLocation
    from cnnprov.storage.protocols import Session

_LAZY = {
    "ProvLogger": "cnnprov.integrations.lightning",
    "ProvStore": "cnnprov.analysis.provstore",
    "RunRecorder": "cnnprov.capture.recorder",
    "OptunaStudyRecorder": "cnnprov.integrations.optuna",
    "StoreLocation": "cnnprov.storage.location",
}


def open_session(
    store: str | os.PathLike[str] | StoreLocation | None = None, *, serve_reads: bool = True, **options: Any
) -> Session:
    """Hold a store open for many runs (a sweep): pass the session as ``store=`` to each run.

    A single run opens and lets go of its store by itself; runs recorded with ``store=session``
    share the open store, which is let go of once, when the session closes. ``options`` are
    those of :class:`~cnnprov.storage.location.StoreLocation` (``headers``, ``timeout_s`` …).

    Example::

        with cnnprov.open_session("provenance") as session:
            for lr in (0.01, 0.1):
                L.Trainer(max_epochs=5, logger=ProvLogger(store=session)).fit(Net(lr=lr), data)
    """
    from cnnprov.storage.location import StoreLocation

    return StoreLocation.parse(store, **options).open_session(serve_reads=serve_reads)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnprov' has no attribute {name!r}")
