"""Properties of the two conversions every record goes through: names → IRIs, Python values → literals.

A name (a hyperparameter, a metric, a run id) becomes an IRI segment; a value
becomes an RDF literal, is stored, and is read back. Both must hold for any
input, not only the ones a test author thought of.
"""

from __future__ import annotations

import datetime
import math
import re

import pyoxigraph as ox
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnprov.rdf.vocab import RDF, child, iri_segment, kind_segment, literal, python_value, segment_text

settings.register_profile("cnnprov", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cnnprov")

PARENT = ox.NamedNode("https://w3id.org/cnnprov/id/run-3f2a")
LEGACY_PARENT = ox.NamedNode("https://w3id.org/cnnprov/id/run/3f2a")  # a run as earlier versions minted it
P = ox.NamedNode("https://example.org/p")
G = ox.NamedNode("https://example.org/g")

#: Any Python string, lone surrogates included (names come from user code, which can hold them).
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=40)
#: Text a literal keeps as it is (UTF-8 cannot hold lone surrogates).
STORABLE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def nquads_round_trip(quad: ox.Quad) -> ox.Quad:
    (parsed,) = ox.parse(ox.serialize([quad], format=ox.RdfFormat.N_QUADS), format=ox.RdfFormat.N_QUADS)
    return parsed


def stored_and_read_back(term) -> object:
    """The term as a store gives it back (Oxigraph normalises some lexical forms on the way)."""
    store = ox.Store()
    store.add(ox.Quad(PARENT, P, term, G))
    (quad,) = store.quads_for_pattern(PARENT, P, None, G)
    return quad.object


def sparql_sees_a_datetime(term) -> bool:
    """Whether SPARQL can compare the stored term as an ``xsd:dateTime`` (an ill-formed one it cannot)."""
    store = ox.Store()
    store.add(ox.Quad(PARENT, P, term, G))
    earliest = '"0001-01-01T00:00:00Z"^^<http://www.w3.org/2001/XMLSchema#dateTime>'
    query = f"ASK {{ GRAPH ?g {{ ?s ?p ?o }} FILTER(?o >= {earliest}) }}"
    return bool(store.query(query))


# -- IRIs ----------------------------------------------------------------------

#: XML's NCName (ASCII), which the local part of a PROV-XML identifier (an xs:QName) must be.
NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")


@given(ANY_TEXT)
def test_any_name_becomes_a_valid_iri_that_survives_n_quads(name):
    node = child(PARENT, "setting", name)  # NamedNode validates: an invalid IRI raises here
    assert node.value.startswith(PARENT.value + "/setting-")
    quad = ox.Quad(node, P, ox.Literal("x"), G)
    assert nquads_round_trip(quad) == quad
    assert stored_and_read_back(node) == node


@given(ANY_TEXT)
def test_an_iri_segment_decodes_to_its_name_and_is_an_ncname(name):
    segment = iri_segment(name)
    assert segment_text(segment) == name  # reversible, hence injective
    assert NCNAME.fullmatch(segment)  # so a PROV-XML QName can end in it; no reserved character either
    assert NCNAME.fullmatch(kind_segment("setting", name))
    assert child(PARENT, "setting", name).value.rsplit("/", 1)[1] == kind_segment("setting", name)


@given(ANY_TEXT, ANY_TEXT)
def test_distinct_names_never_share_an_iri(a, b):
    if a != b:
        assert iri_segment(a) != iri_segment(b)
        assert child(PARENT, "setting", a) != child(PARENT, "setting", b)
        assert child(LEGACY_PARENT, "setting", a) != child(LEGACY_PARENT, "setting", b)


KINDS = st.sampled_from(["epoch", "value", "setting", "group", "learning-rates", "learning-rate-finder", "trials"])


PARTS = st.lists(st.tuples(KINDS, ANY_TEXT), min_size=1, max_size=3)


@given(PARTS, PARTS)
def test_paths_of_parts_are_injective_too(a, b):
    def path(parts):
        node = PARENT
        for kind, name in parts:
            node = child(node, kind, name)
        return node

    if a != b:
        assert path(a) != path(b)


@pytest.mark.parametrize(
    "name, segment",
    [
        ("lr", "lr"),
        ("optimizer.lr", "optimizer.lr"),
        ("val_acc", "val_acc"),
        ("_private", "_private"),
        ("val loss", "val_x0020_loss"),
        ("train/acc", "train_x002F_acc"),
        ("50%", "_x0035_0_x0025_"),
        ("学习率", "_x5B66__x4E60__x7387_"),
        ("a#b", "a_x0023_b"),
        ("max_x", "max_x005F_x"),
        ("", "_x_"),
        (".", "_x002E_"),
        ("..", "_x002E_."),
        ("\ud800", "_xD800_"),
        ("\U0001F600", "_x1F600_"),
    ],
)
def test_iri_segments_are_stable(name, segment):
    """Stores keep matching: the encoding of a name never changes (ordinary names kept earlier versions' segments)."""
    assert iri_segment(name) == segment
    assert iri_segment(name) == iri_segment(str(name))


def test_parts_of_a_run_end_in_ncnames_and_parts_of_an_earlier_versions_run_keep_its_shape():
    assert child(PARENT, "epoch", 3).value == PARENT.value + "/epoch-3"
    assert child(PARENT, "value", "").value == PARENT.value + "/value-"  # a counter follows
    assert child(child(PARENT, "optimizer", 0), "group", 0).value == PARENT.value + "/optimizer-0/group-0"
    assert child(child(PARENT, "trainer"), "setting", "a b").value == PARENT.value + "/trainer/setting-a_x0020_b"
    legacy = LEGACY_PARENT.value
    assert child(LEGACY_PARENT, "epoch", 3).value == legacy + "/epoch/3"
    assert child(LEGACY_PARENT, "value", "").value == legacy + "/value/"
    group = child(child(LEGACY_PARENT, "optimizer", 0), "group", 0)
    assert child(group, "setting", "a b").value == legacy + "/optimizer/0/group/0/setting/a%20b"
    assert child(child(LEGACY_PARENT, "trainer"), "setting", "a").value == legacy + "/trainer/setting/a"
    # a base that ends in a folder of the earlier shape still gives new runs the new shape
    assert child(ox.NamedNode("https://example.org/run/run-3f2a"), "epoch", 3).value.endswith("/run-3f2a/epoch-3")


# -- literals ----------------------------------------------------------------------

WHOLE_MINUTE_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)
AWARE_DATETIMES = st.datetimes(
    min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30), timezones=WHOLE_MINUTE_OFFSETS
)


def _same_value(back, value) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return isinstance(back, float) and math.isnan(back)
    if isinstance(value, float):
        return type(back) is float and back == value and math.copysign(1, back) == math.copysign(1, value)
    return type(back) is type(value) and back == value


@given(
    st.one_of(
        st.booleans(),
        st.integers(),  # unbounded: xsd:integer has no range
        st.floats(allow_nan=True, allow_infinity=True),
        STORABLE_TEXT,
        AWARE_DATETIMES,
    )
)
def test_a_value_round_trips_with_its_type_through_the_store(value):
    term = literal(value)
    assert _same_value(python_value(term), value)
    back = stored_and_read_back(term)
    assert _same_value(python_value(back), value)
    assert _same_value(python_value(nquads_round_trip(ox.Quad(PARENT, P, term, G)).object), value)


@given(AWARE_DATETIMES)
def test_a_datetime_keeps_its_offset_and_is_a_valid_xsd_datetime(moment):
    back = python_value(stored_and_read_back(literal(moment)))
    assert back.utcoffset() == moment.utcoffset()
    assert sparql_sees_a_datetime(literal(moment))


@given(
    st.datetimes(
        min_value=datetime.datetime(1900, 1, 1),
        max_value=datetime.datetime(2200, 1, 1),
        timezones=st.integers(min_value=-50_000, max_value=50_000).map(
            lambda s: datetime.timezone(datetime.timedelta(seconds=s))
        ),
    )
)
def test_a_datetime_whose_offset_has_seconds_keeps_its_instant(moment):
    term = stored_and_read_back(literal(moment))
    assert python_value(term) == moment
    assert sparql_sees_a_datetime(term)  # XSD offsets have whole minutes: the instant is kept in UTC


@given(st.datetimes(min_value=datetime.datetime(1971, 1, 2), max_value=datetime.datetime(2200, 1, 1)))
def test_a_naive_datetime_is_read_as_local_time(moment):
    back = python_value(stored_and_read_back(literal(moment)))
    assert back.tzinfo is not None
    assert back == moment.astimezone()


@given(ANY_TEXT)
def test_any_text_is_stored_and_lone_surrogates_stay_visible(text):
    back = python_value(stored_and_read_back(literal(text)))
    assert isinstance(back, str)
    assert back == text.encode("utf-8", "backslashreplace").decode("utf-8")


def test_none_is_rdf_nil_and_reads_back_as_none():
    assert literal(None) == RDF.nil
    assert python_value(stored_and_read_back(literal(None))) is None
    assert python_value(None) is None
