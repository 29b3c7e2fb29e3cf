"""The one place that builds IRIs and RDF literals.

Every term cnnprov writes is named here: the PROV-O and ML Schema terms it
uses, and the terms of its own ontology (``ontologies/cnnprov.ttl``). Nothing
else in the package writes an IRI string or builds a literal by hand.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import string
from typing import Any
from urllib.parse import quote

from pyoxigraph import Literal, NamedNode

PROV_NS = "http://www.w3.org/ns/prov#"
MLS_NS = "http://www.w3.org/ns/mls#"
CNNPROV_NS = "https://w3id.org/cnnprov/ns#"
XSD_NS = "http://www.w3.org/2001/XMLSchema#"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS_NS = "http://www.w3.org/2000/01/rdf-schema#"

#: Where run IRIs are minted unless the user chooses another base.
DEFAULT_BASE = "https://w3id.org/cnnprov/id/"

PREFIXES = {
    "prov": PROV_NS,
    "mls": MLS_NS,
    "cnnprov": CNNPROV_NS,
    "xsd": XSD_NS,
    "rdf": RDF_NS,
    "rdfs": RDFS_NS,
}


class _Namespace:
    """Attribute access to the terms of one namespace, as pyoxigraph nodes."""

    def __init__(self, iri: str, terms: str) -> None:
        self.iri = iri
        self.terms = frozenset(terms.split())
        for name in self.terms:
            setattr(self, name, NamedNode(iri + name))

    def __getattr__(self, name: str) -> NamedNode:
        # Only reached for names not declared above: a typo is an error, not a new term.
        raise AttributeError(f"{name!r} is not a term cnnprov uses from {self.iri}")


RDF = _Namespace(RDF_NS, "type nil")
RDFS = _Namespace(RDFS_NS, "label comment")

PROV = _Namespace(
    PROV_NS,
    """
    Activity Entity Agent Person SoftwareAgent Plan Bundle Collection
    Association Usage Generation Role
    startedAtTime endedAtTime generatedAtTime atTime
    used wasGeneratedBy wasAssociatedWith wasInformedBy wasDerivedFrom
    wasAttributedTo hadMember generated specializationOf
    qualifiedAssociation qualifiedUsage qualifiedGeneration agent entity activity hadPlan hadRole
    """,
)

MLS = _Namespace(
    MLS_NS,
    """
    Run Model ModelEvaluation EvaluationMeasure HyperParameter HyperParameterSetting
    Dataset Implementation
    specifiedBy hasValue hasInput hasOutput executes hasHyperParameter
    """,
)

CNNPROV = _Namespace(
    CNNPROV_NS,
    """
    TrainingRun Attempt Epoch LearningRateAdaptation RunBundle
    LightningModuleClass Architecture Layer
    ConvolutionLayer PoolingLayer DropoutLayer ActivationLayer LinearLayer
    NormalizationLayer FlattenLayer EmbeddingLayer RecurrentLayer OtherLayer
    Optimizer ParameterGroup LearningRateScheduler TrainerConfiguration Checkpoint
    runId status errorType errorMessage hostname processId randomSeed gitCommit
    softwareVersion describesRun partOfRun
    attemptIndex epochIndex durationSeconds atEpoch atStep
    pythonClass settingOf parameterGroupIndex adjusts schedulerInterval schedulerFrequency
    layerIndex layerName inChannels outChannels kernelSize stride padding dilation groups
    dropoutRate activationFunction inFeatures outFeatures hasBias numFeatures epsilon
    normMomentum affine outputSize parameterCount trainableParameterCount
    AttentionLayer ContainerParameterLayer FunctionalOperation
    paddingMode ceilMode startDim endDim numEmbeddings embeddingDim paddingIndex maxNorm
    inputSize hiddenSize numLayers projectionSize bidirectional batchFirst embedDim numHeads keyDim valueDim
    negativeSlope alpha approximation dimension numParameters parameterShapes uninitializedParameterCount
    layerOrder architectureNote hasOperation operationIndex functionName operationArguments moduleName
    dataRole sampleCount batchSize batchCount
    trainData validationData testData predictData resumedCheckpoint
    filePath fileSizeBytes sha256 monitoredMetric monitoredScore
    HyperparameterStudy partOfStudy trialNumber trialState objectiveValue optimizationDirection bestRun
    hyperparameterList stage epochCount completedEpochCount epochSecondsTotal slowestEpochSeconds
    MetricSummary summaryOf ofMeasure valueCount minValue maxValue lastValue minEpoch maxEpoch lastEpoch
    Series LearningRateSeries seriesOf seriesCount seriesFirstStep seriesLastStep
    seriesFirst seriesLast seriesMin seriesMax seriesPoints pointsJSON MetricSeries seriesMean
    LearningRateFinder trialCount suggestedLearningRate
    SourceData DerivedData DataFile TransformPipeline TransformStep DataSetup DataPreparation
    itemCount derivation indexCount indicesSha256 fingerprint fingerprintMethod tensorShape fileCount
    splitSeed splitOffset transformsOf pipelineAttribute stepCount stepIndex transformSettings
    cpuSeconds peakRssBytes timedSteps stepSecondsMean stepSecondsP95 gpuPeakAllocatedBytes gpuUtilizationPercent
    ExecutionEnvironment InstalledPackages SourceDiff GPU
    commandLine workingDirectory gitDirty gitRepositoryPath untrackedFileCount diffText diffSizeBytes
    installedPackage packageCount operatingSystem cpuModel cpuCount availableCpuCount memoryBytes
    cudaVersion cudnnVersion gpuCount hasGpu deviceIndex gpuDriverVersion environmentVariable
    """,
)

_XSD_STRING = NamedNode(XSD_NS + "string")
_XSD_DATETIME = NamedNode(XSD_NS + "dateTime")
_XSD_DOUBLE = NamedNode(XSD_NS + "double")
_XSD_INTEGER = NamedNode(XSD_NS + "integer")


def iri_segment(text: str) -> str:
    """Encode any string as one IRI path segment that is also an XML NCName.

    A PROV-XML identifier is an ``xs:QName``, whose local part (the last segment
    of an IRI, once the namespace is cut at its last ``/``) must be an NCName: a
    letter or ``_`` first, then letters, digits, ``.``, ``-`` and ``_``. Other
    characters, a first character that cannot start one, and the ``_`` of a
    ``_x`` (which would read as an escape) become ``_xHHHH_`` (the code point in
    hex, as XML's own name escaping writes it); the empty string becomes ``_x_``.
    So ordinary names keep their segment (``val_acc``, ``optimizer.lr``: the same
    as earlier versions wrote) and distinct strings always give distinct
    segments (:func:`segment_text` decodes one).
    """
    return _encoded(text, first=True) if text else _EMPTY_SEGMENT


def _encoded(text: str, first: bool) -> str:
    # ``first``: the text starts the segment, so it must start as an NCName does
    out = []
    for i, char in enumerate(text):
        keep = _NAME_START if first and i == 0 else _NAME_CHAR
        if char in keep and not (char == "_" and text[i + 1 : i + 2] == "x"):
            out.append(char)
        else:
            out.append(f"_x{ord(char):04X}_")
    return "".join(out)


def segment_text(segment: str) -> str:
    """The string :func:`iri_segment` encoded as ``segment``."""
    if segment == _EMPTY_SEGMENT:
        return ""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), segment)


_NAME_START = frozenset(string.ascii_letters + "_")
_NAME_CHAR = _NAME_START | frozenset(string.digits + ".-")
_EMPTY_SEGMENT = "_x_"  # no other string encodes to it: a "_x" the text holds is escaped
_ESCAPE = re.compile(r"_x([0-9A-F]{4,6})_")


def _percent_segment(text: str) -> str:
    # how earlier versions encoded a segment; kept to extend a run they recorded
    segment = quote(text, safe="-._~", errors="surrogatepass")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def iri(base: str, *segments: str) -> NamedNode:
    """An IRI under ``base`` made of already-encoded path segments."""
    return NamedNode(base + "/".join(segments))


def kind_segment(kind: str, name: str | int) -> str:
    """The segment ``{kind}-{name}`` (the name encoded as :func:`iri_segment` does, digits first allowed).

    ``kind`` is one of cnnprov's words (``run``, ``epoch``, ``setting``: lowercase, ``-`` between
    words, none of them another one followed by ``-``), so the segment is an NCName and distinct
    ``(kind, name)`` pairs give distinct segments.
    """
    return f"{kind}-{_encoded(str(name), first=False)}"


def child(parent: NamedNode, kind: str, name: str | int | None = None) -> NamedNode:
    """The ``kind`` part of ``parent`` named ``name``: ``{parent}/{kind}-{name}`` (see :func:`kind_segment`).

    Without a name it is ``{parent}/{kind}``. Under a
    node that earlier versions minted (``…/run/3f2a``, ``…/optimizer/0``) the part is
    ``{parent}/{kind}/{name}`` as they wrote it, so that a run they recorded is continued with
    the IRIs it already has (an epoch re-run after a crash stays one activity).
    """
    if name is None:
        return NamedNode(f"{parent.value}/{kind}")
    text = str(name)
    if is_legacy_node(parent):
        return NamedNode(f"{parent.value}/{kind}/{_percent_segment(text)}")
    return NamedNode(f"{parent.value}/{kind_segment(kind, text)}")


#: The folders earlier versions minted a node's parts in: ``…/run/{id}``, ``…/optimizer/{i}`` …
LEGACY_FOLDERS = frozenset(
    "run study optimizer group trial learning-rate-finder epoch attempt checkpoint value scheduler data "
    "summary learning-rates layer operation setting association trials suggestion usage".split()
)


def is_legacy_node(node: NamedNode) -> bool:
    """Whether ``node`` has the shape earlier versions minted: ``…/{folder}/{name}``, not ``…/{kind}-{name}``.

    (A run an earlier version recorded under an id that starts with ``run-`` reads as a new one.)
    """
    text = node.value
    while text.rsplit("/", 1)[-1] in _NAMELESS_PARTS:  # ``…/trainer`` has its parent's shape
        text = text.rsplit("/", 1)[0]
    parts = text.rsplit("/", 2)
    return len(parts) == 3 and parts[1] in LEGACY_FOLDERS and not parts[2].startswith(parts[1] + "-")


_NAMELESS_PARTS = frozenset({"trainer", "architecture", "generation"})


def _clean_text(text: str) -> str:
    # Lone surrogates cannot be stored as UTF-8; keep them visible instead of failing.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def datetime_literal(timestamp: float) -> Literal:
    """An ``xsd:dateTime`` with UTC timezone from a POSIX timestamp."""
    moment = _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc)
    return Literal(moment.isoformat(), datatype=_XSD_DATETIME)


def double_literal(value: float) -> Literal:
    """An ``xsd:double``; NaN and infinities use XSD's ``NaN``/``INF``/``-INF``."""
    return Literal(float(value))


def integer_literal(value: int) -> Literal:
    return Literal(int(value))


def duration_literal(seconds: float) -> Literal:
    """An ``xsd:duration`` of ``seconds`` (``PT90.5S``): what adding to an ``xsd:dateTime`` in SPARQL
    takes on both Oxigraph and rdflib."""
    if not math.isfinite(seconds):
        raise ValueError(f"a duration needs a finite number of seconds, not {seconds}")
    text = f"{abs(seconds):.6f}".rstrip("0").rstrip(".")
    return Literal(f"{'-' if seconds < 0 else ''}PT{text}S", datatype=NamedNode(XSD_NS + "duration"))


def string_literal(value: str) -> Literal:
    return Literal(_clean_text(value))


def literal(value: Any) -> Literal | NamedNode:
    """Convert a plain Python value to a typed RDF term.

    ``bool`` → ``xsd:boolean``, ``int`` → ``xsd:integer``, ``float`` →
    ``xsd:double``, ``datetime`` → ``xsd:dateTime``; anything else becomes its
    string (never an error). ``None`` gives ``rdf:nil``, which marks an absence for
    the record builders: they write no triple for it (a hyperparameter setting of
    ``None`` has no ``mls:hasValue``), so no datatype property gets an IRI as value.
    """
    if value is None:
        return RDF.nil
    if isinstance(value, bool):
        return Literal(value)
    if isinstance(value, int):
        return Literal(value)
    if isinstance(value, float):
        return double_literal(value)
    if isinstance(value, _dt.datetime):
        return Literal(_xsd_datetime_text(value), datatype=_XSD_DATETIME)
    if isinstance(value, str):
        return string_literal(value)
    return string_literal(str(value))


def _xsd_datetime_text(value: _dt.datetime) -> str:
    """ISO 8601 with a timezone XSD accepts (naive times are local; offsets in whole minutes)."""
    if value.tzinfo is None:
        value = value.astimezone()
    offset = value.utcoffset()
    if offset is not None and offset.total_seconds() % 60:
        value = value.astimezone(_dt.timezone.utc)  # XSD offsets have no seconds: keep the instant
    return value.isoformat()


def python_value(term: Any) -> Any:
    """Convert an RDF term read from the store back to a Python value.

    The inverse of :func:`literal` for the datatypes it writes; IRIs become
    their string, other literals their lexical form; ``rdf:nil`` (what earlier
    versions wrote as the value ``None``) reads as ``None``.
    """
    if term is None:
        return None
    if isinstance(term, NamedNode):
        return None if term == RDF.nil else term.value
    if not isinstance(term, Literal):
        return str(term)
    datatype = term.datatype.value
    text = term.value
    if datatype == _XSD_INTEGER.value or datatype in _INTEGER_TYPES:
        return int(text)
    if datatype in _FLOAT_TYPES:
        return _parse_double(text)
    if datatype == XSD_NS + "decimal":
        return float(text)
    if datatype == XSD_NS + "boolean":
        return text in ("true", "1")
    if datatype == _XSD_DATETIME.value:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return text


_INTEGER_TYPES = {XSD_NS + t for t in ("long", "int", "short", "nonNegativeInteger", "positiveInteger")}
_FLOAT_TYPES = {XSD_NS + "double", XSD_NS + "float"}


def _parse_double(text: str) -> float:
    special = {"NaN": math.nan, "INF": math.inf, "+INF": math.inf, "-INF": -math.inf}
    return special[text] if text in special else float(text)
