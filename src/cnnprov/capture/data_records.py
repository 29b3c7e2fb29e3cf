"""Records of where a run's data came from (:mod:`cnnprov.capture.data_lineage`): pure builders.

Each dataset of the chain is an entity of the run's graph, ``{run}/dataset-{k}``: a
``cnnprov:DerivedData`` ``prov:wasDerivedFrom`` what it wraps (a subset with its index count and
their SHA-256), or the ``cnnprov:SourceData`` at the bottom with its fingerprint, its tensors and
its files (``cnnprov:DataFile``, which it ``prov:wasDerivedFrom``). The data a stage used (its
``mls:Dataset`` in a role) is a ``prov:specializationOf`` the top of its chain. A dataset's
transforms are a ``cnnprov:TransformPipeline`` (a ``prov:Plan`` and ``prov:Collection`` of
``cnnprov:TransformStep``, in order) that the run ``prov:used``, so ``compare-runs`` sees them.
"""

from __future__ import annotations

from pyoxigraph import NamedNode

from cnnprov.capture.data_lineage import DataChain, DataLevel
from cnnprov.capture.transforms import TransformStep
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, PROV, RDF, RDFS, child, integer_literal, string_literal


def level_node(run: NamedNode, position: int) -> NamedNode:
    return child(run, "dataset", str(position))


def chain_records(
    run: NamedNode, chain: DataChain, written: set[int], made_by: NamedNode | None = None
) -> list[Triple]:
    """The levels of ``chain`` not ``written`` yet (and adds them to it); ``made_by``: the DataModule's
    setup they were made in, which generated them."""
    triples: list[Triple] = []
    for position, level in enumerate(chain.levels):
        if position not in written:
            written.add(position)
            triples += _level(run, position, level)
            if made_by is not None:
                triples.append((level_node(run, position), PROV.wasGeneratedBy, made_by))
    return triples


def preparation(run: NamedNode, python_class: str, stage: str, prepares: bool) -> tuple[NamedNode, list[Triple]]:
    """A LightningDataModule's ``setup`` for ``stage`` (and its ``prepare_data`` before, when the class
    has one of its own) as activities of the run; the node of the setup. Lightning calls them before
    any logger hook, so they carry no times: what they did is told by what they generated."""
    setup = child(run, "data-setup", stage)
    triples: list[Triple] = [
        (setup, RDF.type, PROV.Activity),
        (setup, RDF.type, CNNPROV.DataSetup),
        (setup, RDFS.label, string_literal(f"{python_class.rsplit('.', 1)[-1]}.setup({stage!r})")),
        (setup, CNNPROV.pythonClass, string_literal(python_class)),
        (setup, CNNPROV.partOfRun, run),
    ]
    if prepares:
        prepare = child(run, "data-preparation")
        triples += [
            (prepare, RDF.type, PROV.Activity),
            (prepare, RDF.type, CNNPROV.DataPreparation),
            (prepare, RDFS.label, string_literal(f"{python_class.rsplit('.', 1)[-1]}.prepare_data()")),
            (prepare, CNNPROV.pythonClass, string_literal(python_class)),
            (prepare, CNNPROV.partOfRun, run),
            (setup, PROV.wasInformedBy, prepare),
        ]
    return setup, triples


def data_lineage(run: NamedNode, role_node: NamedNode, top: int) -> list[Triple]:
    """The data of a stage is a specialization of the top of its chain."""
    return [(role_node, PROV.specializationOf, level_node(run, top))]


def _level(run: NamedNode, position: int, level: DataLevel) -> list[Triple]:
    node = level_node(run, position)
    kind = CNNPROV.SourceData if level.derivation is None else CNNPROV.DerivedData
    triples: list[Triple] = [
        (node, RDF.type, PROV.Entity),
        (node, RDF.type, kind),
        (node, CNNPROV.pythonClass, string_literal(level.python_class)),
        (node, RDFS.label, string_literal(level.python_class.rsplit(".", 1)[-1])),
    ]
    if level.sample_count is not None:
        triples.append((node, CNNPROV.itemCount, integer_literal(level.sample_count)))
    if level.derivation is not None:
        triples.append((node, CNNPROV.derivation, string_literal(level.derivation)))
    triples += [(node, PROV.wasDerivedFrom, level_node(run, inner)) for inner in level.derived_from]
    if level.index_count is not None:
        triples.append((node, CNNPROV.indexCount, integer_literal(level.index_count)))
    if level.indices_sha256 is not None:
        triples.append((node, CNNPROV.indicesSha256, string_literal(level.indices_sha256)))
    if level.split_seed is not None and level.split_offset is not None:
        triples.append((node, CNNPROV.splitSeed, integer_literal(level.split_seed)))
        triples.append((node, CNNPROV.splitOffset, integer_literal(level.split_offset)))
    if level.fingerprint is not None:
        triples.append((node, CNNPROV.fingerprint, string_literal(level.fingerprint)))
        triples.append((node, CNNPROV.fingerprintMethod, string_literal(level.fingerprint_method or "")))
    triples += [(node, CNNPROV.tensorShape, string_literal(text)) for text in level.tensors]
    for index, source in enumerate(level.files):
        file = child(node, "file", str(index))
        triples += [
            (file, RDF.type, PROV.Entity),
            (file, RDF.type, CNNPROV.DataFile),
            (file, CNNPROV.filePath, string_literal(source.path)),
            (file, CNNPROV.fileSizeBytes, integer_literal(source.size_bytes)),
            (file, CNNPROV.fileCount, integer_literal(source.file_count)),
            (file, CNNPROV.fingerprint, string_literal(source.fingerprint)),
            (node, PROV.wasDerivedFrom, file),
        ]
    for attribute, steps in level.transforms.items():
        triples += _pipeline(run, node, attribute, steps)
    return triples


def _pipeline(run: NamedNode, dataset: NamedNode, attribute: str, steps: list[TransformStep]) -> list[Triple]:
    pipeline = child(dataset, "transforms", attribute)
    triples: list[Triple] = [
        (pipeline, RDF.type, PROV.Entity),
        (pipeline, RDF.type, PROV.Plan),
        (pipeline, RDF.type, PROV.Collection),
        (pipeline, RDF.type, CNNPROV.TransformPipeline),
        (pipeline, CNNPROV.transformsOf, dataset),
        (pipeline, CNNPROV.pipelineAttribute, string_literal(attribute)),
        (pipeline, CNNPROV.stepCount, integer_literal(len(steps))),
        (run, PROV.used, pipeline),
    ]
    for step in steps:
        node = child(pipeline, "step", str(step.index))
        triples += [
            (node, RDF.type, PROV.Entity),
            (node, RDF.type, CNNPROV.TransformStep),
            (node, CNNPROV.stepIndex, integer_literal(step.index)),
            (node, CNNPROV.pythonClass, string_literal(step.python_class)),
            (node, RDFS.label, string_literal(step.python_class.rsplit(".", 1)[-1])),
            (node, CNNPROV.transformSettings, string_literal(step.settings_json())),
            (pipeline, PROV.hadMember, node),
        ]
    return triples
