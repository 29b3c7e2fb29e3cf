"""What it takes to rerun a recorded run: ``cnnprov reproduce RUN``.

Read from the store through :class:`~cnnprov.analysis.provstore.ProvStore` alone: the command line,
working directory and source tree of the run's latest attempt (the process that ran it last), the
packages it ran with against those installed now, its settings (the ``hyperparameters`` query)
and its data. The packages installed now are the caller's to give (the CLI lists them with
:func:`cnnprov.capture.host_facts.installed_packages`): reading never imports capture.

Example::

    store = ProvStore("provenance")
    plan = reproduction(store, "3f2a", current_packages=["torch==2.3.0", ...], current_python="3.11.7")
    print(reproduction_text(plan))
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from typing import Any

from cnnprov.analysis.formatting import json_value, to_table
from cnnprov.analysis.provstore import ProvStore, QueryResult
from cnnprov.errors import QueryError

#: The latest attempt of a run and what it recorded of where and how it ran.
_ATTEMPT = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
SELECT ?run_name ?status ?attempt_index ?command ?working_directory ?git_commit ?repository ?git_dirty
       ?untracked ?diff_sha256 ?diff_bytes ?diff_text ?packages_sha256 ?package_count
WHERE {
  GRAPH ?bundle {
    VALUES (?run) { (UNDEF) }
    ?run_node cnnprov:runId ?run .
    OPTIONAL { ?run_node rdfs:label ?run_name }
    OPTIONAL { ?run_node cnnprov:status ?status }
    ?attempt cnnprov:partOfRun ?run_node ; a cnnprov:Attempt ; cnnprov:attemptIndex ?attempt_index .
    FILTER NOT EXISTS { ?later prov:wasInformedBy ?attempt ; a cnnprov:Attempt }
    OPTIONAL { ?attempt cnnprov:commandLine ?command }
    OPTIONAL { ?attempt cnnprov:workingDirectory ?working_directory }
    OPTIONAL { ?attempt cnnprov:gitCommit ?git_commit }
    OPTIONAL { ?attempt cnnprov:gitRepositoryPath ?repository }
    OPTIONAL { ?attempt cnnprov:gitDirty ?git_dirty }
    OPTIONAL { ?attempt cnnprov:untrackedFileCount ?untracked }
    OPTIONAL { ?attempt prov:used ?diff . ?diff a cnnprov:SourceDiff ; cnnprov:sha256 ?diff_sha256 ;
                        cnnprov:diffSizeBytes ?diff_bytes .
               OPTIONAL { ?diff cnnprov:diffText ?diff_text } }
    OPTIONAL { ?attempt prov:used ?packages . ?packages a cnnprov:InstalledPackages ;
                        cnnprov:sha256 ?packages_sha256 ; cnnprov:packageCount ?package_count }
  }
}
"""

#: One row per value of the latest attempt's packages, variables and machine.
_ATTEMPT_VALUES = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
SELECT ?kind ?key ?value
WHERE {
  GRAPH ?bundle {
    VALUES (?run) { (UNDEF) }
    ?run_node cnnprov:runId ?run .
    ?attempt cnnprov:partOfRun ?run_node ; a cnnprov:Attempt ; prov:used ?entity .
    FILTER NOT EXISTS { ?later prov:wasInformedBy ?attempt ; a cnnprov:Attempt }
    {
      ?entity a cnnprov:InstalledPackages ; cnnprov:installedPackage ?value .
      BIND("package" AS ?kind) BIND("" AS ?key)
    } UNION {
      ?entity a cnnprov:ExecutionEnvironment ; cnnprov:environmentVariable ?value .
      BIND("variable" AS ?kind) BIND("" AS ?key)
    } UNION {
      ?entity a cnnprov:ExecutionEnvironment ; ?property ?value .
      FILTER(isLiteral(?value) && ?property != cnnprov:environmentVariable)
      BIND("machine" AS ?kind) BIND(STRAFTER(STR(?property), "#") AS ?key)
    } UNION {
      ?entity a cnnprov:ExecutionEnvironment ; cnnprov:hasGpu ?gpu .
      ?gpu cnnprov:deviceIndex ?index ; rdfs:label ?model .
      OPTIONAL { ?gpu cnnprov:memoryBytes ?memory }
      BIND("gpu" AS ?kind) BIND(STR(?index) AS ?key)
      BIND(IF(BOUND(?memory), CONCAT(?model, " (", STR(?memory), " bytes)"), ?model) AS ?value)
    }
  }
}
"""

#: The data the run used, by role.
_DATA = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX mls: <http://www.w3.org/ns/mls#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
SELECT ?role ?dataset_class ?samples ?batch_size ?batches
WHERE {
  GRAPH ?bundle {
    VALUES (?run) { (UNDEF) }
    ?run_node cnnprov:runId ?run ; prov:used ?data .
    ?data a mls:Dataset .
    OPTIONAL { ?data cnnprov:dataRole ?role }
    OPTIONAL { ?data cnnprov:pythonClass ?dataset_class }
    OPTIONAL { ?data cnnprov:sampleCount ?samples }
    OPTIONAL { ?data cnnprov:batchSize ?batch_size }
    OPTIONAL { ?data cnnprov:batchCount ?batches }
  }
}
ORDER BY ?role
"""

#: The machine's facts as the plan names them, in the order it shows them (local name → key).
_MACHINE_KEYS = {
    "operatingSystem": "os", "cpuModel": "cpu", "cpuCount": "cores", "availableCpuCount": "available_cores",
    "memoryBytes": "memory_bytes", "cudaVersion": "cuda", "cudnnVersion": "cudnn", "gpuCount": "gpu_count",
}

#: The sources of each role's data, with their content's fingerprints and the files they read.
_FINGERPRINTS = """
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
SELECT DISTINCT ?role ?source_class ?fingerprint ?method ?file ?file_fingerprint WHERE {
  ?run_node cnnprov:runId ?run ;
            prov:used ?data .
  ?data cnnprov:dataRole ?role ;
        prov:specializationOf/prov:wasDerivedFrom* ?source .
  ?source a cnnprov:SourceData ;
          cnnprov:pythonClass ?source_class .
  OPTIONAL { ?source cnnprov:fingerprint ?fingerprint }
  OPTIONAL { ?source cnnprov:fingerprintMethod ?method }
  OPTIONAL { ?source prov:wasDerivedFrom ?source_file .
             ?source_file a cnnprov:DataFile ; cnnprov:filePath ?file ; cnnprov:fingerprint ?file_fingerprint }
}
ORDER BY ?role ?source_class ?file
"""
#: What the text says of data whose sources were not fingerprinted (runs recorded before cnnprov did).
FINGERPRINTS_NOTE = "not recorded for this run: classes and sizes above are what identifies the data"


def reproduction(
    store: ProvStore, run: str, current_packages: Iterable[str] = (), current_python: str | None = None
) -> dict[str, Any]:
    """What it takes to rerun ``run`` (its id, or the start of one), as plain data (JSON-ready).

    ``current_packages`` (``name==version``, names normalised) are compared with those the run
    ran with: each package installed at another version, or on one side only, is a difference.
    """
    run_id = store.resolve_run(run)
    rows = store.sparql(_ATTEMPT, run=run_id).to_dicts()
    if not rows:
        raise QueryError(f"run '{run_id}' has no attempt recorded: nothing says how it ran")
    attempt = rows[0]
    recorded: list[str] = []
    variables: dict[str, str] = {}
    machine: dict[str, Any] = {}
    gpus: dict[int, str] = {}
    for row in store.sparql(_ATTEMPT_VALUES, run=run_id):
        if row["kind"] == "package":
            recorded.append(row["value"])
        elif row["kind"] == "variable":
            name, _, value = str(row["value"]).partition("=")
            variables[name] = value
        elif row["kind"] == "machine":
            machine[_MACHINE_KEYS.get(row["key"], row["key"])] = row["value"]
        else:
            gpus[int(row["key"])] = row["value"]
    order = list(_MACHINE_KEYS.values())
    machine = dict(sorted(machine.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    if gpus:
        machine["gpus"] = [gpus[index] for index in sorted(gpus)]
    variables = dict(sorted(variables.items()))
    software = {row["name"]: row["value"] for row in _software(store, run_id)}
    settings = store.query("hyperparameters", run=run_id, include="all")
    dirty = attempt["git_dirty"]
    diff = None
    if attempt["diff_sha256"] is not None:
        diff = {
            "sha256": attempt["diff_sha256"],
            "bytes": attempt["diff_bytes"],
            "kept": attempt["diff_text"] is not None,
            "get": f"cnnprov reproduce {run_id} --diff > run.patch" if attempt["diff_text"] is not None else None,
        }
    plan: dict[str, Any] = {
        "run_id": run_id,
        "run_name": attempt["run_name"],
        "status": attempt["status"],
        "attempt": attempt["attempt_index"],
        "command": attempt["command"],
        "working_directory": attempt["working_directory"],
        "source": {
            "commit": attempt["git_commit"],
            "repository": attempt["repository"],
            "dirty": dirty,
            "diff": diff,
            "untracked_files": attempt["untracked"],
        },
        "environment_variables": variables,
        "machine": machine,
        "python": {"recorded": software.get("python"), "now": current_python},
        "packages": {
            "recorded": len(recorded) if recorded else None,
            "sha256": attempt["packages_sha256"],
            "differences": package_differences(recorded, current_packages) if recorded else [],
        },
        "settings": [
            {"source": row["source"], "name": row["name"], "value": json_value(row["value"])} for row in settings
        ],
        "data": [{key: json_value(value) for key, value in row.items()} for row in store.sparql(_DATA, run=run_id)],
        "data_fingerprints": [
            {key: json_value(value) for key, value in row.items()} for row in store.sparql(_FINGERPRINTS, run=run_id)
        ],
    }
    plan["steps"] = _steps(plan)
    return plan


def _software(store: ProvStore, run_id: str) -> list[dict[str, Any]]:
    return store.sparql(
        """PREFIX prov: <http://www.w3.org/ns/prov#> PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
        PREFIX cnnprov: <https://w3id.org/cnnprov/ns#>
        SELECT ?name ?value WHERE { GRAPH ?g { VALUES (?run) { (UNDEF) } ?r cnnprov:runId ?run ;
          prov:wasAssociatedWith ?agent . ?agent rdfs:label ?name ; cnnprov:softwareVersion ?value } }""",
        run=run_id,
    ).to_dicts()


def package_differences(recorded: Iterable[str], current: Iterable[str]) -> list[dict[str, Any]]:
    """Packages at another version now, recorded only ("not installed now") or installed only ("not recorded")."""
    then = dict(_split(entry) for entry in recorded)
    now = dict(_split(entry) for entry in current)
    differences = []
    for name in sorted(then.keys() | now.keys()):
        was, is_ = then.get(name), now.get(name)
        if was == is_:
            continue
        difference = "not installed now" if is_ is None else "not recorded" if was is None else "different"
        differences.append({"package": name, "recorded": was, "installed": is_, "difference": difference})
    return differences


def _split(entry: str) -> tuple[str, str]:
    name, _, version = entry.partition("==")
    return name, version


def _steps(plan: dict[str, Any]) -> list[str]:
    """Shell lines that set the run up again, as far as the record tells."""
    steps = []
    source = plan["source"]
    if source["commit"]:
        where, commit = shlex.quote(source["repository"] or "."), shlex.quote(str(source["commit"]))
        steps.append(f"cd {where} && git checkout {commit}")
        diff = source["diff"]
        if diff and diff["kept"]:
            steps.append(f"{diff['get']} && git apply run.patch")
        elif diff:
            steps.append(f"# the tree differed from the commit by {diff['bytes']:,} bytes of patch (sha256 "
                         f"{diff['sha256']}), too large or not text to be kept: recreate it by hand")
    if plan["packages"]["differences"]:
        pins = [f"{d['package']}=={d['recorded']}" for d in plan["packages"]["differences"] if d["recorded"]]
        if pins:
            steps.append("pip install " + " ".join(shlex.quote(pin) for pin in pins))
    if plan["working_directory"]:
        steps.append(f"cd {shlex.quote(plan['working_directory'])}")
    if plan["command"]:
        variables = " ".join(f"{name}={shlex.quote(value)}" for name, value in plan["environment_variables"].items())
        steps.append(f"{variables} {plan['command']}".strip())
    return steps


def reproduction_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, ensure_ascii=False, default=str) + "\n"


def reproduction_text(plan: dict[str, Any]) -> str:
    """The plan for people: what the run ran, where, with what, and how to set that up again."""
    source, packages = plan["source"], plan["packages"]
    lines = [f"Run {plan['run_id']} '{plan['run_name'] or ''}' ({plan['status']}), attempt {plan['attempt']}", ""]
    lines.append(f"command line:       {plan['command'] or '(not recorded)'}")
    lines.append(f"working directory:  {plan['working_directory'] or '(not recorded)'}")
    if source["commit"]:
        state = "differed from it" if source["dirty"] else "clean"
        lines.append(f"git commit:         {source['commit']} in {source['repository']} (tree {state})")
        diff = source["diff"]
        if diff:
            kept = f"get it with: {diff['get']}" if diff["kept"] else "too large or not text: not kept"
            lines.append(f"diff:               sha256 {diff['sha256']}, {diff['bytes']:,} bytes; {kept}")
        if source["untracked_files"]:
            lines.append(f"untracked files:    {source['untracked_files']} (in neither the commit nor the diff)")
    else:
        lines.append("git commit:         (none: not run from a git working tree)")
    variables = plan["environment_variables"]
    lines.append("environment:        " + (" ".join(f"{k}={v}" for k, v in variables.items()) or "(none of the "
                                           "recorded variables was set)"))
    machine = plan["machine"]
    if machine:
        facts = [_fact(key, value) for key, value in machine.items() if key != "gpus"]
        facts += [f"GPU {index}: {gpu}" for index, gpu in enumerate(machine.get("gpus", []))]
        lines.append("machine:            " + "; ".join(facts))
    python = plan["python"]
    lines.append(f"python:             {python['recorded']} then, {python['now'] or 'unknown'} now")
    lines.append("")
    if packages["recorded"] is None:
        lines.append("packages: not recorded for this run")
    elif not packages["differences"]:
        lines.append(f"packages: the {packages['recorded']} recorded are installed now, at the same versions "
                     f"(sha256 {packages['sha256']})")
    else:
        lines.append(f"packages that differ from this environment ({packages['recorded']} recorded, "
                     f"sha256 {packages['sha256']}):")
        lines.append(_indented(_table(packages["differences"], ("package", "recorded", "installed", "difference"))))
    lines.append("settings (hyperparameters):")
    lines.append(_indented(_table(plan["settings"], ("source", "name", "value"))))
    lines.append("data:")
    lines.append(_indented(_table(plan["data"], ("role", "dataset_class", "samples", "batch_size", "batches"))))
    if plan["data_fingerprints"]:
        lines.append("data fingerprints (the content each role's data came from; the same data has the same):")
        columns = ("role", "source_class", "fingerprint", "file", "file_fingerprint")
        lines.append(_indented(_table(plan["data_fingerprints"], columns)))
    else:
        lines.append(f"data fingerprints: {FINGERPRINTS_NOTE}")
    lines.append("")
    lines.append("to set it up again:")
    lines += [f"  {step}" for step in plan["steps"]] or ["  (nothing recorded says how)"]
    return "\n".join(lines) + "\n"


def _fact(key: str, value: Any) -> str:
    if key == "memory_bytes" and isinstance(value, int):
        return f"memory {value / 2**30:.1f} GiB"
    return f"{key.replace('_', ' ')} {value}"


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    return to_table(QueryResult(list(columns), [tuple(row.get(c) for c in columns) for row in rows]), max_width=200)


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.rstrip("\n").splitlines())


def diff_text(store: ProvStore, run: str) -> str:
    """The patch from the run's commit to the tree it ran from, as recorded (for ``git apply``)."""
    run_id = store.resolve_run(run)
    rows = store.sparql(_ATTEMPT, run=run_id).to_dicts()
    attempt = rows[0] if rows else {}
    if attempt.get("diff_text") is not None:
        return str(attempt["diff_text"])
    if attempt.get("diff_sha256") is not None:
        raise QueryError(
            f"run '{run_id}' ran from a tree that differed from its commit by {attempt['diff_bytes']:,} bytes of "
            f"patch (sha256 {attempt['diff_sha256']}), more than the 64 KiB of text a record keeps: only its hash is "
            f"recorded"
        )
    if attempt.get("git_dirty") is False:
        raise QueryError(f"run '{run_id}' ran from a clean git tree (commit {attempt['git_commit']}): there is no diff")
    raise QueryError(f"run '{run_id}' has no git state recorded (not run from a git working tree, or an older record)")
