"""The memory model (tov_plan.memory): monotone in what costs memory, the 8B job fits 80 GB, the
demo-size job in a sane range, the engine's constants mirrored, and the engine CLI's check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tov_plan.memory import (
    GIB,
    HEAD_CHUNK,
    LESS_GRADIENT_ROWS,
    LESS_SPARSITY,
    Workload,
    estimate_peak_memory,
    model_shape,
    parameter_count,
    refusal_message,
)

LLAMA = {"model_type": "llama"}
SMOLLM2_135M = {
    **LLAMA,
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
LLAMA_8B = {
    **LLAMA,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}
LLAMA_70B = {
    **LLAMA_8B,
    "hidden_size": 8192,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "intermediate_size": 28672,
}


def peak(w: Workload, **changes: object) -> int:
    return estimate_peak_memory(dataclasses.replace(w, **changes)).peak_bytes  # type: ignore[arg-type]


def test_parameter_counts_match_the_published_sizes() -> None:
    assert parameter_count(Workload(model_config=SMOLLM2_135M)) == pytest.approx(134.5e6, rel=0.01)
    assert parameter_count(Workload(model_config=LLAMA_8B)) == pytest.approx(8.03e9, rel=0.01)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("method", ["tov", "less", "uncertainty"])
def test_more_tokens_layers_or_rank_need_more(device: str, method: str) -> None:
    w = Workload(model_config=SMOLLM2_135M, device_type=device, method=method)
    more = dataclasses.replace(w, train_tokens_per_micro_batch=8192)
    assert estimate_peak_memory(more).phases["train"] > estimate_peak_memory(w).phases["train"]
    assert peak(more) >= peak(w)
    if method == "less":
        assert peak(w, max_length=1024) > peak(w)  # its 16-row gradient batches grow
    else:
        assert peak(w, max_length=1024) == peak(w)  # the micro-batch budget bounds a batch
    if method != "less":  # LESS has no scoring passes
        assert peak(w, score_tokens_per_batch=1 << 20) > peak(w)  # a scoring batch that dominates
    assert peak(w, max_length=64, train_tokens_per_micro_batch=1 << 20) < peak(w)  # 16 x 64 rows
    deeper = {**SMOLLM2_135M, "num_hidden_layers": 60}
    assert peak(w, model_config=deeper) > peak(w)
    assert peak(w, lora_rank=64) > peak(w)
    big = dataclasses.replace(w, model_config=LLAMA_8B)
    assert peak(big, lora_rank=None) > peak(big)  # full fine-tuning: gradients, moments of all


def test_checkpointing_and_bf16_need_less() -> None:
    w = Workload(model_config=LLAMA_8B, device_type="cuda", precision="float32")
    assert peak(w, gradient_checkpointing=True) < peak(w)
    on = dataclasses.replace(w, gradient_checkpointing=True)
    assert peak(on, precision="bfloat16") < peak(on)
    cpu = Workload(model_config=SMOLLM2_135M)
    assert peak(cpu, gradient_checkpointing=True) < peak(cpu)


def test_an_8b_lora_job_at_the_defaults_fits_80_gb() -> None:
    w = Workload(
        model_config=LLAMA_8B, device_type="cuda", precision="bfloat16", gradient_checkpointing=True
    )
    estimate = estimate_peak_memory(w)
    assert 16e9 < estimate.peak_bytes < 80e9  # more than its bf16 weights, less than the GPU
    assert sum(estimate.parts.values()) == estimate.peak_bytes
    assert estimate.parts["weights"] == pytest.approx(2 * 8.03e9, rel=0.01)


def test_the_demo_size_job_is_in_a_sane_range() -> None:
    w = Workload(model_config=SMOLLM2_135M)  # the demo: SmolLM2-135M, CPU, float32, defaults
    estimate = estimate_peak_memory(w)
    weights_and_process = 134.5e6 * 4 + 0.5 * GIB
    assert weights_and_process < estimate.peak_bytes < 16 * GIB
    assert estimate.phase == "train"
    knobs = [a.knob for a in estimate.advice]
    assert knobs[:2] == ["gradient_checkpointing", "tov.train_tokens_per_micro_batch"]
    assert all(a.saves_bytes > 0 for a in estimate.advice)
    savings = [a.saves_bytes for a in estimate.advice]
    assert savings == sorted(savings, reverse=True)


def test_random_loads_no_model() -> None:
    w = Workload(model_config=LLAMA_70B, method="random")
    assert estimate_peak_memory(w).peak_bytes < GIB


def test_a_nested_text_config_is_read() -> None:
    composite = {"model_type": "llava", "text_config": SMOLLM2_135M, "vision_config": {}}
    assert model_shape(composite) == model_shape(SMOLLM2_135M)
    with pytest.raises(ValueError, match="hidden_size"):
        model_shape({"model_type": "llama"})


def test_the_refusal_names_the_need_and_a_knob() -> None:
    estimate = estimate_peak_memory(Workload(model_config=SMOLLM2_135M))
    message = refusal_message(estimate, 2 * GIB, "cuda:0")
    assert f"needs about {estimate.peak_bytes / GIB:.1f} GiB on cuda:0" in message
    assert "which has 2.0 GiB free" in message
    assert "tov.train_tokens_per_micro_batch (now 4096)" in message
    assert "gradient_checkpointing: on" in message


def test_the_constants_mirror_the_engine() -> None:
    from tov_engine.methods.less import gradients
    from tov_engine.model import logprob

    assert logprob.HEAD_CHUNK == HEAD_CHUNK
    assert gradients.GRADIENT_BUFFER == LESS_GRADIENT_ROWS
    assert gradients.SPARSITY == LESS_SPARSITY


def test_the_workload_of_a_job(tmp_path: Path) -> None:
    from tov_engine import JobConfig, LoraSettings, ToVConfig
    from tov_engine.model.footprint import workload_from_job

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_135M))
    config = JobConfig(
        device="cpu",
        max_length=256,
        tov=ToVConfig(batch_size=8, train_tokens_per_micro_batch=1024, lora=LoraSettings(rank=4)),
    )
    w = workload_from_job(config, tmp_path)
    assert (w.precision, w.device_type, w.gradient_checkpointing) == ("float32", "cpu", False)
    assert (w.batch_size, w.train_tokens_per_micro_batch, w.lora_rank) == (8, 1024, 4)
    assert w.train_tokens == 1024 and w.score_tokens == 8192
    on = workload_from_job(dataclasses.replace(config, gradient_checkpointing="on"), tmp_path)
    assert on.gradient_checkpointing is True


def test_the_engine_cli_refuses_a_job_its_machine_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tov_engine.cli import EXIT_ERROR, EXIT_MEMORY, main

    model = tmp_path / "llama-70b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_70B))  # no weights: never loaded
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "Hi?", "completion": "Hello."}) + "\n")
    argv = [
        "select",
        "--pool",
        str(data),
        "--validation",
        str(data),
        "--model",
        str(model),
        "--budget",
        "1",
        "--out",
        str(tmp_path / "out.jsonl"),
        "--device",
        "cpu",
    ]
    assert main(argv) == EXIT_MEMORY
    err = capsys.readouterr().err
    assert "this job needs about" in err and "GiB on cpu" in err and "--skip-memory-check" in err
    assert main([*argv, "--skip-memory-check"]) == EXIT_ERROR  # on to loading: no weights there
    assert "needs about" not in capsys.readouterr().err


def test_the_check_counts_the_real_rows_before_refusing(
    tmp_path: Path, tiny_causal_lm_dir: Path
) -> None:
    """At max_length the job does not fit the cap; its short rows do, so it is not refused."""
    from tov_engine import InsufficientMemory, JobConfig, SelectionConfig
    from tov_engine.model.footprint import check_memory

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": f"Hi {i}?", "completion": "Hello."}) + "\n" for i in range(40)
        )
    )
    config = JobConfig(
        method="less", selection=SelectionConfig(budget=4), device="cpu", max_length=4096
    )
    bound = check_memory(config, tiny_causal_lm_dir, memory_gb=1000)  # every row at 4096 tokens
    cap = (bound.peak_bytes / (1 << 30)) * 0.9
    with pytest.raises(InsufficientMemory):
        check_memory(config, tiny_causal_lm_dir, memory_gb=cap)  # no files: the bound decides
    fits = check_memory(config, tiny_causal_lm_dir, memory_gb=cap, pool=rows, validation=[rows])
    assert fits.peak_bytes < 0.9 * bound.peak_bytes
