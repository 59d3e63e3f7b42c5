"""Hugging Face BERT checkpoints (safetensors) -> the Keras encoder of harness/models/transformer.py.

No TensorFlow import here: variables are reached through the model's layers and set with assign.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.models.data import MissingDataset


def bert_weight_map(model, layers: int) -> list:
    """(checkpoint tensor name, Keras variable, transpose) for every encoder weight. PyTorch Linear
    weights are (out, in); Keras kernels are (in, out). The pooler and the head are not loaded."""
    emb = model.get_layer("embeddings")
    pairs = [("embeddings.word_embeddings.weight", emb.word, False),
             ("embeddings.position_embeddings.weight", emb.position, False),
             ("embeddings.token_type_embeddings.weight", emb.token_type, False),
             ("embeddings.LayerNorm.weight", emb.norm.gamma, False),
             ("embeddings.LayerNorm.bias", emb.norm.beta, False)]
    for i in range(layers):
        pre, att, ffn = f"encoder.layer.{i}.", model.get_layer(f"attention_{i}"), model.get_layer(f"ffn_{i}")
        dense = {"attention.self.query": att.query, "attention.self.key": att.key, "attention.self.value": att.value,
                 "attention.output.dense": att.out, "intermediate.dense": ffn.intermediate, "output.dense": ffn.out}
        for torch_name, layer in dense.items():
            pairs += [(pre + torch_name + ".weight", layer.kernel, True), (pre + torch_name + ".bias", layer.bias, False)]
        for torch_name, norm in (("attention.output.LayerNorm", f"attention_{i}_norm"), ("output.LayerNorm", f"ffn_{i}_norm")):
            norm = model.get_layer(norm)
            pairs += [(pre + torch_name + ".weight", norm.gamma, False), (pre + torch_name + ".bias", norm.beta, False)]
    return pairs


def _lookup(tensors: dict, name: str):
    """A tensor by its name, allowing a 'bert.' prefix and the old LayerNorm gamma/beta names."""
    alternatives = [name]
    if name.endswith("LayerNorm.weight"):
        alternatives.append(name[:-len("weight")] + "gamma")
    if name.endswith("LayerNorm.bias"):
        alternatives.append(name[:-len("bias")] + "beta")
    for candidate in alternatives:
        for key in (candidate, "bert." + candidate):
            if key in tensors:
                return tensors[key]
    return None


def read_safetensors(path: Path) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise MissingDataset("reading BERT weights needs the safetensors package: pip install safetensors") from exc
    return load_file(str(path))


def load_bert_weights(model, path: Path, layers: int) -> None:
    """Set the encoder's weights from a BERT safetensors file. Every tensor is checked before any is set:
    a missing tensor or a wrong shape raises ValueError naming the first offending tensor."""
    tensors = read_safetensors(path)
    plan = []
    for name, variable, transpose in bert_weight_map(model, layers):
        value = _lookup(tensors, name)
        if value is None:
            raise ValueError(f"{path}: tensor {name!r} is missing")
        want = tuple(variable.shape)[::-1] if transpose else tuple(variable.shape)  # checkpoint orientation
        if tuple(value.shape) != want:
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(value.shape)}, the model needs {want}")
        plan.append((variable, np.asarray(value.T if transpose else value, dtype="float32")))
    for variable, value in plan:
        variable.assign(value)
