"""Workloads for the performance benchmark: synthetic pools with a long-tailed length mix, and
small random-init models (ratios only need the model's shape, not its quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.tiny_models import CORPUS, build_tiny_bpe_tokenizer, build_tiny_causal_lm

WORDS = CORPUS.replace(".", " .").replace("?", " ?").split()


def synthetic_rows(n: int, seed: int, median_words: float = 20.0) -> list[dict[str, str]]:
    """prompt/completion rows whose lengths follow a log-normal long tail (a few rows are 30x the
    median), like instruction data: short questions, answers from one word to pages."""
    rng = np.random.default_rng(seed)
    prompt_words = np.clip(rng.lognormal(np.log(median_words / 2), 0.8, n), 2, 600).astype(int)
    answer_words = np.clip(rng.lognormal(np.log(median_words), 1.0, n), 1, 1500).astype(int)
    words = np.array(WORDS)
    rows = []
    for p, a in zip(prompt_words, answer_words, strict=True):
        rows.append(
            {
                "prompt": " ".join(rng.choice(words, p)),
                "completion": " ".join(rng.choice(words, a)),
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_small_lm(path: Path, hidden: int = 256, layers: int = 4) -> Path:
    """A random-init Llama whose forward cost sits in its transformer body (the tiny test
    tokenizer keeps the output head small), so timings are dominated by forward passes as on a
    GPU with a real model, not by Python overhead."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_lm(path: Path) -> Path:
    """The tests' 2-layer, hidden-64 Llama."""
    build_tiny_causal_lm(path)
    return path
