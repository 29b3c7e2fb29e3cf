"""Lineage from the raw data to the metric: real training on files a DataModule writes, split and transformed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset, random_split

from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.validate import validate_store
from cnnprov.capture.split_seed import SplitFinder, SplitOrigin
from cnnprov.demo import DigitsCNN

from helpers import tiny_trainer


# -- torchvision-style transforms (torchvision's own do not load here): the attributes they expose
class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, x):
        return (x - self.mean) / self.std


class RandomNoise:
    def __init__(self, p, scale):
        self.p, self.scale = p, scale

    def __call__(self, x):
        return x + self.scale * torch.randn_like(x) if torch.rand(()) < self.p else x


def flip(x):
    return torch.flip(x, dims=[-1])


class DigitFiles(Dataset):
    """Digits read from .npy files under ``root``."""

    def __init__(self, root, transform=None):
        self.root, self.transform = root, transform
        self.images = torch.tensor(np.load(Path(root) / "images.npy"), dtype=torch.float32)
        self.labels = torch.tensor(np.load(Path(root) / "labels.npy"))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.labels[index]


class CopiedDigitFiles(DigitFiles):
    """Another class reading the same kind of files (the same data under another path and class)."""


class DigitFilesModule(L.LightningDataModule):
    def __init__(self, root, noise=0.0, dataset_class=DigitFiles):
        super().__init__()
        self.root, self.noise, self.dataset_class = Path(root), noise, dataset_class

    def prepare_data(self):
        if not (self.root / "images.npy").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            digits = load_digits()
            np.save(self.root / "images.npy", (digits.images[:300] / 16.0).reshape(-1, 1, 8, 8))
            np.save(self.root / "labels.npy", digits.target[:300])

    def setup(self, stage):
        pipeline = Compose([Normalize(0.5, 0.25), RandomNoise(self.noise, 0.1), flip])
        full = self.dataset_class(self.root, transform=pipeline)
        self.train, self.val, self.test_part = random_split(
            full, [200, 60, 40], generator=torch.Generator().manual_seed(42)
        )

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=32)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=32)

    def test_dataloader(self):
        return DataLoader(self.test_part, batch_size=40)


def folder_fingerprint(folder: Path) -> str:
    """The documented fingerprint of a small folder: relative path, size and content of each file, in path order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file.stat().st_size}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def indices_digest(indices) -> str:
    return hashlib.sha256(b"".join(int(i).to_bytes(8, "little", signed=True) for i in indices)).hexdigest()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two runs on the files of one folder that differ only in augmentation, and a third on a copy
    of the files under another path, read by another class; each tested after fit."""
    root = tmp_path_factory.mktemp("lineage")
    store = root / "provenance"
    modules = {}
    for name, module in (
        ("noise=0.0", DigitFilesModule(root / "data", 0.0)),
        ("noise=0.5", DigitFilesModule(root / "data", 0.5)),
    ):
        trainer = tiny_trainer(root / name, ProvLogger(store=store, run_name=name), max_epochs=2)
        trainer.fit(DigitsCNN(), datamodule=module)
        trainer.test(trainer.lightning_module, datamodule=module)
        modules[name] = module
    shutil.copytree(root / "data", root / "copy")
    copied = DigitFilesModule(root / "copy", 0.0, CopiedDigitFiles)
    tiny_trainer(root / "copy-run", ProvLogger(store=store, run_name="copy")).fit(DigitsCNN(), datamodule=copied)
    modules["copy"] = copied
    reader = ProvStore(store)
    ids = {row["name"]: row["run_id"] for row in reader.runs()}
    return reader, ids, modules, root


def test_a_checkpoints_lineage_reaches_the_files_through_the_split_and_the_transforms(sweep):
    store, ids, modules, root = sweep
    (path,) = [row["path"] for row in store.query("checkpoints", run=ids["noise=0.0"])][-1:]
    rows = store.query("lineage", checkpoint=path).to_dicts()
    by = {}
    for row in rows:
        by.setdefault(row["relation"], []).append((row["label"], row["value"]))
    module = modules["noise=0.0"]
    expected_splits = {indices_digest(module.train.indices), indices_digest(module.val.indices)}
    assert {value for label, value in by["data derived from"]} == expected_splits  # not the test split
    assert all(label == "torch.utils.data.dataset.Subset" for label, _ in by["data derived from"])
    assert by["read file"] == [(str((root / "data").resolve()), folder_fingerprint(root / "data"))]
    (source,) = by["source data"]
    assert source[0] == f"{__name__}.DigitFiles" and len(source[1]) == 64
    assert [label for label, _ in by["transformed by"]] == [
        f"0: {__name__}.Normalize",
        f"1: {__name__}.RandomNoise",
        f"2: {__name__}.flip",
    ]
    settings = [json.loads(value) for _, value in by["transformed by"]]
    assert settings == [{"mean": 0.5, "std": 0.25}, {"p": 0.0, "scale": 0.1}, {}]


def test_a_random_splits_seed_and_each_parts_offset_are_found_by_making_the_split_again(sweep):
    store, ids, modules, _ = sweep
    rows = store.sparql(
        """PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
        SELECT ?count ?seed ?offset ?digest WHERE { GRAPH ?g {
          ?run cnnprov:runId ?id . ?part cnnprov:indexCount ?count ;
            cnnprov:indicesSha256 ?digest .
          OPTIONAL { ?part cnnprov:splitSeed ?seed ; cnnprov:splitOffset ?offset } } }""",
        id=ids["noise=0.0"],
    ).to_dicts()
    module = modules["noise=0.0"]
    parts = (module.train, module.val, module.test_part)
    assert sorted((r["count"], r["seed"], r["offset"], r["digest"]) for r in rows) == sorted(
        (len(p.indices), 42, offset, indices_digest(p.indices)) for p, offset in zip(parts, (0, 200, 260), strict=True)
    )


def test_a_split_is_given_a_seed_only_where_the_seed_makes_it_again():
    full = TensorDataset(torch.arange(500))
    finder = SplitFinder()
    unknown = random_split(full, [400, 100], generator=torch.Generator().manual_seed(987_654))
    assert [finder.find(list(part.indices), len(full)) for part in unknown] == [None, None]
    assert finder.find(list(range(10)), len(full)) is None  # a Subset made by hand
    known = random_split(full, [0.8, 0.2], generator=torch.Generator().manual_seed(1234))
    found = [finder.find(list(part.indices), len(full)) for part in known]
    assert found == [SplitOrigin(1234, 0), SplitOrigin(1234, 400)]


def test_an_augmentation_change_is_visible_to_compare_runs(sweep):
    store, ids, _, _ = sweep
    rows = store.query("compare-runs", run_a=ids["noise=0.0"], run_b=ids["noise=0.5"], include="settings").to_dicts()
    assert [(row["setting"], json.loads(row["value_a"])["p"], json.loads(row["value_b"])["p"]) for row in rows] == [
        ("transformSettings", 0.0, 0.5)
    ]
    assert rows[0]["component"].endswith("/step-1")


def test_runs_using_dataset_finds_the_same_data_under_another_path_and_class(sweep):
    store, ids, _, _ = sweep
    rows = store.query("runs-using-dataset", dataset="DigitFiles").to_dicts()
    assert {row["run_id"] for row in rows} == {ids["noise=0.0"], ids["noise=0.5"]}  # by class: not the copy
    (fingerprint,) = {row["fingerprint"] for row in rows}
    by_content = store.query("runs-using-dataset", dataset=fingerprint).to_dicts()
    assert {row["run_id"] for row in by_content} == set(ids.values())  # the copy's data is the same
    assert {row["dataset_class"] for row in by_content} == {f"{__name__}.DigitFiles", f"{__name__}.CopiedDigitFiles"}


def test_the_path_from_a_test_metric_to_the_loaded_data(sweep):
    store, ids, modules, root = sweep
    rows = store.query("metric-lineage", run=ids["noise=0.5"], metric="test_acc").to_dicts()
    relations = [row["relation"] for row in rows]
    assert relations[:4] == ["metric", "generated by", "part of run", "computed on"]
    assert [row["label"] for row in rows if row["relation"] == "computed on"] == ["test"]
    (split,) = [row["value"] for row in rows if row["relation"] == "data derived from"]
    assert split == indices_digest(modules["noise=0.5"].test_part.indices)
    assert [row["value"] for row in rows if row["relation"] == "read file"] == [folder_fingerprint(root / "data")]
    assert [json.loads(row["value"]) for row in rows if row["relation"] == "transformed by"][1] == {
        "p": 0.5,
        "scale": 0.1,
    }


def test_which_pre_processing_the_best_run_used(sweep):
    store, ids, _, _ = sweep
    best = store.query("best-runs").rows[0][0]
    rows = store.query("best-run-preprocessing").to_dicts()
    assert {row["run_id"] for row in rows} == {best}
    train = [row for row in rows if row["role"] == "train"]
    assert [row["transform"].rsplit(".", 1)[-1] for row in train] == ["Normalize", "RandomNoise", "flip"]
    expected_p = 0.0 if best in (ids["noise=0.0"], ids["copy"]) else 0.5
    assert json.loads(train[1]["settings"])["p"] == expected_p


def test_the_new_records_conform_to_the_shapes_and_export_as_prov(sweep):
    store, ids, _, _ = sweep
    report = validate_store(store.path)
    assert len(report.runs) == 3 and report.conforms, [run.text() for run in report.runs if not run.conforms]
    provn = store.export("provn", run=ids["noise=0.0"]).decode()
    assert "cnnprov:TransformStep" in provn and "cnnprov:SourceData" in provn


def test_concatenated_in_memory_tensors_are_fingerprinted_by_their_bytes(tmp_path):
    images = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8) / 128
    first = TensorDataset(images[:1].repeat(16, 1, 1, 1), torch.zeros(16, dtype=torch.long))
    second = TensorDataset(images[1:].repeat(16, 1, 1, 1), torch.ones(16, dtype=torch.long))
    loader = DataLoader(ConcatDataset([first, second]), batch_size=8)
    logger = ProvLogger(store=tmp_path / "provenance")
    tiny_trainer(tmp_path, logger, max_epochs=1, limit_val_batches=0).fit(DigitsCNN(), train_dataloaders=loader)
    store = ProvStore(tmp_path / "provenance")
    rows = store.sparql(
        "SELECT ?class ?fingerprint ?how (COUNT(?inner) AS ?parts) WHERE { "
        "?level <https://w3id.org/cnnprov/ns#pythonClass> ?class . "
        "OPTIONAL { ?level <https://w3id.org/cnnprov/ns#fingerprint> ?fingerprint } "
        "OPTIONAL { ?level <https://w3id.org/cnnprov/ns#derivation> ?how } "
        "OPTIONAL { ?level <http://www.w3.org/ns/prov#wasDerivedFrom> ?inner } "
        "FILTER(STRSTARTS(STR(?level), CONCAT(STR(?run), '/dataset-'))) "
        "?run <https://w3id.org/cnnprov/ns#runId> ?id } GROUP BY ?class ?fingerprint ?how ORDER BY ?fingerprint"
    ).to_dicts()
    concat = [row for row in rows if row["how"] == "concatenation"]
    assert len(concat) == 1 and concat[0]["parts"] == 2

    def expected(dataset):
        digest = hashlib.sha256()
        for tensor in dataset.tensors:
            shape = "x".join(str(size) for size in tensor.shape)
            digest.update(f"tensor {shape} {str(tensor.dtype).replace('torch.', '')}\n".encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()

    sources = sorted(row["fingerprint"] for row in rows if row["how"] is None)
    assert sources == sorted([expected(first), expected(second)])


def test_past_the_content_budget_a_copy_of_the_data_keeps_its_fingerprint(tmp_path, monkeypatch):
    """The budget's policy, with a budget of 1 KiB: the first files by content, the rest by relative
    path and size: a copy elsewhere (other times, other path) has the same fingerprint."""
    import os

    from cnnprov.capture import data_lineage

    monkeypatch.setattr(data_lineage, "CONTENT_BUDGET", 1024)
    original = tmp_path / "a"
    original.mkdir()
    for index in range(5):
        (original / f"part-{index}.bin").write_bytes(bytes([index]) * 700)

    class Folder:
        def __init__(self, root):
            self.root = root

        def __len__(self):
            return 5

    def fingerprint(root):
        chain = data_lineage.DataChain()
        level = chain.levels[chain.add(Folder(root))]
        return level.fingerprint, level.fingerprint_method

    shutil.copytree(original, tmp_path / "b")
    for file in (tmp_path / "b").iterdir():
        os.utime(file, (1_000_000, 1_000_000))  # another machine's times
    first, method = fingerprint(original)
    assert method == "sha256 of files (large: sampled)"
    assert fingerprint(tmp_path / "b")[0] == first
    (tmp_path / "b" / "part-0.bin").write_bytes(b"\xff" * 700)  # within the budget: content counts
    assert fingerprint(tmp_path / "b")[0] != first
    shutil.copytree(original, tmp_path / "c")
    (tmp_path / "c" / "part-4.bin").write_bytes(b"\xff" * 701)  # past it: the size counts
    assert fingerprint(tmp_path / "c")[0] != first
