"""Shared fixtures: real Lightning training, tiny, into real stores under tmp_path."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from cnnprov import ProvStore
from cnnprov.demo import run_sweep

logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="lightning")


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "provenance"


@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> ProvStore:
    """Two finished runs that differ only in dropout (0.0 and 0.5), two epochs each. Read-only.

    400 images in batches of 16 are enough for the two runs to reach different accuracies.
    """
    path = tmp_path_factory.mktemp("sweep") / "provenance"
    run_sweep(path, [{"dropout": 0.0}, {"dropout": 0.5}], max_epochs=2, limit=400, batch_size=16, progress=None)
    return ProvStore(path)



@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits a user would sit out (another writer's lock, an endpoint that is away) are short in tests.

    Children the tests start inherit them through the environment.
    """
    monkeypatch.setenv("CNNPROV_LOCK_WAIT_S", "2")
    monkeypatch.setenv("CNNPROV_RETRY_AFTER_S", "2")


@pytest.fixture(autouse=True)
def in_a_directory_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory: what lands in the working directory (a logger's
    checkpoints without ``save_dir``, a default ``./provenance``) lands under its tmp_path."""
    monkeypatch.chdir(tmp_path)
