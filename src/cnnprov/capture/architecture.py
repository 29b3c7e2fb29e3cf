"""Describe a torch model layer by layer, as plain data (no RDF here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Layer kinds, by the torch.nn class-name fragment that identifies them. Order matters:
# the first match wins ("ConvTranspose2d" is a convolution, "AdaptiveAvgPool2d" a pooling).
_KINDS = (
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

# torch attribute → ontology property, for the settings a layer carries itself.
_SETTINGS = {
    "in_channels": "inChannels",
    "out_channels": "outChannels",
    "kernel_size": "kernelSize",
    "stride": "stride",
    "padding": "padding",
    "dilation": "dilation",
    "groups": "groups",
    "in_features": "inFeatures",
    "out_features": "outFeatures",
    "num_features": "numFeatures",
    "normalized_shape": "numFeatures",
    "eps": "epsilon",
    "momentum": "normMomentum",
    "affine": "affine",
    "output_size": "outputSize",
}


@dataclass
class LayerDescription:
    """One leaf module of a model, in the order the model registers it."""

    index: int
    name: str
    python_class: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    parameter_count: int = 0
    trainable_parameter_count: int = 0


def layer_kind(class_name: str) -> str:
    """The ontology class local name for a torch.nn class name."""
    if class_name in _ACTIVATIONS:
        return "ActivationLayer"
    for fragment, kind in _KINDS:
        if fragment in class_name:
            return kind
    return "OtherLayer"


def describe_model(model: Any) -> list[LayerDescription]:
    """Every leaf module of ``model`` (a ``torch.nn.Module``) with its own hyperparameters."""
    layers: list[LayerDescription] = []
    for name, module in model.named_modules():
        if any(True for _ in module.children()):
            continue
        if module is model:  # a model that is itself a single layer
            name = name or type(model).__name__
        cls = type(module)
        layers.append(
            LayerDescription(
                index=len(layers),
                name=name,
                python_class=f"{cls.__module__}.{cls.__qualname__}",
                kind=layer_kind(cls.__name__),
                settings=_layer_settings(module),
                parameter_count=sum(p.numel() for p in module.parameters(recurse=False)),
                trainable_parameter_count=sum(
                    p.numel() for p in module.parameters(recurse=False) if p.requires_grad
                ),
            )
        )
    return layers


def _layer_settings(module: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for attribute, prop in _SETTINGS.items():
        if hasattr(module, attribute):
            value = _dimension_value(getattr(module, attribute))
            if value is not None:
                settings[prop] = value
    kind = layer_kind(type(module).__name__)
    if kind == "DropoutLayer" and hasattr(module, "p"):
        settings["dropoutRate"] = float(module.p)
    if kind == "ActivationLayer":
        settings["activationFunction"] = type(module).__name__
    if kind in ("ConvolutionLayer", "LinearLayer"):
        settings["hasBias"] = getattr(module, "bias", None) is not None
    return settings


def _dimension_value(value: Any) -> Any:
    """Sizes as an integer when equal in every dimension, else ``"3x5"``."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):  # padding="same"
        return value
    if isinstance(value, (tuple, list)) and value:
        if any(v is None for v in value):
            return "x".join(str(v) for v in value)
        if all(v == value[0] for v in value) and isinstance(value[0], int):
            return int(value[0])
        return "x".join(str(v) for v in value)
    return None


def count_parameters(model: Any) -> tuple[int, int]:
    """(all, trainable) parameter counts of a model."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable
