"""Where and how a run ran (issue 17 points 4 and 6): command line, git tree, packages, machine, `cnnprov reproduce`.

Two runs train in processes of their own from a git working tree with uncommitted changes; the
second has one more distribution on its path (a dist-info folder on PYTHONPATH, which
importlib.metadata finds as it finds any installed package), an allowlisted variable, a variable
that is no setting of training and a secret on its command line. A third run trains here, from a
clean tree. What they recorded is read back with SPARQL, the bundled queries and the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import rdflib
from rdflib import Literal, Namespace
from rdflib.namespace import RDF

from cnnprov import ProvLogger, ProvStore
from cnnprov.analysis.validate import validate_graph, validate_store
from cnnprov.capture import environment, host_facts, source_tree
from cnnprov.demo import DigitsCNN

from helpers import HERE, answers_on_both_engines, as_multiset, cli, cli_env, tiny_data, tiny_trainer

CP = Namespace("https://w3id.org/cnnprov/ns#")
PREFIXES = "PREFIX prov: <http://www.w3.org/ns/prov#> PREFIX cnnprov: <https://w3id.org/cnnprov/ns#> "
PROBE = "cnnprov-probe-pkg==1.2.3"  # the distribution only the second run can import
SECRET, ARGUMENT_SECRET = "hunter2-in-the-environment", "hunter3-on-the-command-line"

TRAIN = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from helpers import tiny_data, tiny_trainer
from cnnprov import ProvLogger
from cnnprov.demo import DigitsCNN
store, name, root = sys.argv[1:4]
logger = ProvLogger(store=store, run_name=name, save_dir=root)  # checkpoints outside the working tree
tiny_trainer(Path(root), logger, max_epochs=1).fit(DigitsCNN(), datamodule=tiny_data())
print("RUN_ID=" + logger.run_id)
"""


def git(directory: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *arguments]
    return subprocess.run(command, cwd=directory, check=True, capture_output=True, text=True).stdout


def project(root: Path) -> Path:
    """A git working tree with one commit."""
    folder = root / "project"
    folder.mkdir()
    git(folder, "init", "-q")
    (folder / "train.py").write_text("print('first version')\n")
    git(folder, "add", "train.py")
    git(folder, "commit", "-q", "-m", "first")
    return folder


def ask(store: ProvStore, query: str, **params) -> list[dict]:
    return store.sparql(PREFIXES + query, **params).to_dicts()


def attempt_of(store: ProvStore, run_id: str) -> dict:
    (row,) = ask(store, """SELECT ?attempt WHERE { VALUES (?run) { (UNDEF) } ?r cnnprov:runId ?run .
                            ?attempt a cnnprov:Attempt ; cnnprov:partOfRun ?r }""", run=run_id)
    return row


def packages_of(store: ProvStore, run_id: str) -> tuple[list[str], str, int]:
    rows = ask(store, """SELECT ?entry ?sha ?count WHERE { VALUES (?run) { (UNDEF) } ?r cnnprov:runId ?run .
                           ?a cnnprov:partOfRun ?r ; prov:used ?p . ?p a cnnprov:InstalledPackages ;
                           cnnprov:installedPackage ?entry ; cnnprov:sha256 ?sha ; cnnprov:packageCount ?count }""",
               run=run_id)
    assert len({(row["sha"], row["count"]) for row in rows}) == 1
    return sorted(row["entry"] for row in rows), rows[0]["sha"], rows[0]["count"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("environments")
    folder = project(root)
    (folder / "train.py").write_text("print('second version, not committed')\n")  # unstaged
    (folder / "helper.py").write_text("VALUE = 1\n")
    git(folder, "add", "helper.py")  # staged
    (folder / "notes.txt").write_text("untracked\n")
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=folder, check=True, capture_output=True).stdout
    extra = root / "extra"
    (extra / "cnnprov_probe_pkg-1.2.3.dist-info").mkdir(parents=True)
    (extra / "cnnprov_probe_pkg-1.2.3.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cnnprov_Probe.pkg\nVersion: 1.2.3\n"
    )
    script = root / "train_once.py"
    script.write_text(TRAIN.format(tests=str(HERE)))
    store = root / "provenance"
    base = {k: v for k, v in cli_env().items() if k not in host_facts.RECORDED_VARIABLES}
    ids = {}
    for name, env, extra_args in (
        ("a", base, []),
        ("b", {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(extra), base.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "3", "CNNPROV_TEST_SECRET": SECRET}, ["--api-token", ARGUMENT_SECRET]),
    ):
        args = [sys.executable, str(script), str(store), name, str(root / "out"), *extra_args]
        done = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        ids[name] = done.stdout.strip().splitlines()[-1].removeprefix("RUN_ID=")
    head = git(folder, "rev-parse", "HEAD").strip()
    return SimpleNamespace(store=ProvStore(store), folder=folder, diff=diff, head=head, script=script, root=root, **ids)


# -- where it ran: command line, working directory, git tree ----------------------------------------
def test_a_dirty_tree_is_recorded_with_its_diff_and_the_diffs_hash(two_runs):
    rows = ask(two_runs.store, """
        SELECT ?commit ?top ?dirty ?untracked ?sha ?size ?text WHERE {
          VALUES (?run) { (UNDEF) } ?r cnnprov:runId ?run . ?a a cnnprov:Attempt ; cnnprov:partOfRun ?r ;
             cnnprov:gitCommit ?commit ; cnnprov:gitRepositoryPath ?top ; cnnprov:gitDirty ?dirty ;
             cnnprov:untrackedFileCount ?untracked ; prov:used ?diff .
          ?diff a cnnprov:SourceDiff ; cnnprov:sha256 ?sha ; cnnprov:diffSizeBytes ?size ; cnnprov:diffText ?text }""",
        run=two_runs.b)
    (row,) = rows
    assert (row["commit"], row["top"], row["dirty"]) == (two_runs.head, str(two_runs.folder.resolve()), True)
    assert row["sha"] == hashlib.sha256(two_runs.diff).hexdigest() and row["size"] == len(two_runs.diff)
    assert row["text"] == two_runs.diff.decode("utf-8")
    assert "second version, not committed" in row["text"] and "helper.py" in row["text"]  # unstaged and staged
    assert row["untracked"] == 1  # notes.txt: in neither the commit nor the diff
    (environment_row,) = two_runs.store.query("run-environment", run=two_runs.b).to_dicts()
    assert (environment_row["git_dirty"], environment_row["diff_sha256"]) == (True, row["sha"])


def test_the_command_line_and_working_directory_are_recorded_with_a_secret_option_redacted(two_runs):
    (row,) = two_runs.store.query("run-environment", run=two_runs.b).to_dicts()
    expected = [sys.executable, str(two_runs.script), str(two_runs.store.path), "b", str(two_runs.root / "out"),
                "--api-token", host_facts.REDACTED]
    assert row["command"] == shlex.join(expected)
    assert row["working_directory"] == str(two_runs.folder)


def test_allowlisted_variables_are_recorded_and_no_other(two_runs):
    def variables(run_id: str) -> list[str]:
        rows = ask(two_runs.store, """SELECT ?v WHERE { VALUES (?run) { (UNDEF) } ?r cnnprov:runId ?run .
                     ?a cnnprov:partOfRun ?r ; prov:used ?e . ?e a cnnprov:ExecutionEnvironment ;
                     cnnprov:environmentVariable ?v }""", run=run_id)
        return sorted(row["v"] for row in rows)

    assert "OMP_NUM_THREADS=3" in variables(two_runs.b)
    assert not any(v.startswith("OMP_NUM_THREADS=") for v in variables(two_runs.a))
    everything = two_runs.store.export("nquads").decode("utf-8")
    assert "OMP_NUM_THREADS=3" in everything  # the search below looks where the variables are
    for leaked in (SECRET, ARGUMENT_SECRET, "CNNPROV_TEST_SECRET"):
        assert leaked not in everything


def test_the_machine_is_recorded(two_runs):
    (row,) = two_runs.store.query("run-environment", run=two_runs.a).to_dicts()
    assert row["cores"] == os.cpu_count()
    assert row["memory_bytes"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert row["cpu"] and row["os"]
    import torch

    assert row["cuda"] == torch.version.cuda  # None for a CPU build of torch
    assert row["gpus"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


# -- with what: installed packages ------------------------------------------------------------------
def test_the_packages_entity_holds_the_list_and_its_hash(two_runs):
    listed_a, sha_a, count_a = packages_of(two_runs.store, two_runs.a)
    listed_b, sha_b, count_b = packages_of(two_runs.store, two_runs.b)
    for listed, sha, count in ((listed_a, sha_a, count_a), (listed_b, sha_b, count_b)):
        assert sha == hashlib.sha256("\n".join(listed).encode("utf-8")).hexdigest() and count == len(listed)
    assert PROBE not in listed_a and sorted([*listed_a, PROBE]) == listed_b  # its name normalised as pip does
    assert sha_a != sha_b
    rows = {row["run_id"]: row["packages_sha256"] for row in two_runs.store.query("run-environment").to_dicts()}
    assert (rows[two_runs.a], rows[two_runs.b]) == (sha_a, sha_b)


def test_package_differences_between_two_runs_on_both_engines(two_runs):
    store = two_runs.store
    rows = store.query("package-differences", run_a=two_runs.a, run_b=two_runs.b).to_dicts()
    assert rows == [
        {"package": "cnnprov-probe-pkg", "version_a": None, "version_b": "1.2.3", "difference": "missing in a"}
    ]
    (swapped,) = store.query("package-differences", run_a=two_runs.b, run_b=two_runs.a).to_dicts()
    assert (swapped["version_a"], swapped["version_b"], swapped["difference"]) == ("1.2.3", None, "missing in b")
    assert store.query("package-differences", run_a=two_runs.a, run_b=two_runs.a).to_dicts() == []
    for a, b in ((two_runs.a, two_runs.b), (two_runs.b, two_runs.a)):
        oxigraph, other = answers_on_both_engines(store, "package-differences", run_a=a, run_b=b)
        assert oxigraph and as_multiset(oxigraph) == as_multiset(other)
    oxigraph, other = answers_on_both_engines(store, "run-environment")
    assert len(oxigraph) == 2 and as_multiset(oxigraph) == as_multiset(other)


# -- cnnprov reproduce ------------------------------------------------------------------------------
def test_reproduce_as_json_compares_the_run_with_the_packages_installed_now(two_runs):
    done = cli("reproduce", two_runs.b[:8], "--format", "json", "--store", two_runs.store.path)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["run_id"] == two_runs.b and plan["run_name"] == "b" and plan["status"] == "success"
    assert plan["command"].endswith(f"--api-token {host_facts.REDACTED}")
    assert plan["working_directory"] == str(two_runs.folder)
    sha = hashlib.sha256(two_runs.diff).hexdigest()
    assert plan["source"] == {
        "commit": two_runs.head, "repository": str(two_runs.folder.resolve()), "dirty": True, "untracked_files": 1,
        "diff": {"sha256": sha, "bytes": len(two_runs.diff), "kept": True,
                 "get": f"cnnprov reproduce {two_runs.b} --diff > run.patch"},
    }
    # this process lacks the probe, and has everything else the run had
    assert plan["packages"]["differences"] == [
        {"package": "cnnprov-probe-pkg", "recorded": "1.2.3", "installed": None, "difference": "not installed now"}
    ]
    assert plan["environment_variables"]["OMP_NUM_THREADS"] == "3"
    assert {"source": "run", "name": "dropout", "value": 0.25} in plan["settings"]  # DigitsCNN's default
    assert {row["role"] for row in plan["data"]} == {"train", "validation"}
    assert all(row["dataset_class"] == "torch.utils.data.dataset.TensorDataset" for row in plan["data"])
    fingerprints = {row["role"]: row["fingerprint"] for row in plan["data_fingerprints"]}
    assert set(fingerprints) == {"train", "validation"} and all(len(f) == 64 for f in fingerprints.values())
    assert fingerprints["train"] != fingerprints["validation"]  # tensors in memory: no files
    assert {row["file"] for row in plan["data_fingerprints"]} == {None}
    assert "pip install cnnprov-probe-pkg==1.2.3" in plan["steps"]
    assert plan["steps"][-1].startswith("OMP_NUM_THREADS=3 ")
    again = json.loads(cli("reproduce", two_runs.a, "--format", "json", "--store", two_runs.store.path).stdout)
    assert again["packages"]["differences"] == []  # the first run had what this process has
    assert {row["role"]: row["fingerprint"] for row in again["data_fingerprints"]} == fingerprints  # the same data


def test_reproduce_as_text_and_the_diff_it_points_to(two_runs):
    done = cli("reproduce", two_runs.b, "--store", two_runs.store.path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"git commit:         {two_runs.head} in {two_runs.folder.resolve()} (tree differed from it)" in text
    assert f"sha256 {hashlib.sha256(two_runs.diff).hexdigest()}" in text
    (line,) = [line for line in text.splitlines() if "cnnprov-probe-pkg" in line and "pip install" not in line]
    assert line.split() == ["cnnprov-probe-pkg", "1.2.3", "-", "not", "installed", "now"]
    assert "OMP_NUM_THREADS=3" in text and "data fingerprints (" in text and "to set it up again:" in text
    patch = cli("reproduce", two_runs.b, "--diff", "--store", two_runs.store.path, text=False)
    assert patch.returncode == 0 and patch.stdout == two_runs.diff
    # the patch applies to the commit it was taken from
    copy = two_runs.root / "copy"
    subprocess.run(["git", "clone", "-q", str(two_runs.folder), str(copy)], check=True)
    (copy / "run.patch").write_bytes(patch.stdout)
    git(copy, "apply", "run.patch")
    assert (copy / "train.py").read_text() == (two_runs.folder / "train.py").read_text()


def test_the_records_conform_to_the_shapes_and_a_broken_one_is_named(two_runs):
    report = validate_store(two_runs.store)
    assert report.conforms, report.text()
    graph = rdflib.Graph().parse(data=two_runs.store.export("turtle", run=two_runs.b), format="turtle")
    attempt = rdflib.URIRef(attempt_of(two_runs.store, two_runs.b)["attempt"])
    (diff,) = graph.subjects(RDF.type, CP.SourceDiff)
    (packages,) = graph.subjects(RDF.type, CP.InstalledPackages)
    graph.remove((diff, RDF.type, CP.SourceDiff))
    graph.set((packages, CP.packageCount, Literal(1)))
    rules = {(f.node, f.rule) for f in validate_graph(graph).violations}
    assert {(str(attempt), "cnnprovsh:DirtyTreeHasItsDiff"), (str(packages), "cnnprovsh:PackageCountMatches")} <= rules


# -- a clean tree, in this process --------------------------------------------------------------------
def test_a_clean_tree_has_no_diff_and_the_environment_is_read_off_the_training_thread(
    tmp_path, store_path, monkeypatch
):
    folder = project(tmp_path)
    monkeypatch.chdir(folder)
    threads = []
    original = environment.installed_packages

    def watched() -> tuple[str, ...]:
        threads.append(threading.current_thread().name)
        return original()

    monkeypatch.setattr(environment, "installed_packages", watched)
    logger = ProvLogger(store=store_path, run_name="clean", save_dir=tmp_path / "out")
    tiny_trainer(tmp_path / "out", logger, max_epochs=1).fit(DigitsCNN(), datamodule=tiny_data())
    assert threads == ["cnnprov-environment"]  # the logger's prefetch thread, not the one that trains
    store = ProvStore(store_path)
    (row,) = store.query("run-environment").to_dicts()
    assert (row["git_commit"], row["git_dirty"], row["diff_sha256"]) == (git(folder, "rev-parse", "HEAD").strip(),
                                                                        False, None)
    assert ask(store, "SELECT ?d WHERE { ?d a cnnprov:SourceDiff }") == []
    # the list is what importlib.metadata finds on this interpreter's path, the first of each name
    from importlib import metadata

    expected: dict[str, str] = {}
    for distribution in metadata.distributions():
        name = host_facts.normalised_name(distribution.metadata["Name"])
        expected.setdefault(name, distribution.version)
    listed, sha, _ = packages_of(store, logger.run_id)
    assert listed == sorted(f"{name}=={version}" for name, version in expected.items())
    assert row["packages_sha256"] == sha
    assert validate_store(store).conforms


# -- the readers on their own ---------------------------------------------------------------------------
def test_a_large_diff_is_hashed_whole_and_not_kept_as_text(tmp_path):
    folder = project(tmp_path)
    (folder / "train.py").write_text("x = 1\n" * 20_000)  # a patch of some 140 KB
    tree = source_tree.source_tree(folder)
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=folder, check=True, capture_output=True).stdout
    assert tree is not None and tree.dirty and len(diff) > source_tree.MAX_DIFF_BYTES
    assert (tree.diff_sha256, tree.diff_bytes, tree.diff_text) == (hashlib.sha256(diff).hexdigest(), len(diff), None)
    assert source_tree.source_tree(tmp_path) is None  # tmp_path is in no working tree


def test_secret_names_are_redacted_but_not_settings_that_only_contain_the_word():
    given = ["train.py", "--tokenizer", "bert", "--max-tokens=512", "--secret-sauce", "0.3",
             "+logger.api_key=S1", "password=S2", "--store", "https://u:S3@host/sparql", "--auth-token", "S4"]
    assert host_facts.redacted(given) == [
        "train.py", "--tokenizer", "bert", "--max-tokens=512", "--secret-sauce", "0.3",
        f"+logger.api_key={host_facts.REDACTED}", f"password={host_facts.REDACTED}",
        "--store", f"https://{host_facts.REDACTED}@host/sparql", "--auth-token", host_facts.REDACTED,
    ]


def test_secret_options_are_redacted_and_only_allowlisted_variables_read():
    assert host_facts.redacted(["train.py", "--password=x", "--api-key", "y", "--lr", "0.1", "--token"]) == [
        "train.py", "--password=REDACTED", "--api-key", "REDACTED", "--lr", "0.1", "--token"]
    environ = {"OMP_NUM_THREADS": "4", "AWS_SECRET_ACCESS_KEY": "s", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert host_facts.recorded_variables(environ) == {"OMP_NUM_THREADS": "4", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def test_nvidia_smi_lines_are_read_as_gpus():
    text = "0, NVIDIA H200, 143771, 570.124.06\n1, NVIDIA H200, [N/A], 570.124.06\nNo devices were found\n"
    assert host_facts.parse_nvidia_smi(text) == (
        host_facts.GPU(0, "NVIDIA H200", 143771 * 2**20, "570.124.06"),
        host_facts.GPU(1, "NVIDIA H200", None, "570.124.06"),
    )
