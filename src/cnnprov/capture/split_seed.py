"""Which seed ``random_split`` was given, found by making the split again.

A ``Subset`` keeps its indices but not the generator that drew them. ``random_split(dataset,
lengths, generator=g)`` takes ``torch.randperm(len(dataset), generator=g)`` and hands out
consecutive slices of it, so a subset whose indices are one slice of the permutation a seed
draws came from that seed: the seed and the slice's offset are then a fact, checked, not a guess
(a chance match of two or more indices is below one in ``len(dataset)``).

The seeds tried are those a split is usually given: the seed of ``seed_everything``
(``PL_GLOBAL_SEED``), the default generator's initial seed, and the fixed seeds of PyTorch's and
Lightning's examples (``SEEDS_TRIED``). A split drawn from a generator in another state (the default
one after model initialisation drew from it) matches none, and nothing is recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

#: fixed seeds tried besides the process's own (PyTorch's and Lightning's examples use 42)
SEEDS_TRIED = (42, 0, 1, 1234, 12345)
#: datasets longer than this are not tried (a permutation costs ~10 ms a million samples)
MAX_SAMPLES = 4_000_000


@dataclass(frozen=True)
class SplitOrigin:
    """A subset's place in the permutation that ``random_split`` drew from ``seed``."""

    seed: int
    offset: int


@dataclass
class SplitFinder:
    """Finds each subset's seed and offset; the permutation of the last match is kept for its siblings."""

    _last: tuple[int, int, Any] | None = field(default=None, repr=False)  # (length, seed, permutation)

    def find(self, indices: list[int], source_length: int | None) -> SplitOrigin | None:
        """The seed and offset that ``random_split`` gave ``indices`` of a dataset of ``source_length`` samples."""
        if source_length is None or not 2 <= len(indices) <= source_length <= MAX_SAMPLES:
            return None
        import torch

        wanted = torch.tensor(indices, dtype=torch.int64)
        for seed in self._seeds(source_length):
            if self._last is not None and self._last[:2] == (source_length, seed):
                permutation = self._last[2]
            else:
                permutation = torch.randperm(source_length, generator=torch.Generator().manual_seed(seed))
            where = (permutation == wanted[0]).nonzero()
            if len(where) != 1:
                continue
            offset = int(where[0, 0])
            if torch.equal(permutation[offset : offset + len(indices)], wanted):
                self._last = (source_length, seed, permutation)
                return SplitOrigin(seed, offset)
        return None

    def _seeds(self, source_length: int) -> list[int]:
        import torch

        seeds = [self._last[1]] if self._last is not None and self._last[0] == source_length else []
        global_seed = os.environ.get("PL_GLOBAL_SEED", "")
        if global_seed.isdigit() and int(global_seed) < 2**64:  # what a generator takes as its seed
            seeds.append(int(global_seed))
        return list(dict.fromkeys([*seeds, torch.initial_seed(), *SEEDS_TRIED]))
