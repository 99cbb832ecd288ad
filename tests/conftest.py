"""Shared pytest fixtures: tiny models built once per session, on CPU.

torch is imported only inside the fixtures, so test suites that never ask for a model (the API's)
do not pay for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a 2-layer Llama (hidden 64) with a ChatML byte-level BPE tokenizer."""
    from tests.tiny_models import build_tiny_causal_lm

    path = tmp_path_factory.mktemp("tiny_causal_lm")
    build_tiny_causal_lm(path)
    return path


@pytest.fixture(scope="session")
def tiny_token_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a 2-layer BERT encoder and a WordPiece tokenizer (tasks add the head)."""
    from tests.tiny_models import build_tiny_token_classifier

    path = tmp_path_factory.mktemp("tiny_token_classifier")
    build_tiny_token_classifier(path)
    return path
