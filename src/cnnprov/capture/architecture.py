"""Describe a torch model layer by layer, as plain data (no RDF here).

A layer is a module that does its own computation with its own parameters: a leaf
module, or a module such as ``MultiheadAttention`` that uses its children's
parameters without calling them (it is one layer, holding them all). A container's
own parameters (an ``nn.Parameter`` attribute of a module with children, such as a
class token) are a layer of their own, so that every parameter is in exactly one layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Layer kinds, by the torch.nn class-name fragment that identifies them. Order matters:
# the first match wins ("ConvTranspose2d" is a convolution, "AdaptiveAvgPool2d" a pooling).
_KINDS = (
    ("MultiheadAttention", "AttentionLayer"),
    ("Conv", "ConvolutionLayer"),
    ("Pool", "PoolingLayer"),
    ("Dropout", "DropoutLayer"),
    ("Norm", "NormalizationLayer"),
    ("Linear", "LinearLayer"),
    ("Bilinear", "LinearLayer"),
    ("Flatten", "FlattenLayer"),
    ("Embedding", "EmbeddingLayer"),
    ("RNN", "RecurrentLayer"),
    ("LSTM", "RecurrentLayer"),
    ("GRU", "RecurrentLayer"),
)
_ACTIVATIONS = {
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
    "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Softplus", "Softsign", "Hardtanh", "Hardswish",
    "Hardsigmoid", "Tanhshrink", "Threshold", "GLU", "LogSigmoid", "Softmin",
}
#: Modules that are one layer although they have children: their forward uses the children's
#: parameters directly (``MultiheadAttention`` reads ``out_proj.weight``, never calls ``out_proj``).
_ATOMIC = {"MultiheadAttention"}
#: The kind of the record of a container's own parameters.
CONTAINER_KIND = "ContainerParameterLayer"

# torch attribute → ontology property, for the settings a layer carries itself.
_SETTINGS = {
    "in_channels": "inChannels",
    "out_channels": "outChannels",
    "kernel_size": "kernelSize",
    "stride": "stride",
    "padding": "padding",
    "padding_mode": "paddingMode",
    "dilation": "dilation",
    "groups": "groups",
    "num_groups": "groups",
    "ceil_mode": "ceilMode",
    "in_features": "inFeatures",
    "out_features": "outFeatures",
    "num_features": "numFeatures",
    "num_channels": "numFeatures",
    "normalized_shape": "numFeatures",
    "eps": "epsilon",
    "momentum": "normMomentum",
    "affine": "affine",
    "elementwise_affine": "affine",
    "output_size": "outputSize",
    "start_dim": "startDim",
    "end_dim": "endDim",
    # embeddings
    "num_embeddings": "numEmbeddings",
    "embedding_dim": "embeddingDim",
    "padding_idx": "paddingIndex",
    "max_norm": "maxNorm",
    # recurrent layers
    "input_size": "inputSize",
    "hidden_size": "hiddenSize",
    "num_layers": "numLayers",
    "proj_size": "projectionSize",
    "bidirectional": "bidirectional",
    "batch_first": "batchFirst",
    "nonlinearity": "activationFunction",
    # attention
    "embed_dim": "embedDim",
    "num_heads": "numHeads",
    "kdim": "keyDim",
    "vdim": "valueDim",
    # activations
    "negative_slope": "negativeSlope",
    "alpha": "alpha",
    "approximate": "approximation",
    "dim": "dimension",
    "num_parameters": "numParameters",
}


@dataclass
class LayerDescription:
    """One layer of a model: its position, its kind, its own settings and parameter counts.

    ``uninitialized_parameters`` counts the parameter tensors of a lazy module that were not
    materialized yet (their sizes are unknown, so they are in no count).
    """

    index: int
    name: str
    python_class: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    parameter_count: int = 0
    trainable_parameter_count: int = 0
    uninitialized_parameters: int = 0


@dataclass
class OperationDescription:
    """A functional operation (``F.relu``, ``torch.flatten`` …) seen in one forward pass, in order.

    ``module`` is the layer name of the module whose ``forward`` called it; ``arguments`` its
    non-tensor arguments, as in a call (``kernel_size=2, stride=2``).
    """

    index: int
    function: str
    module: str
    arguments: str


@dataclass
class ModelDescription:
    """A model's class, layers, parameter counts, and how the layers' order is known.

    ``order`` is ``"execution"`` (the order the layers first ran in during a traced step;
    layers that did not run follow, in registration order) or ``"registration"``.
    ``notes`` say what the record could not know, in words.
    """

    python_class: str
    layers: list[LayerDescription]
    parameter_count: int
    trainable_parameter_count: int
    order: str = "registration"
    operations: list[OperationDescription] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def uninitialized_parameters(self) -> int:
        return sum(layer.uninitialized_parameters for layer in self.layers)


def layer_kind(class_name: str) -> str:
    """The ontology class local name for a torch.nn class name."""
    if class_name in _ACTIVATIONS:
        return "ActivationLayer"
    for fragment, kind in _KINDS:
        if fragment in class_name:
            return kind
    return "OtherLayer"


def layer_modules(model: Any) -> Iterator[tuple[str, Any, bool]]:
    """``(name, module, whole)`` for each layer of ``model``, in registration order.

    ``whole``: the layer holds the module's parameters with its children's (an atomic module
    or a leaf); otherwise it is a container, and the layer holds only its own parameters.
    A module registered twice is one layer, under its first name.
    """
    seen: set[int] = set()

    def walk(name: str, module: Any) -> Iterator[tuple[str, Any, bool]]:
        if id(module) in seen:
            return
        seen.add(id(module))
        children = list(module.named_children())
        if not children or type(module).__name__ in _ATOMIC:
            yield name, module, True
            return
        if any(True for _ in module.parameters(recurse=False)):
            yield name, module, False
        for child_name, child in children:
            if child is not None:
                yield from walk(f"{name}.{child_name}" if name else child_name, child)

    yield from walk("", model)


def describe_model(model: Any, first_calls: Mapping[int, int] | None = None) -> ModelDescription:
    """Every layer of ``model`` (a ``torch.nn.Module``) with its own settings and parameter counts.

    ``first_calls`` maps ``id(module)`` to the position of its first call in a traced step:
    the layers are then in execution order (those that did not run last, in registration order).
    Every parameter is counted once, in the first layer that holds it.
    """
    found = list(layer_modules(model))
    if first_calls is not None:
        never = len(first_calls)
        found.sort(key=lambda item: first_calls.get(id(item[1]), never))  # stable: the rest keep their order
    counted: set[int] = set()
    layers: list[LayerDescription] = []
    for name, module, whole in found:
        cls = type(module)
        own = _new_parameters(module.parameters(recurse=whole), counted)
        sizes = [p.numel() for p in own if not _is_lazy(p)]
        trainable = [p.numel() for p in own if not _is_lazy(p) and p.requires_grad]
        kind = layer_kind(cls.__name__) if whole else CONTAINER_KIND
        settings = _layer_settings(module, kind) if whole else _own_parameter_shapes(module)
        layers.append(
            LayerDescription(
                index=len(layers),
                name=name or cls.__name__,  # the model itself: a single layer, or a container's own parameters
                python_class=f"{cls.__module__}.{cls.__qualname__}",
                kind=kind,
                settings=settings,
                parameter_count=sum(sizes),
                trainable_parameter_count=sum(trainable),
                uninitialized_parameters=len(own) - len(sizes),
            )
        )
    notes = []
    if first_calls is not None:
        modules = [module for _, module, _ in found]
        idle = [layer.name for layer, module in zip(layers, modules, strict=True) if id(module) not in first_calls]
        if idle:
            notes.append(
                f"{len(idle)} layers did not run in the traced step ({', '.join(idle[:10])}"
                f"{', ...' if len(idle) > 10 else ''}): they follow the others, in registration order"
            )
    cls = type(model)
    return ModelDescription(
        python_class=f"{cls.__module__}.{cls.__qualname__}",
        layers=layers,
        parameter_count=sum(layer.parameter_count for layer in layers),
        trainable_parameter_count=sum(layer.trainable_parameter_count for layer in layers),
        order="execution" if first_calls is not None else "registration",
        notes=notes,
    )


def _new_parameters(parameters: Any, counted: set[int]) -> list[Any]:
    """The parameters not counted yet (a tied weight is counted in its first layer only)."""
    new = []
    for p in parameters:
        if id(p) not in counted:
            counted.add(id(p))
            new.append(p)
    return new


def _is_lazy(parameter: Any) -> bool:
    """Whether a parameter is a lazy module's placeholder, its size not known yet."""
    from torch.nn.parameter import is_lazy

    return bool(is_lazy(parameter))


def has_lazy_parameters(model: Any) -> bool:
    """Whether any parameter of ``model`` is not materialized yet (an ``nn.Lazy*`` module before its first call)."""
    return any(_is_lazy(p) for p in model.parameters())


def _own_parameter_shapes(module: Any) -> dict[str, Any]:
    """A container's own parameters, by name and shape: ``cls_token: 1x1x16, scale: 1``."""
    shapes = []
    for name, p in module.named_parameters(recurse=False):
        shape = "uninitialized" if _is_lazy(p) else "x".join(str(n) for n in p.shape) or "scalar"
        shapes.append(f"{name}: {shape}")
    return {"parameterShapes": ", ".join(shapes)}


def _layer_settings(module: Any, kind: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for attribute, prop in _SETTINGS.items():
        if hasattr(module, attribute) and prop not in settings:
            value = _dimension_value(getattr(module, attribute))
            if value is not None:
                settings[prop] = value
    if kind in ("DropoutLayer", "RecurrentLayer", "AttentionLayer"):
        rate = getattr(module, "p", getattr(module, "dropout", None))
        if isinstance(rate, (int, float)) and not isinstance(rate, bool):
            settings["dropoutRate"] = float(rate)
    if kind == "ActivationLayer":
        settings["activationFunction"] = type(module).__name__
    if kind in ("ConvolutionLayer", "LinearLayer"):
        settings["hasBias"] = getattr(module, "bias", None) is not None
    elif kind == "AttentionLayer":
        settings["hasBias"] = getattr(module, "in_proj_bias", None) is not None
    elif kind == "RecurrentLayer" and isinstance(getattr(module, "bias", None), bool):
        settings["hasBias"] = module.bias
    return settings


def _dimension_value(value: Any) -> Any:
    """Sizes as an integer when equal in every dimension, else ``"3x5"``."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):  # padding="same", approximate="tanh"
        return value
    if isinstance(value, (tuple, list)) and value:
        if any(v is None for v in value):
            return "x".join(str(v) for v in value)
        if all(v == value[0] for v in value) and isinstance(value[0], int):
            return int(value[0])
        return "x".join(str(v) for v in value)
    return None


def count_parameters(model: Any) -> tuple[int, int]:
    """(all, trainable) parameter counts of a model; a lazy module's placeholders count 0 until materialized."""
    total = trainable = 0
    for p in model.parameters():
        if _is_lazy(p):
            continue
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable
