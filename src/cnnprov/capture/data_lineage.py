"""Where a loader's data came from: the chain of datasets it wraps, down to the raw source, as plain data.

A ``Subset`` (what ``random_split`` returns) is derived from the dataset it indexes, a
``ConcatDataset`` from each of its parts, any other wrapper with a ``dataset`` attribute from
that; the dataset at the bottom is the source. Its content is fingerprinted so that two runs on
the same data are found under different paths or classes:

- tensors (a ``TensorDataset``'s, or tensor attributes such as ``data``/``targets``): shape and
  dtype, and SHA-256 of their bytes;
- files and folders named by a path attribute (``root``, ``path``, ``data_dir``, ``file`` …):
  a file by its size and SHA-256 of its content, a folder by its files' relative paths and sizes
  and the content of each, in path order.

The policy for large data (so that a fingerprint stays cheap): at most ``CONTENT_BUDGET`` bytes of
content are hashed per source; past that, a file or tensor counts by its first and last
``SAMPLE_BYTES`` and its size, and a folder's further files by their relative path and size only.
A sampled fingerprint is the same for a copy of the data anywhere, but two different datasets
whose sampled parts agree would share it: ``fingerprint_method`` says "(large: sampled)". A folder
is fingerprinted whole, so other data put into the same folder changes its fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnprov.capture.data import length as _length
from cnnprov.capture.hyperparameters import class_path
from cnnprov.capture.split_seed import SplitFinder
from cnnprov.capture.transforms import TransformStep, describe_transforms

CONTENT_BUDGET = 64 * 1024 * 1024
SAMPLE_BYTES = 1024 * 1024
#: attributes that name where a dataset reads its data from
PATH_ATTRIBUTES = ("root", "path", "data_dir", "data_path", "directory", "file", "filename", "files", "paths")
#: attributes that hold a dataset's data in memory
TENSOR_ATTRIBUTES = ("tensors", "data", "targets", "images", "labels")
_MAX_DEPTH = 16


@dataclass
class SourceFile:
    """A file or folder a source dataset reads."""

    path: str
    is_folder: bool
    size_bytes: int
    file_count: int
    fingerprint: str


@dataclass
class DataLevel:
    """One dataset in a loader's chain: a wrapper derived from others, or the source at the bottom."""

    python_class: str
    sample_count: int | None
    derived_from: list[int] = field(default_factory=list)  # positions in :class:`DataChain.levels`
    derivation: str | None = None  # "subset", "concatenation", "wrapper"
    index_count: int | None = None
    indices_sha256: str | None = None
    split_seed: int | None = None  # the seed random_split drew the indices with, where found again
    split_offset: int | None = None  # where the indices start in that split's permutation
    tensors: list[str] = field(default_factory=list)  # "1437x1x8x8 float32"
    files: list[SourceFile] = field(default_factory=list)
    fingerprint: str | None = None
    fingerprint_method: str | None = None
    transforms: dict[str, list[TransformStep]] = field(default_factory=dict)  # attribute → pipeline


@dataclass
class DataChain:
    """The distinct datasets of a run's loaders (shared between loaders: a split's parts derive from one source)."""

    levels: list[DataLevel] = field(default_factory=list)
    _positions: dict[int, int] = field(default_factory=dict)  # id(dataset) → position
    # what a level is, so that a dataset made again with the same content (Lightning calls a
    # DataModule's setup once per stage) is the same record
    _signatures: dict[tuple, int] = field(default_factory=dict)
    _splits: SplitFinder = field(default_factory=SplitFinder)

    def add(self, dataset: Any, depth: int = 0) -> int:
        """The position of ``dataset`` (described with everything it derives from, once)."""
        key = id(dataset)
        if key in self._positions:
            return self._positions[key]
        level = DataLevel(class_path(dataset), _length(dataset))
        level.transforms = {
            name: steps
            for name in ("transform", "target_transform", "transforms")
            if (steps := describe_transforms(getattr(dataset, name, None)))
        }
        parts = getattr(dataset, "datasets", None)
        inner = getattr(dataset, "dataset", None)
        if depth < _MAX_DEPTH and isinstance(parts, (list, tuple)) and parts:
            level.derivation = "concatenation"
            level.derived_from = [self.add(part, depth + 1) for part in parts]
        elif depth < _MAX_DEPTH and inner is not None and inner is not dataset:
            indices = getattr(dataset, "indices", None)
            level.derivation = "subset" if indices is not None else "wrapper"
            if indices is not None:
                values = _index_list(indices)
                level.index_count, level.indices_sha256 = _indices_digest(values)
                origin = self._splits.find(values, _length(inner))
                if origin is not None:
                    level.split_seed, level.split_offset = origin.seed, origin.offset
            level.derived_from = [self.add(inner, depth + 1)]
        else:
            _fingerprint_source(dataset, level)
        signature = _signature(level, key)
        if signature not in self._signatures:
            self.levels.append(level)
            self._signatures[signature] = len(self.levels) - 1
        self._positions[key] = self._signatures[signature]
        return self._positions[key]


def _signature(level: DataLevel, key: int) -> tuple:
    """What makes two levels one record: the same class, origin, content and transforms (a source
    whose content could not be fingerprinted is only ever itself)."""
    transforms = tuple(
        (name, tuple((s.python_class, s.settings_json()) for s in steps))
        for name, steps in sorted(level.transforms.items())
    )
    content = level.fingerprint if level.derivation is not None or level.fingerprint else f"object {key}"
    return (
        level.python_class,
        level.derivation,
        tuple(level.derived_from),
        level.indices_sha256,
        content,
        level.sample_count,
        transforms,
    )


def _index_list(indices: Any) -> list[int]:
    """A subset's indices as a list (the same for a list, a tensor or an array of the same indices)."""
    return [int(value) for value in (indices.tolist() if hasattr(indices, "tolist") else indices)]


def _indices_digest(values: list[int]) -> tuple[int, str]:
    """How many indices a subset takes and SHA-256 of them as little-endian int64."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(value.to_bytes(8, "little", signed=True))
    return len(values), digest.hexdigest()


def _fingerprint_source(dataset: Any, level: DataLevel) -> None:
    digest, budget, sampled = hashlib.sha256(), [CONTENT_BUDGET], [False]
    tensors = getattr(dataset, "tensors", None)
    found = list(tensors) if isinstance(tensors, (list, tuple)) else []
    if not found:
        found = [value for name in TENSOR_ATTRIBUTES[1:] if _is_tensor(value := getattr(dataset, name, None))]
    for tensor in found:
        if not _is_tensor(tensor):
            continue
        shape = "x".join(str(size) for size in tensor.shape) or "scalar"
        dtype = str(tensor.dtype).replace("torch.", "")
        level.tensors.append(f"{shape} {dtype}")
        digest.update(f"tensor {shape} {dtype}\n".encode())
        _hash_tensor(digest, tensor, budget, sampled)
    for name in PATH_ATTRIBUTES:
        value = getattr(dataset, name, None)
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(path, (str, os.PathLike)) and os.path.exists(path):
                source = _source_file(Path(path), budget, sampled)
                level.files.append(source)
                digest.update(f"{'folder' if source.is_folder else 'file'} {source.fingerprint}\n".encode())
    if level.tensors or level.files:
        level.fingerprint = digest.hexdigest()
        kinds = "+".join(kind for kind, present in (("tensors", level.tensors), ("files", level.files)) if present)
        level.fingerprint_method = f"sha256 of {kinds}" + (" (large: sampled)" if sampled[0] else "")


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "numpy")


def _bytes(tensor: Any) -> bytes:
    return bytes(tensor.detach().cpu().contiguous().numpy().tobytes())


def _hash_tensor(digest: Any, tensor: Any, budget: list[int], sampled: list[bool]) -> None:
    """All of a tensor's bytes within the budget; else its first and last ``SAMPLE_BYTES`` and its size
    (sliced before copying: a large contiguous tensor is never copied whole)."""
    size = int(tensor.numel()) * int(tensor.element_size())
    if size <= budget[0]:
        digest.update(_bytes(tensor))
        budget[0] -= size
        return
    sampled[0] = True
    flat = tensor.reshape(-1)
    count = max(SAMPLE_BYTES // int(tensor.element_size()), 1)
    digest.update(size.to_bytes(8, "little"))
    digest.update(_bytes(flat[:count]))
    digest.update(_bytes(flat[-count:]))


def _hash_file(digest: Any, path: Path, size: int, budget: list[int], sampled: list[bool]) -> None:
    try:
        with path.open("rb") as handle:
            if size <= budget[0]:
                budget[0] -= size
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                return
            sampled[0] = True
            digest.update(size.to_bytes(8, "little"))
            digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(max(size - SAMPLE_BYTES, 0))
            digest.update(handle.read(SAMPLE_BYTES))
    except OSError:  # unreadable: it counts by its size alone
        digest.update(f"unreadable {size}".encode())


def _source_file(path: Path, budget: list[int], sampled: list[bool]) -> SourceFile:
    digest = hashlib.sha256()
    if path.is_file():
        size = path.stat().st_size
        _hash_file(digest, path, size, budget, sampled)
        return SourceFile(str(path.resolve()), False, size, 1, digest.hexdigest())
    total, count = 0, 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        relative = file.relative_to(path).as_posix()
        total, count = total + stat.st_size, count + 1
        digest.update(f"{relative}\0{stat.st_size}\0".encode())
        if budget[0] > 0:
            _hash_file(digest, file, stat.st_size, budget, sampled)
        else:  # past the budget: a file counts by its relative path and size (the same in a copy)
            sampled[0] = True
    return SourceFile(str(path.resolve()), True, total, count, digest.hexdigest())
