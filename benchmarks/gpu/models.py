"""Models and rows for the GPU benchmark, built offline from configs with seeded random weights.

The GPU machine has no network and takes at most 64 MiB of carried files, so nothing is
downloaded: the tokenizer is the tests' byte-level BPE trained in-process on a small corpus
(tests/tiny_models.py), the models are Llama configs of the real sizes (their vocabulary is the
real one, so the output head costs what it costs; the tokenizer uses its first few hundred ids),
initialised by transformers on the target device itself (an 8B model never passes through CPU
memory at init) and saved as a model folder the engine loads like any other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.perf.workloads import WORDS, synthetic_rows, write_jsonl

# Llama shapes. "llama-1b" is Llama-3.2-1B's, "llama-8b" Llama-3.1-8B's; "tiny" is the tests'
# model and "small" a slightly larger one, the CPU small mode's stand-ins.
SHAPES: dict[str, dict[str, Any]] = {
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=None,  # the tokenizer's
        tie_word_embeddings=False,
    ),
    "small": dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=4096,
        tie_word_embeddings=False,
    ),
}
MAX_POSITIONS = 4096


def build_model(
    folder: Path, shape: str, tokenizer: Any, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, Any]:
    """Write a random-init Llama of `shape` and the tokenizer into `folder` (safetensors).

    The weights are created and initialised on `device` in `dtype` (transformers' own init,
    seeded), saved, and freed before this returns.

    Returns:
        {"shape", "parameters", "dtype", "seconds"}.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; known: {sorted(SHAPES)}")
    start = time.perf_counter()
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = dims["vocab_size"] or len(tokenizer)
    if dims["vocab_size"] < len(tokenizer):
        raise ValueError(f"shape {shape}: vocabulary {dims['vocab_size']} < the tokenizer's")
    config = LlamaConfig(
        **dims,
        max_position_embeddings=MAX_POSITIONS,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    parameters = sum(p.numel() for p in model.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return {
        "shape": shape,
        "parameters": parameters,
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - start, 1),
    }


def text_rows(path: Path, n: int, seed: int, median_words: float) -> Path:
    """n prompt/completion rows with a long-tailed length mix (benchmarks/perf/workloads.py)."""
    return write_jsonl(path, synthetic_rows(n, seed=seed, median_words=median_words))


def long_rows(path: Path, n: int, seed: int, max_length: int) -> Path:
    """n rows longer than `max_length` tokens: the engine cuts each prompt from the left, so
    every row is exactly `max_length` tokens and the batches are full (the memory model's worst
    case at these settings). About a third of the tokens carry loss."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    answer = max(1, max_length // 4)  # about 1.3 tokens a word with the tests' tokenizer
    prompt = max_length  # plenty: whatever does not fit is cut
    rows = [
        {
            "prompt": " ".join(rng.choice(words, prompt)),
            "completion": " ".join(rng.choice(words, answer)),
        }
        for _ in range(n)
    ]
    return write_jsonl(path, rows)
