"""The records of a model's architecture: its layers, its functional operations, what is not known.

A pure builder, as :mod:`cnnprov.capture.records`: a
:class:`~cnnprov.capture.architecture.ModelDescription` in, triples out.
"""

from __future__ import annotations

from pyoxigraph import NamedNode

from cnnprov.capture.architecture import ModelDescription
from cnnprov.rdf.prov_forms import Triple
from cnnprov.rdf.vocab import CNNPROV, PROV, RDF, child, integer_literal, literal, string_literal


def architecture_node(run: NamedNode) -> NamedNode:
    return child(run, "architecture")


def architecture(run: NamedNode, model: ModelDescription) -> list[Triple]:
    """A model's architecture: its layers in order with their own settings, and its functional operations."""
    node = architecture_node(run)
    triples: list[Triple] = [(node, RDF.type, cls) for cls in (PROV.Entity, PROV.Collection, CNNPROV.Architecture)]
    triples += [
        (node, CNNPROV.pythonClass, string_literal(model.python_class)),
        (node, CNNPROV.parameterCount, integer_literal(model.parameter_count)),
        (node, CNNPROV.trainableParameterCount, integer_literal(model.trainable_parameter_count)),
        (node, CNNPROV.layerOrder, string_literal(model.order)),
        (run, PROV.used, node),
    ]
    triples += [(node, CNNPROV.architectureNote, string_literal(note)) for note in model.notes]
    for layer in model.layers:
        layer_node = child(run, "layer", str(layer.index))
        triples += [(layer_node, RDF.type, cls) for cls in (PROV.Entity, CNNPROV.Layer, getattr(CNNPROV, layer.kind))]
        triples += [
            (node, PROV.hadMember, layer_node),
            (layer_node, CNNPROV.layerIndex, integer_literal(layer.index)),
            (layer_node, CNNPROV.layerName, string_literal(layer.name)),
            (layer_node, CNNPROV.pythonClass, string_literal(layer.python_class)),
            (layer_node, CNNPROV.parameterCount, integer_literal(layer.parameter_count)),
            (layer_node, CNNPROV.trainableParameterCount, integer_literal(layer.trainable_parameter_count)),
        ]
        if layer.uninitialized_parameters:
            triples.append(
                (layer_node, CNNPROV.uninitializedParameterCount, integer_literal(layer.uninitialized_parameters))
            )
        triples += [
            (layer_node, getattr(CNNPROV, prop), literal(value))
            for prop, value in layer.settings.items()
            if value is not None  # an absence: datatype properties take literals only
        ]
    for operation in model.operations:
        op_node = child(run, "operation", str(operation.index))
        triples += [
            (op_node, RDF.type, PROV.Entity),
            (op_node, RDF.type, CNNPROV.FunctionalOperation),
            (node, CNNPROV.hasOperation, op_node),
            (op_node, CNNPROV.operationIndex, integer_literal(operation.index)),
            (op_node, CNNPROV.functionName, string_literal(operation.function)),
            (op_node, CNNPROV.moduleName, string_literal(operation.module)),
            (op_node, CNNPROV.operationArguments, string_literal(operation.arguments)),
        ]
    return triples
