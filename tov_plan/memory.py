"""The memory model: a job's peak memory on its device, predicted from the model's config.json.

A job's memory is what stays for the whole run plus the larger of its two phases:

- persistent: the weights (float32, or bf16 under the bfloat16 policy with LoRA), the training
  state (the trainable weights of both adapters, their gradients and the AdamW moments of the
  base and the validation optimizer, which live at once during the validation epoch), the copy
  full fine-tuning keeps of theta_bas (in host memory), and the framework (on CPU the process
  with torch and transformers imported, on CUDA the CUDA context and the caching allocator's
  slack).
- training: the tensors the backward pass keeps for one micro-batch of
  `train_tokens_per_micro_batch` padded tokens (per layer and token, counted from the
  architecture: norms, attention, MLP and, per LoRA layer, its dropout output and mask), or with
  gradient checkpointing one hidden state per layer plus one layer recomputed; under the bfloat16
  policy with LoRA the float32 upcast of every frozen weight is kept for the backward too
  (precision.float32_compute), of one layer only with checkpointing; plus the output head's
  logits of one HEAD_CHUNK of loss positions (logits, log-softmax and its gradient).
- scoring: no graph; the widest moment of one layer for a batch of `score_tokens_per_batch`
  tokens, the head chunk's logits and log-softmax, and, with float32 LoRA, the folded float32
  copy of every adapted weight (merged.py).

LESS adds its per-row gradients (16 rows a batch, at max_length: its gradient batches are not
micro-batched), its sparse projection and its per-epoch checkpoints; uncertainty trains one
adapter and scores once; random loads no model.

Calibrated against measured peaks (benchmarks/perf/memory_model.py; docs/engine.md, "Memory
model"). Standard library only: the API and the engine both import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

GIB = 1 << 30
MIB = 1 << 20
HEAD_CHUNK = 2048  # loss positions per head call: tov_engine.model.logprob.HEAD_CHUNK
LESS_GRADIENT_ROWS = 16  # tov_engine.methods.less.gradients.GRADIENT_BUFFER
LESS_SPARSITY = 4  # tov_engine.methods.less.gradients.SPARSITY: blocks of the sparse projection
# The process with torch, transformers and peft imported, the tokenizer and the encoded data
# (measured: VmHWM right after the imports, benchmarks/perf/memory_model.py).
CPU_PROCESS_BYTES = 560 * MIB
CUDA_CONTEXT_BYTES = 600 * MIB  # the CUDA context, cuBLAS workspaces and kernels
CUDA_ALLOCATOR_SLACK = 0.08  # the caching allocator's fragmentation, a share of the tensors
# glibc keeps freed blocks of a finished phase (a scoring pass starts on top of what training
# left), a share of the tensors on CPU. Chosen after benchmarks/perf/memory_model.py's runs at
# 135M, 360M and 1B (with 0.05, fixed before them, the ratios were 0.91, 0.89 and 1.03; with
# 0.10 they are 0.95, 0.93 and 1.07). It varies: matrices under glibc's 32 MB mmap threshold
# (360M's folded copies) stay in the heap after a pass, larger ones (1B's) go back at once.
CPU_ALLOCATOR_SLACK = 0.10
MIN_ADVICE_SHARE = 0.02  # a knob is advised when lowering it saves at least this share of the peak
LORA_DROPOUT_MASK = 0.25  # a bool mask per dropout output: 1 byte per float32 element

# Model types whose MLP is not gated (two matrices, not three) and that have learned positions.
UNGATED = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "electra",
        "deberta",
        "deberta-v2",
        "gpt2",
        "gpt_neox",
        "gptj",
        "opt",
        "bloom",
        "falcon",
        "phi",
        "starcoder2",
        "mpnet",
    }
)
TASKS = ("causal_lm", "token_classification")
METHODS = ("tov", "less", "uncertainty", "random", "rds")
PRECISIONS = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs of an architecture, read from config.json."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool
    positions: int  # learned position embeddings (0: rotary or none)
    experts: int  # MLP copies of a mixture-of-experts layer (1: dense)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[tuple[str, ...], int, int]]:
        """One layer's linear layers: (names it goes by, in features, out features)."""
        h, i = self.hidden, self.intermediate
        attn: list[tuple[tuple[str, ...], int, int]] = [
            (("q_proj", "query", "q"), h, self.q_dim),
            (("k_proj", "key", "k"), h, self.kv_dim),
            (("v_proj", "value", "v"), h, self.kv_dim),
            (("o_proj", "dense", "out_proj", "o"), self.q_dim, h),
        ]
        mlp: list[tuple[tuple[str, ...], int, int]]
        if self.gated:
            mlp = [
                (("gate_proj", "w1"), h, i),
                (("up_proj", "w3"), h, i),
                (("down_proj", "w2"), i, h),
            ]
        else:
            mlp = [
                (("up_proj", "fc1", "fc_in", "intermediate.dense"), h, i),
                (("down_proj", "fc2", "fc_out", "output.dense"), i, h),
            ]
        return attn + [(n, a, b) for n, a, b in mlp for _ in range(self.experts)]

    def linear_params(self) -> int:
        """Parameters of every transformer layer's linear layers (what LoRA adapts)."""
        return self.layers * sum(a * b for _, a, b in self.linears())


def _number(config: dict[str, Any], *names: str, default: int | None = None) -> int:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    if default is not None:
        return default
    raise ValueError(f"config.json has none of {names}: cannot estimate the model's memory")


def model_shape(config: dict[str, Any]) -> ModelShape:
    """The architecture from a model folder's config.json (a composite model's text_config).

    Raises:
        ValueError: the config lacks the hidden size, layers, heads or vocabulary.
    """
    if not isinstance(config, dict):
        raise ValueError("config.json must hold a JSON object")
    text = config.get("text_config")
    merged = {**config, **text} if isinstance(text, dict) else config
    hidden = _number(merged, "hidden_size", "n_embd", "d_model", "dim")
    heads = _number(merged, "num_attention_heads", "n_head", "num_heads", "n_heads")
    head_dim = _number(merged, "head_dim", default=hidden // heads)
    model_type = str(merged.get("model_type", ""))
    gated = model_type not in UNGATED
    return ModelShape(
        hidden=hidden,
        layers=_number(merged, "num_hidden_layers", "n_layer", "num_layers", "n_layers"),
        intermediate=_number(
            merged, "intermediate_size", "n_inner", "ffn_dim", "hidden_dim", default=4 * hidden
        ),
        heads=heads,
        kv_heads=_number(merged, "num_key_value_heads", "n_kv_heads", default=heads),
        head_dim=head_dim,
        vocab=_number(merged, "vocab_size", "n_vocab"),
        # absent means not tied: the larger (safer) count
        tied=bool(merged.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        gated=gated,
        positions=0 if gated else _number(merged, "max_position_embeddings", default=512),
        experts=_number(merged, "num_local_experts", "num_experts", default=1),
    )


@dataclass(frozen=True)
class Workload:
    """One job as the memory model sees it (every knob resolved; see tov_engine.model.footprint)."""

    model_config: dict[str, Any]  # the model folder's config.json
    task: str = "causal_lm"  # or "token_classification"
    num_labels: int = 0  # token classification: the tag set's size
    method: str = "tov"  # "tov" | "less" | "uncertainty" | "random" | "rds"
    precision: str = "float32"  # resolved: "float32" | "bfloat16"
    lora_rank: int | None = 8  # None: full fine-tuning
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    batch_size: int = 16  # rows per training batch
    train_tokens_per_micro_batch: int = 4096  # padded tokens per training micro-batch
    score_tokens_per_batch: int = 8192  # the scoring batch's padded-token budget
    max_length: int = 512
    gradient_checkpointing: bool = False  # resolved
    device_type: str = "cpu"  # "cpu" | "cuda"
    less_projection_dim: int = 8192
    less_epochs: int = 4

    def __post_init__(self) -> None:
        checks = [
            (self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}"),
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.device_type in DEVICES, f"device_type must be one of {DEVICES}"),
            (self.lora_rank is None or self.lora_rank >= 1, "lora_rank must be None or >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.train_tokens_per_micro_batch >= 1, "train_tokens_per_micro_batch must be >= 1"),
            (self.score_tokens_per_batch >= 1, "score_tokens_per_batch must be >= 1"),
            (self.max_length >= 2, "max_length must be >= 2"),
            (self.less_projection_dim >= 1, "less_projection_dim must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def train_tokens(self) -> int:
        """Padded tokens of the largest training micro-batch: the budget, at most a whole batch
        of rows at max_length, at least one row (a longer row runs alone)."""
        whole = self.batch_size * self.max_length
        return min(whole, max(self.train_tokens_per_micro_batch, self.max_length))

    @property
    def score_tokens(self) -> int:
        """Padded tokens of the largest scoring batch (a row longer than the budget runs alone)."""
        return max(self.score_tokens_per_batch, self.max_length)


@dataclass(frozen=True)
class Advice:
    """One knob that lowers the peak: its job-parameter name, its value now, a lower value
    (None for a switch) and the bytes it saves."""

    knob: str
    now: Any
    to: Any
    saves_bytes: int

    def words(self) -> str:
        if self.knob == "gradient_checkpointing":
            return "set gradient_checkpointing: on"
        if self.knob == "precision":
            return "set precision: bfloat16"
        return f"lower {self.knob} (now {self.now})"


@dataclass(frozen=True)
class MemoryEstimate:
    """The predicted peak of a job and what it is made of."""

    peak_bytes: int
    parts: dict[str, int]  # sums to peak_bytes: the persistent parts and the peak phase's
    phase: str  # the phase that sets the peak: "train", "score", "gradients" or "none"
    phases: dict[str, int]  # every phase's own bytes on top of the persistent parts
    advice: list[Advice] = field(default_factory=list)  # largest saving first

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


def _lora_modules(shape: ModelShape, targets: str | tuple[str, ...]) -> list[tuple[int, int]]:
    """(in, out) of one layer's linear layers that LoRA adapts ("all-linear": every one)."""
    linears = shape.linears()
    if isinstance(targets, str):
        targets = (targets,)
    if "all-linear" in targets:
        return [(a, b) for _, a, b in linears]
    picked = [(a, b) for names, a, b in linears if any(n in targets for n in names)]
    return picked or [(a, b) for _, a, b in linears]  # unknown names: count every one (safe)


def parameter_count(w: Workload) -> int:
    """The model's parameters, from its architecture (embeddings, layers, norms, head)."""
    s = model_shape(w.model_config)
    embed = s.vocab * s.hidden + s.positions * s.hidden
    layers = s.linear_params() + s.layers * 2 * s.hidden
    if w.task == "token_classification":
        head = s.hidden * max(1, w.num_labels)
    else:
        head = 0 if s.tied else s.vocab * s.hidden
    return embed + layers + s.hidden + head


def trainable_count(w: Workload) -> int:
    """Trainable parameters of one adapter (LoRA) or of the model (full fine-tuning)."""
    if w.lora_rank is None:
        return parameter_count(w)
    s = model_shape(w.model_config)
    per_layer = sum(w.lora_rank * (a + b) for a, b in _lora_modules(s, w.lora_target_modules))
    head = s.hidden * max(1, w.num_labels) if w.task == "token_classification" else 0
    return s.layers * per_layer + head


def _layer_floats(w: Workload, s: ModelShape) -> float:
    """float32 elements one layer keeps for the backward, per token (no checkpointing)."""
    norms = 5 * s.hidden  # two norms: input, normalised, scaled output
    attention = 5 * s.q_dim + 2 * s.kv_dim  # rotated q, k and v repeated per head, out, o input
    mlp = (4 if s.gated else 2) * s.intermediate * s.experts
    lora = 0.0
    if w.lora_rank is not None:
        lora = sum(
            (1 + LORA_DROPOUT_MASK) * a + w.lora_rank
            for a, _ in _lora_modules(s, w.lora_target_modules)
        )
    return norms + attention + mlp + lora


def _activation_bytes(w: Workload) -> int:
    """Bytes of activations (and upcast weights) the training micro-batch keeps."""
    s = model_shape(w.model_config)
    tokens = w.train_tokens
    # bf16 full fine-tuning computes under autocast: activations mostly bf16
    act = 2 if (w.precision == "bfloat16" and w.lora_rank is None) else 4
    per_layer = _layer_floats(w, s) * tokens * act
    upcast = 0  # float32 copies of frozen bf16 weights, kept for the backward
    if w.precision == "bfloat16" and w.lora_rank is not None:
        upcast = 4 * s.linear_params() // s.layers
    if w.gradient_checkpointing:
        kept = s.layers * tokens * s.hidden * 4  # each layer's input
        return int(kept + per_layer + upcast)
    return int(s.layers * (per_layer + upcast))


def _head_bytes(w: Workload, training: bool) -> int:
    """The output head's logits for one chunk of loss positions (float32)."""
    s = model_shape(w.model_config)
    if w.task == "token_classification":
        tokens = w.train_tokens if training else w.score_tokens
        return tokens * max(1, w.num_labels) * 4 * (3 if training else 2)
    chunk = min(HEAD_CHUNK, w.train_tokens if training else w.score_tokens)
    # training: logits, log-softmax kept for the backward, its gradient; scoring: the first two
    return chunk * s.vocab * 4 * (3 if training else 2)


def _score_bytes(w: Workload) -> int:
    """The widest moment of one layer's forward without a graph, and the last hidden states."""
    s = model_shape(w.model_config)
    tokens = w.score_tokens
    widest = 4 * s.hidden + 3 * s.intermediate + 2 * s.q_dim
    upcast = 0
    if w.precision == "bfloat16":
        upcast = 4 * max(a * b for _, a, b in s.linears())  # one weight upcast at a time
    return int(tokens * widest * 4 + tokens * s.hidden * 4 + upcast)


def _phases(w: Workload) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """(persistent parts, {phase: its parts})."""
    s = model_shape(w.model_config)
    params = parameter_count(w)
    lora = w.lora_rank is not None
    cuda = w.device_type == "cuda"
    if w.method == "random":
        framework = CUDA_CONTEXT_BYTES if cuda else CPU_PROCESS_BYTES
        return {"framework": framework}, {"none": {}}
    weight_bytes = 2 if (w.precision == "bfloat16" and lora) else 4
    weights = params * weight_bytes
    if w.method == "rds":  # frozen weights, one forward for embeddings: no adapters, no head
        frozen = {"weights": (2 if w.precision == "bfloat16" else 4) * params}
        tensors = frozen["weights"] + _score_bytes(w)
        slack = CUDA_ALLOCATOR_SLACK if cuda else CPU_ALLOCATOR_SLACK
        base = CUDA_CONTEXT_BYTES if cuda else CPU_PROCESS_BYTES
        frozen["framework"] = base + int(slack * tensors)
        return frozen, {"embed": {"score_activations": _score_bytes(w)}}
    trainable = trainable_count(w)
    adapters = 2 if lora else 0  # the surrogate always holds "base" and "val" (surrogate.py)
    optimizers = 2 if w.method == "tov" else 1
    # trainable weights (LoRA: each adapter; full: counted in weights), one gradient, AdamW moments
    state = adapters * trainable * 4 + trainable * 4 + optimizers * 2 * trainable * 4
    copies = 0
    if not lora and w.method == "tov" and not cuda:
        copies = params * 4  # theta_bas kept in host memory while the validation epoch runs
    persistent = {"weights": weights, "training_state": state, "adapter_copies": copies}
    train = {
        "train_activations": _activation_bytes(w),
        "head_logits": _head_bytes(w, training=True),
    }
    phases: dict[str, dict[str, int]] = {"train": train}
    if w.method in ("tov", "uncertainty"):
        fold = 4 * s.linear_params() if (lora and w.precision == "float32") else 0
        phases["score"] = {
            "score_activations": _score_bytes(w),
            "head_logits": _head_bytes(w, training=False),
            "adapter_copies": fold,  # the folded float32 copy of the adapted weights
        }
    if w.method == "less":
        rows = replace(w, batch_size=LESS_GRADIENT_ROWS, train_tokens_per_micro_batch=1 << 40)
        # per-row gradients of a batch, and per projection block an index_select and its product
        gradients = 3 * LESS_GRADIENT_ROWS * trainable * 4
        projection = LESS_SPARSITY * trainable * 8  # per block: int32 indices, float32 weights
        phases["gradients"] = {
            "train_activations": _activation_bytes(rows),
            "head_logits": _head_bytes(rows, training=True),
            "less_gradients": gradients + projection,
        }
        persistent["adapter_copies"] += w.less_epochs * 3 * trainable * 4  # checkpoints
    tensors = sum(persistent.values()) + max(sum(p.values()) for p in phases.values())
    if cuda:
        persistent["framework"] = CUDA_CONTEXT_BYTES + int(CUDA_ALLOCATOR_SLACK * tensors)
    else:
        persistent["framework"] = CPU_PROCESS_BYTES + int(CPU_ALLOCATOR_SLACK * tensors)
    return persistent, phases


def _peak(w: Workload) -> tuple[int, str, dict[str, int], dict[str, int]]:
    persistent, phases = _phases(w)
    totals = {name: sum(parts.values()) for name, parts in phases.items()}
    phase = max(totals, key=lambda name: totals[name])
    parts = dict(persistent)
    for name, value in phases[phase].items():
        parts[name] = parts.get(name, 0) + value
    return sum(parts.values()), phase, parts, totals


def _knobs(w: Workload) -> list[tuple[str, Any, Any, Workload]]:
    """(knob, now, lower value, the workload with it) for every knob that can go lower."""
    out: list[tuple[str, Any, Any, Workload]] = []
    if w.train_tokens_per_micro_batch > 256:
        lower = w.train_tokens_per_micro_batch // 2
        out.append(
            (
                "tov.train_tokens_per_micro_batch",
                w.train_tokens_per_micro_batch,
                lower,
                replace(w, train_tokens_per_micro_batch=lower),
            )
        )
    if w.score_tokens_per_batch > 256:
        lower = w.score_tokens_per_batch // 2
        out.append(
            (
                "tov.tokens_per_batch",
                w.score_tokens_per_batch,
                lower,
                replace(w, score_tokens_per_batch=lower),
            )
        )
    if w.max_length > 64:
        out.append(
            (
                "max_length",
                w.max_length,
                w.max_length // 2,
                replace(w, max_length=w.max_length // 2),
            )
        )
    if not w.gradient_checkpointing:
        out.append(("gradient_checkpointing", "off", "on", replace(w, gradient_checkpointing=True)))
    if w.precision == "float32":
        out.append(("precision", "float32", "bfloat16", replace(w, precision="bfloat16")))
    if w.lora_rank is not None and w.lora_rank > 1:
        out.append(
            ("lora.rank", w.lora_rank, w.lora_rank // 2, replace(w, lora_rank=w.lora_rank // 2))
        )
    return out


def estimate_peak_memory(w: Workload) -> MemoryEstimate:
    """The job's predicted peak memory on its device, its parts, and the knobs that lower it.

    Raises:
        ValueError: the config lacks what the model needs (model_shape).
    """
    peak, phase, parts, totals = _peak(w)
    advice = []
    if w.method != "random":
        for knob, now, to, lower in _knobs(w):
            saves = peak - _peak(lower)[0]
            if saves >= MIN_ADVICE_SHARE * peak:
                advice.append(Advice(knob, now, to, saves))
    advice.sort(key=lambda a: -a.saves_bytes)
    return MemoryEstimate(peak, parts, phase, totals, advice)


def refusal_message(estimate: MemoryEstimate, available_bytes: int, device: str) -> str:
    """Why a job does not fit, and the knobs that lower its need (largest effect first)."""
    need, have = estimate.peak_bytes / GIB, available_bytes / GIB
    words = [a.words() for a in estimate.advice[:3]]
    if not words:
        hint = "use a smaller model or a device with more memory"
    elif len(words) == 1:
        hint = words[0]
    else:
        hint = ", ".join(words[:-1]) + " or " + words[-1]
    return (
        f"this job needs about {need:.1f} GiB on {device}, which has {have:.1f} GiB free "
        f"({_fmt_parts(estimate)}); {hint}"
    )


def _fmt_parts(estimate: MemoryEstimate) -> str:
    top = sorted(estimate.parts.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{name.replace('_', ' ')} {value / GIB:.1f} GiB" for name, value in top)


def fits(estimate: MemoryEstimate, available_bytes: int) -> bool:
    """Whether the predicted peak fits in `available_bytes`."""
    return estimate.peak_bytes <= available_bytes and math.isfinite(estimate.peak_bytes)
