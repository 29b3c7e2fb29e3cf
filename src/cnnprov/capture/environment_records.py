"""Pure builders of where and how an attempt ran: command line, source tree, packages, machine.

An attempt is one process, so each attempt of a run records what it ran with (a run resumed
in another environment shows it). The attempt ``prov:used`` three entities, each a part of it:

* ``{attempt}/packages``, a ``cnnprov:InstalledPackages``: one ``cnnprov:installedPackage``
  ``"name==version"`` per distribution and the ``cnnprov:sha256`` of the list
  (:func:`~cnnprov.capture.host_facts.packages_sha256`);
* ``{attempt}/environment``, a ``cnnprov:ExecutionEnvironment``: operating system, CPU, memory,
  CUDA and cuDNN, its GPUs (``cnnprov:hasGpu``) and the recorded environment variables;
* ``{attempt}/source-diff``, a ``cnnprov:SourceDiff``, only when the working tree differed from
  its commit: the patch's SHA-256 and size, and its text when small.

The command line, working directory and git state are the attempt's own properties.
"""

from __future__ import annotations

import shlex

from pyoxigraph import NamedNode

from cnnprov.capture.environment import RunEnvironment
from cnnprov.capture.host_facts import Machine, packages_sha256
from cnnprov.capture.source_tree import SourceTree
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, PROV, RDF, RDFS, child, integer_literal, literal, string_literal


def attempt_environment(attempt: NamedNode, env: RunEnvironment) -> list[Triple]:
    """Everything :func:`~cnnprov.capture.environment.current_environment` read, as the attempt's records."""
    triples: list[Triple] = []
    if env.command_line:
        triples.append((attempt, CNNPROV.commandLine, string_literal(shlex.join(env.command_line))))
    if env.working_directory:
        triples.append((attempt, CNNPROV.workingDirectory, string_literal(env.working_directory)))
    if env.source is not None:
        triples += source(attempt, env.source)
    if env.packages:
        triples += packages(attempt, env.packages)
    if env.machine is not None or env.variables:
        triples += execution_environment(attempt, env.machine, env.variables)
    return triples


def source(attempt: NamedNode, tree: SourceTree) -> list[Triple]:
    """The attempt's git state, and the patch from its commit to the tree when they differ."""
    triples: list[Triple] = [
        (attempt, CNNPROV.gitCommit, string_literal(tree.commit)),
        (attempt, CNNPROV.gitRepositoryPath, string_literal(tree.top_level)),
        (attempt, CNNPROV.gitDirty, literal(tree.dirty)),
    ]
    if tree.untracked_files is not None:
        triples.append((attempt, CNNPROV.untrackedFileCount, integer_literal(tree.untracked_files)))
    if tree.dirty:
        node = child(attempt, "source-diff")
        triples += [
            (node, RDF.type, PROV.Entity),
            (node, RDF.type, CNNPROV.SourceDiff),
            (node, CNNPROV.sha256, string_literal(tree.diff_sha256)),
            (node, CNNPROV.diffSizeBytes, integer_literal(tree.diff_bytes)),
            (attempt, PROV.used, node),
        ]
        if tree.diff_text is not None:
            triples.append((node, CNNPROV.diffText, string_literal(tree.diff_text)))
    return triples


def packages(attempt: NamedNode, installed: tuple[str, ...]) -> list[Triple]:
    """The installed distributions as one entity: a ``name==version`` value each, and the list's hash."""
    node = child(attempt, "packages")
    triples: list[Triple] = [
        (node, RDF.type, PROV.Entity),
        (node, RDF.type, CNNPROV.InstalledPackages),
        (node, CNNPROV.packageCount, integer_literal(len(installed))),
        (node, CNNPROV.sha256, string_literal(packages_sha256(installed))),
    ]
    triples += [(node, CNNPROV.installedPackage, string_literal(entry)) for entry in installed]
    triples.append((attempt, PROV.used, node))
    return triples


def execution_environment(attempt: NamedNode, machine: Machine | None, variables: dict[str, str]) -> list[Triple]:
    """The machine the attempt ran on and the recorded environment variables."""
    node = child(attempt, "environment")
    triples: list[Triple] = [(node, RDF.type, PROV.Entity), (node, RDF.type, CNNPROV.ExecutionEnvironment)]
    if machine is not None:
        for prop, value in (
            (CNNPROV.operatingSystem, machine.operating_system or None),
            (CNNPROV.cpuModel, machine.cpu_model),
            (CNNPROV.cudaVersion, machine.cuda),
            (CNNPROV.cudnnVersion, machine.cudnn),
        ):
            if value:
                triples.append((node, prop, string_literal(value)))
        for prop, number in (
            (CNNPROV.cpuCount, machine.cpu_count),
            (CNNPROV.availableCpuCount, machine.available_cpu_count),
            (CNNPROV.memoryBytes, machine.memory_bytes),
        ):
            if number is not None:
                triples.append((node, prop, integer_literal(number)))
        triples.append((node, CNNPROV.gpuCount, integer_literal(len(machine.gpus))))
        for gpu in machine.gpus:
            device = child(node, "gpu", gpu.index)
            triples += [
                (device, RDF.type, PROV.Entity),
                (device, RDF.type, CNNPROV.GPU),
                (device, CNNPROV.deviceIndex, integer_literal(gpu.index)),
                (device, RDFS.label, string_literal(gpu.name)),
                (node, CNNPROV.hasGpu, device),
            ]
            if gpu.memory_bytes is not None:
                triples.append((device, CNNPROV.memoryBytes, integer_literal(gpu.memory_bytes)))
            if gpu.driver:
                triples.append((device, CNNPROV.gpuDriverVersion, string_literal(gpu.driver)))
    for name, value in sorted(variables.items()):
        triples.append((node, CNNPROV.environmentVariable, string_literal(f"{name}={value}")))
    triples.append((attempt, PROV.used, node))
    return triples
