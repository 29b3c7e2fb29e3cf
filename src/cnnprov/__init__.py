"""cnnprov: record deep-learning training as W3C PROV provenance and analyse it with SPARQL.

``ProvLogger`` is imported lazily so that reading a store (the CLI, the query
API) never pays for importing torch and Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ProvLogger", "ProvStore", "RunRecorder", "__version__"]

if TYPE_CHECKING:
    from cnnprov.integrations.lightning import ProvLogger
    from cnnprov.analysis.provstore import ProvStore
    from cnnprov.capture.recorder import RunRecorder

_LAZY = {
    "ProvLogger": "cnnprov.integrations.lightning",
    "ProvStore": "cnnprov.analysis.provstore",
    "RunRecorder": "cnnprov.capture.recorder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnprov' has no attribute {name!r}")
