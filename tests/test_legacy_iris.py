"""A run recorded with the IRIs of earlier versions (``…/run/{id}/epoch/3``) is read and resumed as before.

Such a run is made here by minting the run's IRI the earlier way: every part of it then follows,
since ``vocab.child`` mints in the shape of the IRI it extends.
"""

from __future__ import annotations

from cnnprov import ProvStore, RunRecorder
from cnnprov.capture import recorder as recorder_module
from cnnprov.rdf.vocab import iri, is_legacy_node


def test_a_run_of_the_earlier_iri_shape_is_resumed_in_that_shape(tmp_path, monkeypatch):
    path = tmp_path / "provenance"
    with monkeypatch.context() as patch:  # how earlier versions named a run and its graph
        patch.setattr(recorder_module, "run_node", lambda base, run_id: iri(base, "run", run_id))
        patch.setattr(recorder_module, "run_bundle_node", lambda base, run_id: iri(base, "bundle", run_id))
        first = RunRecorder(path, name="earlier", run_id="3f2a0000-0000-4000-8000-000000000000")
        first.start()
        first.epoch_started(0)
        first.log_metrics({"loss": 0.9, "epoch": 0}, step=0)
        first.epoch_ended(0)
        first.epoch_started(1)
        first.log_metrics({"loss": 0.5, "epoch": 1}, step=1)
        first.close()  # as a crash leaves it: epoch 1 never ended
    assert is_legacy_node(first.run) and first.run.value.endswith("/run/3f2a0000-0000-4000-8000-000000000000")

    second = RunRecorder(path, run_id=first.run_id)
    second.start()  # found by its id, not by an IRI of the new shape
    assert second.run == first.run
    second.epoch_started(1)  # the interrupted epoch again
    second.log_metrics({"loss": 0.4, "epoch": 1}, step=2)
    second.epoch_ended(1)
    second.finish()
    second.close()

    store = ProvStore(path)
    subjects = {
        row["s"]
        for row in store.sparql("SELECT DISTINCT ?s WHERE { GRAPH ?g { ?s ?p ?o } FILTER(isIRI(?s)) }").to_dicts()
    }
    parts = sorted(s for s in subjects if s.startswith(first.run.value + "/"))
    assert parts and not [s for s in parts if "/epoch-" in s or "/value-" in s or "/attempt-" in s], parts
    assert {first.run.value + "/epoch/0", first.run.value + "/epoch/1", first.run.value + "/attempt/2"} <= set(parts)
    assert first.run.value + "/value/3" in parts  # numbered after the values stored
    epochs = store.sparql(
        """SELECT ?e WHERE { GRAPH ?g { ?e a <https://w3id.org/cnnprov/ns#Epoch> ;
             <https://w3id.org/cnnprov/ns#epochIndex> 1 } }"""
    )
    assert len(epochs.to_dicts()) == 1  # the re-run epoch is the same activity
    (run,) = store.runs().to_dicts()
    assert run["run_id"] == first.run_id and run["status"] == "success"
