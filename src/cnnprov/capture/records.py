"""Pure builders of a run's records: plain values and nodes in, triples out.

Nothing here does I/O, holds a writer or reads recorder state: the callers
(:class:`~cnnprov.capture.recorder.RunRecorder`, the Optuna study recorder)
decide when a record is due and what it numbers, and buffer what these return.
A generation gets its qualified form when it is buffered (:func:`in_graph`,
:func:`cnnprov.rdf.prov_forms.with_qualified_form`); a usage with a role (data,
a checkpoint resumed from) is built with it (:func:`cnnprov.rdf.prov_forms.used_in_role`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyoxigraph import NamedNode, Quad

from cnnprov.capture.environment import RunEnvironment
from cnnprov.capture.environment_records import attempt_environment
from cnnprov.capture.hyperparameters import scalar
from cnnprov.capture.nodes import (  # noqa: F401 - re-exported: records and their IRIs go together
    attempt_node,
    checkpoint_node,
    epoch_node,
    group_node,
    optimizer_node,
    setting_node,
    user_association_node,
)
from cnnprov.capture.resource_use import ResourceUse
from cnnprov.rdf import prov_forms
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import (
    CNNPROV,
    MLS,
    PROV,
    RDF,
    RDFS,
    child,
    datetime_literal,
    double_literal,
    integer_literal,
    iri,
    iri_segment,
    kind_segment,
    literal,
    string_literal,
)

#: Scheduler state keys that are no setting of the schedule (or repeat one recorded elsewhere).
_SCHEDULER_STATE_SKIPPED = ("last_epoch", "_last_lr", "base_lrs", "optimizer")


def in_graph(triples: Iterable[Triple], graph: NamedNode) -> list[Quad]:
    """The triples as quads of ``graph``, each with its qualified PROV form where PROV-O has one."""
    return [Quad(*triple, graph) for s, p, o in triples for triple in prov_forms.with_qualified_form(s, p, o)]


def run_records(
    run: NamedNode, bundle: NamedNode, name: str, run_id: str, started: float, status: str, env: RunEnvironment
) -> list[Triple]:
    """The run activity and the bundle (named graph) that describes it."""
    triples: list[Triple] = [(run, RDF.type, cls) for cls in (PROV.Activity, MLS.Run, CNNPROV.TrainingRun)]
    triples += [
        (run, RDFS.label, string_literal(name)),
        (run, CNNPROV.runId, string_literal(run_id)),
        (run, PROV.startedAtTime, datetime_literal(started)),
        (run, CNNPROV.status, string_literal(status)),
        (run, CNNPROV.hostname, string_literal(env.hostname)),
        (run, CNNPROV.processId, integer_literal(env.process_id)),
    ]
    if env.random_seed is not None:
        triples.append((run, CNNPROV.randomSeed, integer_literal(env.random_seed)))
    if env.git_commit:
        triples.append((run, CNNPROV.gitCommit, string_literal(env.git_commit)))
    triples += [(bundle, RDF.type, cls) for cls in (PROV.Entity, PROV.Bundle, CNNPROV.RunBundle)]
    triples.append((bundle, CNNPROV.describesRun, run))
    return triples


def agent(activity: NamedNode, agent: NamedNode, kind: NamedNode, label: str) -> list[Triple]:
    """An agent of ``kind`` and the activity's plain association with it."""
    return [
        (agent, RDF.type, PROV.Agent),
        (agent, RDF.type, kind),
        (agent, RDFS.label, string_literal(label)),
        (activity, PROV.wasAssociatedWith, agent),
    ]


def agents(run: NamedNode, bundle: NamedNode, base: str, env: RunEnvironment) -> list[Triple]:
    """The user and the software the run was associated with; cnnprov is the bundle's author."""
    user = iri(base, "agent", "person", iri_segment(env.user))
    triples = agent(run, user, PROV.Person, env.user)
    for software, version in env.software.items():
        software_agent = iri(base, "agent", "software", iri_segment(software), kind_segment("version", version))
        triples += agent(run, software_agent, PROV.SoftwareAgent, software)
        triples += prov_forms.association(run, software_agent)
        triples.append((software_agent, CNNPROV.softwareVersion, string_literal(version)))
        if software == "cnnprov":
            triples.append((bundle, PROV.wasAttributedTo, software_agent))
    # the user's association has a node of its own: the plan (log_plan) hangs off it
    association = user_association_node(run)
    triples += [
        (run, PROV.qualifiedAssociation, association),
        (association, RDF.type, PROV.Association),
        (association, PROV.agent, user),
    ]
    return triples


def attempt(
    run: NamedNode, index: int, started: float, status: str, env: RunEnvironment,
    previous: NamedNode | None = None, checkpoint: NamedNode | None = None,
) -> list[Triple]:
    """The ``index``-th attempt at the run: informed by the previous one, using the checkpoint it resumed.

    With where and how its process ran (:mod:`cnnprov.capture.environment_records`).
    """
    node = attempt_node(run, index)
    triples: list[Triple] = [
        (node, RDF.type, PROV.Activity),
        (node, RDF.type, CNNPROV.Attempt),
        (node, CNNPROV.attemptIndex, integer_literal(index)),
        (node, CNNPROV.partOfRun, run),
        (node, PROV.startedAtTime, datetime_literal(started)),
        (node, CNNPROV.status, string_literal(status)),
        (node, CNNPROV.hostname, string_literal(env.hostname)),
        (node, CNNPROV.processId, integer_literal(env.process_id)),
    ]
    if previous is not None:
        triples.append((node, PROV.wasInformedBy, previous))
    if checkpoint is not None:
        triples += resumed_from(node, checkpoint)
    return triples + attempt_environment(node, env)  # each attempt is a process: where and how it ran


def resumed_from(attempt: NamedNode, checkpoint: NamedNode) -> list[Triple]:
    """The ``attempt`` used ``checkpoint`` in the role of the checkpoint it resumed training from."""
    return prov_forms.used_in_role(attempt, checkpoint, CNNPROV.resumedCheckpoint)


def plan(run: NamedNode, base: str, python_class: str) -> list[Triple]:
    """The code the run executed (a ``module.Class`` path), as the plan of the user's association."""
    node = iri(base, "plan", iri_segment(python_class))
    triples: list[Triple] = [
        (node, RDF.type, cls) for cls in (PROV.Entity, PROV.Plan, MLS.Implementation, CNNPROV.LightningModuleClass)
    ]
    triples += [
        (node, RDFS.label, string_literal(python_class.rsplit(".", 1)[-1])),
        (node, CNNPROV.pythonClass, string_literal(python_class)),
        (user_association_node(run), PROV.hadPlan, node),
        (run, MLS.executes, node),
    ]
    return triples


# -- settings --------------------------------------------------------------
def setting(node: NamedNode, parameter: NamedNode, value: Any) -> list[Triple]:
    """A hyperparameter setting: ``parameter`` had the RDF term ``value``.

    A value of ``None`` (``literal(None)``, ``rdf:nil``) is an absence: the setting gets no
    ``mls:hasValue``, an ``owl:DatatypeProperty`` whose values are literals (OWL 2 DL).
    """
    triples = [
        (node, RDF.type, PROV.Entity),
        (node, RDF.type, MLS.HyperParameterSetting),
        (node, MLS.specifiedBy, parameter),
    ]
    if value != RDF.nil:
        triples.append((node, MLS.hasValue, value))
    return triples


def hyperparameter(parameter: NamedNode, name: str) -> list[Triple]:
    return [(parameter, RDF.type, MLS.HyperParameter), (parameter, RDFS.label, string_literal(name))]


def hyperparameter_setting(
    run: NamedNode, base: str, owner: NamedNode, key: str, value: Any, name: str
) -> list[Triple]:
    """Setting ``key`` of ``owner`` (the run, an optimizer's group, a scheduler), an input of the run.

    ``name`` is the hyperparameter it sets (``optimizer.lr``), shared by every run that sets it.
    """
    node = setting_node(owner, key)
    parameter = iri(base, "hyperparameter", iri_segment(name))
    triples = setting(node, parameter, literal(scalar(value)))
    if owner != run:
        triples.append((node, CNNPROV.settingOf, owner))
    triples.append((parameter, RDF.type, PROV.Entity))
    triples += hyperparameter(parameter, name)
    triples += [(run, PROV.used, node), (run, MLS.hasInput, node)]
    return triples


def optimizer(
    run: NamedNode, base: str, index: int, python_class: str, param_groups: Iterable[Mapping[str, Any]]
) -> list[Triple]:
    """An optimizer and every setting of each parameter group (``params`` aside)."""
    node = optimizer_node(run, index)
    triples: list[Triple] = [(node, RDF.type, cls) for cls in (PROV.Entity, PROV.Collection, CNNPROV.Optimizer)]
    triples += [(node, CNNPROV.pythonClass, string_literal(python_class)), (run, PROV.used, node)]
    for group_index, settings in enumerate(param_groups):
        group = group_node(node, group_index)
        triples += [
            (group, RDF.type, PROV.Entity),
            (group, RDF.type, CNNPROV.ParameterGroup),
            (group, CNNPROV.parameterGroupIndex, integer_literal(group_index)),
            (node, PROV.hadMember, group),
        ]
        for key, value in settings.items():
            if key != "params":
                triples += hyperparameter_setting(run, base, group, key, value, f"optimizer.{key}")
    return triples


def scheduler(
    run: NamedNode, base: str, index: int, python_class: str, state: Mapping[str, Any],
    adjusts: NamedNode | None = None, interval: str | None = None, frequency: int | None = None,
) -> list[Triple]:
    """A learning-rate scheduler, the optimizer it ``adjusts`` and the settings in its ``state`` dict."""
    node = child(run, "scheduler", str(index))
    triples: list[Triple] = [
        (node, RDF.type, PROV.Entity),
        (node, RDF.type, CNNPROV.LearningRateScheduler),
        (node, CNNPROV.pythonClass, string_literal(python_class)),
    ]
    if interval:
        triples.append((node, CNNPROV.schedulerInterval, string_literal(interval)))
    if frequency is not None:
        triples.append((node, CNNPROV.schedulerFrequency, integer_literal(frequency)))
    if adjusts is not None:
        triples.append((node, CNNPROV.adjusts, adjusts))
    triples.append((run, PROV.used, node))
    for key, value in state.items():
        if key.startswith("_") or key in _SCHEDULER_STATE_SKIPPED:
            continue
        if callable(value) or (isinstance(value, (dict, list)) and len(value) > 64):  # lambdas, large tables
            continue
        triples += hyperparameter_setting(run, base, node, key, value, f"scheduler.{key}")
    return triples


def data_node(run: NamedNode, role: str) -> NamedNode:
    return child(run, "data", role)


#: A data role (``cnnprov:dataRole``) → the ``prov:Role`` the run's usage of the data had.
DATA_USAGE_ROLES = {
    "train": CNNPROV.trainData,
    "validation": CNNPROV.validationData,
    "test": CNNPROV.testData,
    "predict": CNNPROV.predictData,
}


def dataset(
    run: NamedNode, role: str, dataset_class: str | None = None,
    sample_count: int | None = None, batch_size: int | None = None, batch_count: int | None = None,
) -> list[Triple]:
    """The data a stage used, in its ``role`` (train, validation, test, predict)."""
    node = data_node(run, role)
    triples: list[Triple] = [
        (node, RDF.type, PROV.Entity),
        (node, RDF.type, MLS.Dataset),
        (node, CNNPROV.dataRole, string_literal(role)),
    ]
    if dataset_class:
        triples.append((node, CNNPROV.pythonClass, string_literal(dataset_class)))
        triples.append((node, RDFS.label, string_literal(dataset_class.rsplit(".", 1)[-1])))
    for prop, value in (
        (CNNPROV.sampleCount, sample_count),
        (CNNPROV.batchSize, batch_size),
        (CNNPROV.batchCount, batch_count),
    ):
        if value is not None:
            triples.append((node, prop, integer_literal(value)))
    usage_role = DATA_USAGE_ROLES.get(role)
    if usage_role is not None:
        triples += prov_forms.used_in_role(run, node, usage_role)
    else:
        triples.append((run, PROV.used, node))
    triples.append((run, MLS.hasInput, node))
    return triples


# -- epochs and checkpoints ------------------------------------------------
def epoch_start(run: NamedNode, index: int, started: float, follows_previous: bool) -> list[Triple]:
    """Epoch ``index`` of the run began; ``follows_previous``: epoch ``index - 1`` is recorded and informed it."""
    node = epoch_node(run, index)
    triples: list[Triple] = [
        (node, RDF.type, PROV.Activity),
        (node, RDF.type, CNNPROV.Epoch),
        (node, CNNPROV.epochIndex, integer_literal(index)),
        (node, CNNPROV.partOfRun, run),
        (node, PROV.startedAtTime, datetime_literal(started)),
    ]
    if follows_previous:
        triples.append((node, PROV.wasInformedBy, epoch_node(run, index - 1)))
    return triples


def epoch_end(epoch: NamedNode, started: float, ended: float) -> list[Triple]:
    """An epoch's end time and duration (one value each: a re-run epoch's replace its earlier ones)."""
    return [
        (epoch, PROV.endedAtTime, datetime_literal(ended)),
        (epoch, CNNPROV.durationSeconds, double_literal(ended - started)),
    ]


def _checkpoint_file(node: NamedNode, path: str) -> list[Triple]:
    triples: list[Triple] = [(node, RDF.type, cls) for cls in (PROV.Entity, MLS.Model, CNNPROV.Checkpoint)]
    triples.append((node, CNNPROV.filePath, string_literal(path)))
    return triples


def input_checkpoint(node: NamedNode, path: str, size: int, sha256: str) -> list[Triple]:
    """A checkpoint file (absolute ``path``) the run started from that no stored run wrote."""
    triples = _checkpoint_file(node, path)
    triples += [
        (node, CNNPROV.fileSizeBytes, integer_literal(size)),
        (node, CNNPROV.sha256, string_literal(sha256)),
    ]
    return triples


def checkpoint(
    node: NamedNode, path: str, written: float, generator: NamedNode, size: int | None = None,
    monitor: str | None = None, score: float | None = None, epoch: int | None = None, step: int | None = None,
    previous: NamedNode | None = None,
) -> list[Triple]:
    """A checkpoint file (absolute ``path``) the ``generator`` (an epoch, or the run) wrote.

    Its SHA-256 is no argument: hashing reads the file, which the writer thread does.
    """
    triples = _checkpoint_file(node, path)
    triples.append((node, PROV.generatedAtTime, datetime_literal(written)))
    if size is not None:
        triples.append((node, CNNPROV.fileSizeBytes, integer_literal(size)))
    if monitor:
        triples.append((node, CNNPROV.monitoredMetric, string_literal(monitor)))
    if score is not None:
        triples.append((node, CNNPROV.monitoredScore, double_literal(score)))
    if epoch is not None:
        triples.append((node, CNNPROV.atEpoch, integer_literal(epoch)))
    if step is not None:
        triples.append((node, CNNPROV.atStep, integer_literal(step)))
    triples.append((node, PROV.wasGeneratedBy, generator))
    if previous is not None:
        triples.append((node, PROV.wasDerivedFrom, previous))
    return triples


def resource_use(epoch: NamedNode, usage: ResourceUse) -> list[Triple]:
    """What an epoch used of the machine, as its attributes."""
    triples: list[Triple] = [
        (epoch, CNNPROV.cpuSeconds, double_literal(usage.cpu_seconds)),
        (epoch, CNNPROV.timedSteps, integer_literal(usage.steps)),
    ]
    if usage.peak_rss_bytes is not None:
        triples.append((epoch, CNNPROV.peakRssBytes, integer_literal(usage.peak_rss_bytes)))
    for prop, value in (
        (CNNPROV.stepSecondsMean, usage.step_mean_seconds),
        (CNNPROV.stepSecondsP95, usage.step_p95_seconds),
        (CNNPROV.gpuUtilizationPercent, usage.gpu_utilization_percent),
    ):
        if value is not None:
            triples.append((epoch, prop, double_literal(value)))
    if usage.gpu_peak_allocated_bytes is not None:
        triples.append((epoch, CNNPROV.gpuPeakAllocatedBytes, integer_literal(usage.gpu_peak_allocated_bytes)))
    return triples
