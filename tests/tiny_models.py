"""Tiny models built from a config, for tests: seconds to build, no hub, no download.

`build_tiny_causal_lm(path)` writes a 2-layer Llama with a byte-level BPE tokenizer and a ChatML
chat template; `build_tiny_token_classifier(path)` writes a 2-layer BERT encoder with a WordPiece
tokenizer.
Both are random-init: fine for plumbing and for "does the signal point the right way" tests, useless
for quality claims.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

# A small built-in corpus: enough for a few hundred merges, so tokens are sub-word, not bytes.
CORPUS = """
The quick brown fox jumps over the lazy dog. A stitch in time saves nine.
Paris is the capital of France. Berlin is the capital of Germany. Rome is the capital of Italy.
What is the capital of Spain? Madrid is the capital of Spain.
Two plus two is four. Three times three is nine. Ten minus one is nine.
The cat sat on the mat. The dog barked at the mailman. Birds sing in the morning.
Water boils at one hundred degrees. Ice melts when it gets warm.
Translate to French: good morning. Bonjour. Translate to German: thank you. Danke.
Write a short poem about the sea. The sea is wide, the sea is deep.
Summarize: the meeting was moved to Tuesday because the room was booked.
Question: who wrote Hamlet? Answer: William Shakespeare wrote Hamlet.
Alice works at Google in London. Bob moved to Paris in May. Carol visited Tokyo.
def add(a, b): return a + b. for i in range(10): print(i).
""".strip()

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus_lines() -> list[str]:
    lines = [line for line in CORPUS.splitlines() if line]
    # Repeat so the trainer sees pair counts high enough to merge common words.
    return lines * 20


def build_tiny_bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens, trained in well under a second."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|im_end|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_causal_lm(path: str | Path) -> None:
    """Write a 2-layer Llama (hidden 64) and its tokenizer into `path` (safetensors)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_tiny_wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """An uncased WordPiece tokenizer with BERT's special tokens."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_tiny_token_classifier(path: str | Path) -> None:
    """Write a 2-layer BERT encoder (hidden 64, no classification head) and its tokenizer."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_wordpiece_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
