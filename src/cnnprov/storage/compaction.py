"""A compacted copy of an embedded store: the same quads in about 60 % of the disk.

Oxigraph configures RocksDB so that the level where a store's records settle while it is below
hundreds of MiB a column family (RocksDB's base level) is written without compression, while its
bulk loader writes LZ4-compressed table files. Copying every quad into a new store with the bulk
loader therefore keeps the same records in less space: a 1,000-run sweep's store of 655 MiB
copies into 385 (BENCHMARKS.md). Writes into the copy later are merged into uncompressed files
again, so a store is best compacted once it is done growing (to archive or share a study), as
SQLite's ``VACUUM INTO`` writes a compacted copy.

The source is held open for writing while it is copied, so no run writes to it meanwhile, and no
record of it changes. The copy is written into ``<output>.partial`` and renamed to ``output`` only
once it holds as many quads as the source: a copy cut short never passes for a store.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyoxigraph as ox

from cnnprov.errors import StoreError
from cnnprov.storage.durable_notes import NOTES_FILE
from cnnprov.storage.housekeeping import prune_info_logs
from cnnprov.storage.local import open_existing_store
from cnnprov.storage.location import StoreLocation

#: Written into a copy in progress: a ``.partial`` directory holding it is one this module may remove.
PARTIAL_MARKER = "cnnprov-compacting"

#: Quads between two calls of ``progress``.
PROGRESS_QUADS = 250_000


@dataclass(frozen=True)
class Compacted:
    """What :func:`compact` copied: quads, named graphs, bytes on disk before and after, seconds."""

    quads: int
    graphs: int
    source_bytes: int
    output_bytes: int
    seconds: float


def compact(
    source: StoreLocation | str | Path,
    output: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> Compacted:
    """Copy every quad and named graph of the embedded store ``source`` into the new store ``output``,
    written compressed; ``source`` is left as it was.

    ``output`` must not exist (or be an empty directory). ``progress(copied, total)`` is called
    once the store is open (``copied`` 0), then every :data:`PROGRESS_QUADS` quads. Raises
    :class:`~cnnprov.errors.StoreError` (and its subclasses: the store is missing, or held by a
    process that is writing it) and leaves nothing at ``output`` when the copy is not complete.
    """
    location = source if isinstance(source, StoreLocation) else StoreLocation.parse(str(source))
    if location.path is None:
        raise StoreError(f"'{location}' is a SPARQL endpoint: compact works on a store directory")
    source_path, output_path = location.path, Path(output)
    _check_output(source_path, output_path)
    started = time.perf_counter()
    store = open_existing_store(location)  # held for writing: no run changes it while it is copied
    try:
        total = len(store)
        if progress is not None:
            progress(0, total)
        partial = _partial(output_path)
        try:
            graphs = _copy(store, partial, total, progress)
            notes = source_path / NOTES_FILE
            if notes.is_file():  # a loss its notes record is still said when the copy is opened
                shutil.copy2(notes, partial / NOTES_FILE)
        except OSError as error:  # a full disk, most often: RocksDB's "IO error: No space left on device"
            shutil.rmtree(partial, ignore_errors=True)
            raise StoreError(
                f"cannot write the copy at '{partial}': {error}. Nothing was left at '{output_path}' and "
                f"'{source_path}' is unchanged: free space (the copy takes about 60 % of the store) or give "
                f"another directory"
            ) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        del store
        prune_info_logs(source_path)  # the open left one more of RocksDB's old information logs
    (partial / PARTIAL_MARKER).unlink()
    if output_path.is_dir():
        output_path.rmdir()  # empty, as _check_output found it
    partial.rename(output_path)
    return Compacted(total, graphs, _size(source_path), _size(output_path), time.perf_counter() - started)


def _check_output(source: Path, output: Path) -> None:
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise StoreError(f"the copy of '{source}' cannot be written inside it: give a directory beside it")
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise StoreError(f"'{output}' exists: give compact a new directory for the copy")


def _partial(output: Path) -> Path:
    """The new ``.partial`` directory to write the copy of ``output`` into."""
    partial = output.with_name(output.name + ".partial")
    if partial.exists():
        if not (partial / PARTIAL_MARKER).is_file():
            raise StoreError(f"'{partial}' exists and is not a copy cnnprov left: move it away, then compact again")
        shutil.rmtree(partial)  # a copy cut short earlier
    try:
        partial.mkdir(parents=True)
        (partial / PARTIAL_MARKER).touch()
    except OSError as error:
        raise StoreError(f"cannot write the copy at '{partial}': {error.strerror or error}") from None
    return partial


def _copy(store: ox.Store, partial: Path, total: int, progress: Callable[[int, int], None] | None) -> int:
    """Bulk-load every quad of ``store`` into a new store at ``partial``; the number of named graphs."""
    copy = ox.Store(str(partial))
    try:
        copy.bulk_extend(_counted(store.quads_for_pattern(None, None, None, None), total, progress))
        graphs = 0
        for graph in store.named_graphs():
            graphs += 1
            if next(store.quads_for_pattern(None, None, None, graph), None) is None:
                copy.add_graph(graph)  # a graph without quads: the bulk loader saw none of it
        copy.flush()
        copied = len(copy)
        if copied != total:
            raise StoreError(f"the copy holds {copied} quads and the store {total}: the copy was removed")
        return graphs
    finally:
        del copy


def _counted(
    quads: Iterable[ox.Quad], total: int, progress: Callable[[int, int], None] | None
) -> Iterator[ox.Quad]:
    for copied, quad in enumerate(quads, start=1):
        yield quad
        if progress is not None and copied % PROGRESS_QUADS == 0:
            progress(copied, total)


def _size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
