"""The model folders under the configured model roots, read without torch.

A model is a folder with a ``config.json`` under one of ``settings.model_roots`` (directly, or
one level down as ``org/name``), named by its path relative to the root: the same rule the
worker applies when it resolves a job's ``model`` (``worker.engine_bridge.resolve_model``), so a
name listed here is a name a job can run. Only directory listings and small reads: each
config.json, and the JSON header at the start of each safetensors file, never the weights.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

MAX_HEADER_BYTES = 16 << 20  # a safetensors header is KiBs; anything bigger is not read
MAX_MODELS = 1000  # a listing stops here: a model root is not a place for millions of folders
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
GATED_MLP = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo"}

ParameterSource = Literal["safetensors", "config"]


@dataclass(frozen=True)
class ModelFolder:
    """What the catalogue says about one installed model."""

    name: str
    model_type: str | None
    architectures: list[str]
    parameters: int | None
    parameters_source: ParameterSource | None
    has_tokenizer: bool


def _inside(path: Path, root: Path) -> bool:
    """True when `path` (symlinks resolved) lies in `root`: a link cannot lead out of a root."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real == real_root or real_root in real.parents


def find_model(name: str, roots: list[Path]) -> Path | None:
    """The folder that a job's `model` names, or None: a name relative to a root, or an
    absolute path inside one, holding a config.json (the worker's own rule)."""
    candidate = Path(name)
    for root in roots:
        path = candidate if candidate.is_absolute() else root / name
        try:
            if _inside(path, root) and (path / "config.json").is_file():
                return Path(os.path.realpath(path))
        except (OSError, ValueError):  # a NUL byte, a lone surrogate, a name too long: no model
            continue
    return None


def _model_dirs(root: Path) -> Iterator[tuple[str, Path]]:
    """(name, folder) for each model under `root`: children with a config.json, and the
    children of folders without one (``org/name``, as on the hub)."""
    for child in _children(root):
        if child.name.startswith(".") or not child.is_dir() or not _inside(child, root):
            continue
        if (child / "config.json").is_file():
            yield child.name, child
            continue
        for grandchild in _children(child):
            if _is_model(grandchild, root):
                yield f"{child.name}/{grandchild.name}", grandchild


def _children(folder: Path) -> list[Path]:
    """The folder's entries, sorted; none when it cannot be read (one unreadable folder must
    not hide every other model)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _is_model(folder: Path, root: Path) -> bool:
    """A visible folder inside `root` (links resolved) holding a config.json."""
    return (
        not folder.name.startswith(".")
        and folder.is_dir()
        and (folder / "config.json").is_file()
        and _inside(folder, root)
    )


def list_models(roots: list[Path]) -> list[ModelFolder]:
    """Every installed model, by name; a name in two roots is the first root's (as the worker
    resolves it)."""
    found: dict[str, ModelFolder] = {}
    for root in roots:
        for name, folder in _model_dirs(root):
            if name not in found and len(found) < MAX_MODELS:
                found[name] = describe(name, folder)
    return [found[name] for name in sorted(found)]


def known_names(roots: list[Path]) -> list[str]:
    """The installed models' names, sorted (what a 422 for an unknown model lists)."""
    names: dict[str, None] = {}
    for root in roots:
        for name, _ in _model_dirs(root):
            names.setdefault(name, None)
    return sorted(names)


def describe(name: str, folder: Path) -> ModelFolder:
    """One model from its config.json and safetensors headers."""
    config = _read_config(folder / "config.json")
    counted = safetensors_parameters(folder)
    estimated = None if counted is not None else estimate_parameters(config)
    architectures = config.get("architectures")
    return ModelFolder(
        name=name,
        model_type=config.get("model_type") if isinstance(config.get("model_type"), str) else None,
        architectures=[str(a) for a in architectures] if isinstance(architectures, list) else [],
        parameters=counted if counted is not None else estimated,
        parameters_source="safetensors"
        if counted is not None
        else ("config" if estimated is not None else None),
        has_tokenizer=any((folder / f).is_file() for f in TOKENIZER_FILES),
    )


def _read_config(path: Path) -> dict[str, Any]:
    """The parsed config.json, or {} when it is unreadable (the listing still names the model;
    the worker reports the broken file when a job uses it)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model: those its index names when sharded, else all."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        mapping = _read_config(index).get("weight_map")
        if isinstance(mapping, dict):
            return [folder / str(f) for f in sorted(set(mapping.values()))]
    return sorted(folder.glob("*.safetensors"))


def safetensors_parameters(folder: Path) -> int | None:
    """The exact number of parameters, summed from the shapes in each safetensors header (the
    first 8 bytes give the header's length); None when there are none or one is unreadable."""
    files = _weight_files(folder)
    if not files:
        return None
    total = 0
    for path in files:
        count = _header_parameters(path)
        if count is None:
            return None
        total += count
    return total


def _header_parameters(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    total = 0
    for key, tensor in header.items():
        if key == "__metadata__" or not isinstance(tensor, dict):
            continue
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            return None
        total += math.prod(shape)
    return total


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate_parameters(config: dict[str, Any]) -> int | None:
    """A transformer's parameter count from its config's sizes (embeddings, attention with
    grouped KV heads, a gated or plain MLP, an untied head), for folders without safetensors.
    An estimate: biases, norms and position tables are left out. None when sizes are missing."""
    if isinstance(config.get("text_config"), dict):
        config = {**config["text_config"], "model_type": config.get("model_type")}
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model")
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first_int(config, "vocab_size")
    if hidden is None or layers is None or vocab is None:
        return None
    inner = _first_int(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    heads = _first_int(config, "num_attention_heads", "n_head") or 1
    kv_heads = _first_int(config, "num_key_value_heads") or heads
    kv_width = hidden * kv_heads // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_width
    mlp = (3 if config.get("model_type") in GATED_MLP else 2) * hidden * inner
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    return vocab * hidden + layers * (attention + mlp) + head
