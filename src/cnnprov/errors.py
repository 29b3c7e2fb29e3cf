"""Every error cnnprov raises on purpose: one hierarchy, based on :class:`Exception`.

Each message says what was wrong and what to do. Catch :class:`CnnprovError` for all of them.
"""

from __future__ import annotations


class CnnprovError(Exception):
    """Base of every error cnnprov raises on purpose."""


class StoreError(CnnprovError):
    """A provenance store cannot be opened, read or written; the message says why and what to do."""


class StoreNotFoundError(StoreError):
    """No provenance store at the given location."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store for writing."""


class StoreOpenInThisProcessError(StoreLockedError):
    """This process holds the store already (a run not yet finished, an rdflib dataset not closed)."""


class StoreWriteError(StoreError):
    """Records could not be written; they are kept and retried."""


class RecorderNotStartedError(CnnprovError, RuntimeError):
    """A run's recorder was asked to record before its ``start()`` or after its ``close()``."""


class QueryError(CnnprovError, ValueError):
    """A query cannot run as asked: unknown query or parameter, bad value, or a syntax error."""


class QueryNotFoundError(QueryError, LookupError):
    """No bundled query or ``.rq`` file by that name."""


class RunFilterError(QueryError):
    """A run filter (``runs --where``) cannot be read: the message shows the filter with a caret
    under ``column`` and says what was expected there.

    Attributes:
        filter: the filter text.
        offset: where in it (0-based).
        column: the same place as editors count it (1-based).
        reason: what was wrong, without the picture of the filter.
    """

    def __init__(self, reason: str, filter: str, offset: int) -> None:
        self.reason, self.filter, self.offset, self.column = reason, filter, offset, offset + 1
        line = "".join(" " if c.isspace() else c for c in filter)  # one line: the caret stands under its place
        super().__init__(f"{reason} at column {self.column}\n  {line}\n  {' ' * offset}^")


class RunFilterWarning(UserWarning):
    """A run filter that can be read but selects nothing for a reason worth saying (a field no run has)."""


class RunNotFoundError(CnnprovError, LookupError):
    """No run (or more than one) matches the given id."""


class PictureError(CnnprovError, RuntimeError):
    """A picture cannot be drawn (Graphviz missing, or it failed)."""
