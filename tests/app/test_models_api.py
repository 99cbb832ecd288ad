"""GET /v1/models lists what the workers can run, read from the model roots without torch; a
job naming a model that is not there is refused at create (422), not later in the worker."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.app.test_datasets_api import auth
from tests.app.test_jobs_api import datasets

LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "tie_word_embeddings": True,
}


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file whose header names `shapes` (f32) and whose body is zeros."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def install(root: Path, name: str, config: dict[str, Any] | str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text)
    return folder


def test_models_lists_the_model_roots(
    client: Any, api_key: str, service_dirs: dict[str, Path], tmp_path: Path
) -> None:
    root = service_dirs["models"]
    counted = install(root, "catalog-counted", LLAMA)
    write_safetensors(counted / "model.safetensors", {"embed": [100, 64], "layer": [64, 128]})
    (counted / "tokenizer.json").write_text("{}")
    sharded = install(root, "catalog-org/sharded", {"model_type": "bert"})
    write_safetensors(sharded / "a.safetensors", {"w": [3, 5]})
    write_safetensors(sharded / "b.safetensors", {"v": [7]})
    index = {"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    install(root, "catalog-estimated", LLAMA)
    install(root, "catalog-broken", "{not json")
    (root / "catalog-no-config").mkdir(exist_ok=True)
    outside = install(tmp_path, "outside", LLAMA)
    os.symlink(outside, root / "catalog-link-out")

    answer = client.get("/v1/models", headers=auth(api_key))
    assert answer.status_code == 200, answer.text
    listed = {m["name"]: m for m in answer.json()["items"]}
    assert answer.json()["default_model"] == "tiny-llama"
    assert listed["catalog-counted"] == {
        "name": "catalog-counted",
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "parameters": 100 * 64 + 64 * 128,
        "parameters_source": "safetensors",
        "has_tokenizer": True,
    }
    assert listed["catalog-org/sharded"]["parameters"] == 3 * 5 + 7
    assert listed["catalog-org/sharded"]["has_tokenizer"] is False
    # No weights: embeddings + 2 layers of (q, o: 64x64; k, v: 64x32; gated MLP 3x64x128).
    estimated = listed["catalog-estimated"]
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    assert estimated["parameters"] == 100 * 64 + 2 * per_layer
    assert estimated["parameters_source"] == "config"
    broken = listed["catalog-broken"]
    assert broken["model_type"] is None and broken["parameters"] is None
    assert "catalog-no-config" not in listed and "catalog-link-out" not in listed
    assert client.get("/v1/models").status_code == 401


def test_models_reads_a_real_checkpoint(
    client: Any, api_key: str, installed_tiny_model: Path
) -> None:
    from transformers import AutoModelForCausalLM

    listed = {m["name"]: m for m in client.get("/v1/models", headers=auth(api_key)).json()["items"]}
    model = AutoModelForCausalLM.from_pretrained(installed_tiny_model)
    tiny = listed["tiny-llama"]
    assert tiny["parameters"] == sum(p.numel() for p in model.parameters())
    assert (tiny["model_type"], tiny["has_tokenizer"]) == ("llama", True)


def test_an_unknown_model_is_refused_at_create(
    client: Any, api_key: str, service_dirs: dict[str, Path], tmp_path: Path
) -> None:
    install(service_dirs["models"], "catalog-known", LLAMA)
    (service_dirs["models"] / "catalog-no-config").mkdir(exist_ok=True)
    elsewhere = str(install(tmp_path, "elsewhere", LLAMA))  # a model, but outside the roots
    pool, validation = datasets(client, api_key)
    body = {"pool": pool, "validation": validation}
    odd = ("a\u0000b", "x" * 400, "a/" * 240, "\ud800")  # found by schemathesis: were 500s
    for name in ("no-such-model", "../data", elsewhere, "catalog-no-config", *odd):
        refused = client.post(  # ASCII JSON: a lone surrogate travels as its escape
            "/v1/jobs",
            content=json.dumps({**body, "model": name}),
            headers={**auth(api_key), "Content-Type": "application/json"},
        )
        assert refused.status_code == 422, (name, refused.text)
        problem = refused.json()
        if name in odd and problem["code"] == "invalid_request":
            continue  # the schema refused it first (e.g. a NUL byte): a 422 all the same
        assert problem["code"] == "invalid_input", (name, problem)
        assert problem["errors"][0]["field"] == "model"
        assert "is not installed" in problem["detail"]
        assert "'catalog-known'" in problem["detail"]  # the known ones are named
    absolute = str(service_dirs["models"] / "catalog-known")
    for name in ("catalog-known", absolute):
        accepted = client.post("/v1/jobs", json={**body, "model": name}, headers=auth(api_key))
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["model"] == name


def test_an_api_that_sees_no_model_root_leaves_the_check_to_the_worker(tmp_path: Path) -> None:
    from app.catalog.service import catalogue, require_known_model
    from app.core.config import Settings
    from app.core.errors import InvalidInput

    blind = Settings(model_roots=[tmp_path / "not-mounted"])
    require_known_model("anything", blind)  # no 422: the API cannot know
    assert catalogue(blind).items == []
    (tmp_path / "not-mounted").mkdir()
    with pytest.raises(InvalidInput, match="known models: none"):
        require_known_model("anything", blind)
