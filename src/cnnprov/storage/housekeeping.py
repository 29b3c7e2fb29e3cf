"""What RocksDB leaves in a store's directory that holds no record: removed when a session ends.

- **Spare write-ahead logs.** RocksDB keeps up to ten logs whose records are already in table
  files, to reuse them (Oxigraph sets ``recycle_log_file_num``), and deletes them only when a
  store opens. A session that wrote its memory tables to disk on the way (a sweep) left them,
  tens of MB each, in the directory until the next open: 131 MiB for a 100-run sweep whose
  records take 69. The log of a session's last writes (at most one memory table's worth, a few MB
  for a run) stays until the next open: deleting it too would cost every run one more open.
- **Old information logs.** Every open renames RocksDB's ``LOG`` (its options and events, ~130
  KiB) to ``LOG.old.<time>``, and RocksDB keeps a thousand of them: a store that a thousand runs
  opened carried ~130 MB of them. The newest few are kept for whoever diagnoses RocksDB.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyoxigraph as ox

log = logging.getLogger(__name__)

#: RocksDB's old information logs kept beside its current ``LOG``.
KEPT_INFO_LOGS = 4


def tidy(path: Path, reopen: bool) -> None:
    """Remove what RocksDB left in the store directory ``path`` (just let go of) and needs no more.

    ``reopen``: the session wrote memory tables to disk, so spare logs may be left; the store is
    opened and closed once more, which deletes them (every record of theirs is in table files, so
    nothing is replayed). Nothing here is part of a record: a failure is said at debug level.
    """
    if reopen:
        try:
            reopened = ox.Store(str(path))
        except Exception as error:  # another process took it meanwhile (its open deletes them), or worse
            log.debug("cnnprov left RocksDB's spare logs in %s: %s", path, error)
        else:
            del reopened
    prune_info_logs(path)


def prune_info_logs(path: Path, keep: int = KEPT_INFO_LOGS) -> None:
    """Delete all but the ``keep`` newest of RocksDB's ``LOG.old.*`` files in ``path``."""
    try:
        # the suffix is the time RocksDB renamed it, in µs, all of one length: newest sort last
        old = sorted(path.glob("LOG.old.*"), key=lambda file: file.name)
        for file in old[: max(0, len(old) - keep)]:
            file.unlink(missing_ok=True)
    except Exception as error:
        log.debug("cnnprov could not remove RocksDB's old information logs in %s: %s", path, error)
