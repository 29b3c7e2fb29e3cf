"""cnnprov: record deep-learning training as W3C PROV provenance and analyse it with SPARQL.

``ProvLogger`` is imported lazily so that reading a store (the CLI, the query
API) never pays for importing torch and Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ProvLogger", "ProvStore", "RunRecorder", "__version__"]

if TYPE_CHECKING:
    from .lightning import ProvLogger
    from .query import ProvStore
    from .recorder import RunRecorder

_LAZY = {"ProvLogger": ".lightning", "ProvStore": ".query", "RunRecorder": ".recorder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'cnnprov' has no attribute {name!r}")
