"""Engine knobs: frozen dataclasses, validated on construction, with the paper's defaults.

Where the paper is silent the default is ours; docs/engine.md lists which is which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tov_plan import rules

TASKS = ("causal_lm", "token_classification")
METHODS = ("tov", "random", "uncertainty", "less", "rds")
STRATEGIES = ("score+random", "score-only", "score+diverse")
VARIANTS = ("A", "B")
SCORE_FNS = ("improvement", "absolute", "positive")
PRECISIONS = ("auto", "float32", "bfloat16")  # model/precision.py; auto: by the device
GRADIENT_CHECKPOINTING = ("auto", "on", "off")  # model/train_memory.py; auto: on with CUDA only
TOKEN_SCORES = ("class_balanced", "mean")  # token classification's row reduction (scoring.py)

# PAPER_BASE_EXAMPLES and MAX_DEFAULT_ROUNDS (the default L) live with the rules in tov_plan.rules.


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class SelectionConfig:
    """How many rows to pick and how."""

    budget: float = 0.1  # >= 1: a row count (whole number); in (0, 1): a fraction of the pool
    strategy: str = "score+random"  # paper default; or "score-only", "score+diverse"
    num_bins: int = 10  # paper: 10 equal-count length bins
    # ours: > 0 uses fewer bins when the score picks are few, so each bin gets this many (0: paper)
    min_per_bin: int = 0

    def __post_init__(self) -> None:
        b = self.budget
        _require(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b),
            f"selection.budget must be a finite number, got {b!r}",
        )
        _require(b > 0, f"selection.budget must be > 0, got {b}")
        _require(b < 1 or float(b).is_integer(), f"selection.budget >= 1 must be whole, got {b}")
        _require(self.strategy in STRATEGIES, f"selection.strategy must be one of {STRATEGIES}")
        _require(
            isinstance(self.num_bins, int) and self.num_bins >= 1,
            f"selection.num_bins must be an integer >= 1, got {self.num_bins!r}",
        )
        _require(
            isinstance(self.min_per_bin, int) and self.min_per_bin >= 0,
            f"selection.min_per_bin must be an integer >= 0, got {self.min_per_bin!r}",
        )

    def resolve_budget(self, pool_size: int) -> int:
        """The budget as a row count for a pool of `pool_size` rows (a fraction rounds half up).

        Args:
            pool_size: number of rows in the pool.
        Returns:
            n, at least 1. It may exceed the pool; callers decide whether that is an error.
        """
        return rules.resolve_budget(self.budget, pool_size)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (peft). enabled=False means full fine-tuning."""

    enabled: bool = True  # paper: LoRA for every experiment
    rank: int = 8  # paper: 1 (NER, xlm-roberta-base) to 256 (Llama-3-8B); 8 is a middle default
    alpha: int = 32  # paper
    dropout: float = 0.2  # paper
    target_modules: str | tuple[str, ...] = "all-linear"  # ours: every linear layer but the head

    def __post_init__(self) -> None:
        _require(isinstance(self.enabled, bool), "lora.enabled must be a bool")
        _require(isinstance(self.rank, int) and self.rank >= 1, "lora.rank must be an int >= 1")
        _require(isinstance(self.alpha, int) and self.alpha >= 1, "lora.alpha must be an int >= 1")
        _require(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")
        tm = self.target_modules
        ok = (isinstance(tm, str) and bool(tm)) or (
            isinstance(tm, tuple) and bool(tm) and all(isinstance(t, str) and t for t in tm)
        )
        _require(ok, "lora.target_modules must be a non-empty string or tuple of strings")


@dataclass(frozen=True)
class ToVConfig:
    """The Train-on-Validation trajectory (Algorithm 1) and its scoring."""

    base_size: int | None = None  # |U|; None = n/2 (paper), at least 1, at most half the pool
    rounds: int | None = None  # L; None = clamp(16384 // |U|, 1, 8) (paper rule, capped by us)
    variant: str = "A"  # "A" interleaved (paper default, better on LLMs) or "B" parallel
    val_lr_factor: float = 0.1  # epsilon (paper)
    learning_rate: float = rules.DEFAULT_LEARNING_RATE  # ours: constant eta (paper: constant)
    batch_size: int = 16  # paper
    score_fn: str = "improvement"  # paper default; "absolute" or "positive"
    lora: LoraSettings = field(default_factory=LoraSettings)  # paper: LoRA alpha 32, dropout 0.2
    tokens_per_batch: int = 8192  # ours: padded-token budget of one scoring batch
    # ours: padded-token budget of one training micro-batch; a batch_size batch is split into
    # micro-batches under it, gradients accumulate, one optimizer step per batch
    # (model/train_memory.py)
    train_tokens_per_micro_batch: int = 4096
    # ours: how a token-classification row's token scores reduce (scoring.py); causal LM: mean
    token_score: str = "class_balanced"

    def __post_init__(self) -> None:
        bs = self.base_size
        _require(bs is None or (isinstance(bs, int) and bs >= 1), "tov.base_size must be >= 1")
        r = self.rounds
        _require(r is None or (isinstance(r, int) and r >= 1), "tov.rounds must be an int >= 1")
        _require(self.variant in VARIANTS, f"tov.variant must be one of {VARIANTS}")
        _require(self.val_lr_factor > 0, "tov.val_lr_factor must be > 0")
        _require(self.learning_rate > 0, "tov.learning_rate must be > 0")
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            "tov.batch_size must be an int >= 1",
        )
        _require(self.score_fn in SCORE_FNS, f"tov.score_fn must be one of {SCORE_FNS}")
        _require(isinstance(self.lora, LoraSettings), "tov.lora must be a LoraSettings")
        _require(
            isinstance(self.tokens_per_batch, int) and self.tokens_per_batch >= 1,
            "tov.tokens_per_batch must be an int >= 1",
        )
        m = self.train_tokens_per_micro_batch
        _require(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1,
            f"tov.train_tokens_per_micro_batch must be an int >= 1, got {m!r}",
        )
        _require(
            self.token_score in TOKEN_SCORES,
            f"tov.token_score must be one of {TOKEN_SCORES}, got {self.token_score!r}",
        )

    def resolve_base_size(self, budget: int, pool_size: int) -> int:
        """|U| for this pool: the configured size, else half the budget, within [1, pool/2].

        Args:
            budget: n as a row count.
            pool_size: N.
        Returns:
            |U|.
        """
        return rules.resolve_base_size(self.base_size, budget, pool_size)

    def resolve_rounds(self, base_size: int) -> int:
        """L: the configured value, else the paper rule capped at MAX_DEFAULT_ROUNDS."""
        return rules.resolve_rounds(self.rounds, base_size)


@dataclass(frozen=True)
class LessSettings:
    """The LESS baseline (Xia et al. 2024)."""

    warmup_fraction: float = 0.05  # LESS: warm up on a random 5% of the pool
    epochs: int = 4  # LESS: 4 warmup epochs, one checkpoint per epoch
    projection_dim: int = 8192  # LESS: 8192; capped by the number of trainable LoRA parameters

    def __post_init__(self) -> None:
        _require(0 < self.warmup_fraction <= 1, "less.warmup_fraction must be in (0, 1]")
        _require(isinstance(self.epochs, int) and self.epochs >= 1, "less.epochs must be >= 1")
        _require(
            isinstance(self.projection_dim, int) and self.projection_dim >= 1,
            "less.projection_dim must be an int >= 1",
        )


@dataclass(frozen=True)
class JobConfig:
    """One selection job."""

    task: str = "causal_lm"  # or "token_classification"
    method: str = "tov"  # or the baselines "random" | "uncertainty" | "less"
    tov: ToVConfig = field(default_factory=ToVConfig)  # also used by "uncertainty" (theta_bas on U)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    seed: int = 0  # seeds U, data order, dropout, LoRA init and the random half
    max_length: int = 512  # ours: tokens per row; longer rows lose their prompt's start first
    device: str | None = None  # None = cuda if available else cpu
    less: LessSettings = field(default_factory=LessSettings)  # used only by method "less"
    # ours: "auto" = bfloat16 base weights on a bf16-capable GPU, float32 elsewhere (precision.py)
    precision: str = "auto"
    deterministic: bool = True  # ours: deterministic algorithms (identical results on a GPU too)
    # ours: recompute activations in the backward instead of keeping them, in training passes
    # only; "auto" = on with CUDA, off on CPU, where it costs ~30% training time
    # (model/train_memory.py)
    gradient_checkpointing: str = "auto"

    def __post_init__(self) -> None:
        _require(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        _require(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        _require(isinstance(self.tov, ToVConfig), "tov must be a ToVConfig")
        _require(isinstance(self.selection, SelectionConfig), "selection must be a SelectionConfig")
        _require(isinstance(self.less, LessSettings), "less must be a LessSettings")
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"seed must be an int >= 0, got {self.seed!r}",
        )
        _require(
            isinstance(self.max_length, int) and self.max_length >= 2,
            f"max_length must be an int >= 2, got {self.max_length!r}",
        )
        d = self.device
        _require(
            d is None or (isinstance(d, str) and d.split(":")[0] in ("cpu", "cuda", "mps")),
            f"device must be None, 'cpu', 'cuda[:i]' or 'mps', got {d!r}",
        )
        _require(
            self.precision in PRECISIONS,
            f"precision must be one of {PRECISIONS}, got {self.precision!r}",
        )
        _require(
            isinstance(self.deterministic, bool),
            f"deterministic must be a bool, got {self.deterministic!r}",
        )
        _require(
            self.gradient_checkpointing in GRADIENT_CHECKPOINTING,
            f"gradient_checkpointing must be one of {GRADIENT_CHECKPOINTING}, "
            f"got {self.gradient_checkpointing!r}",
        )


@dataclass(frozen=True)
class VerifySettings:
    """How a selection is verified. The recipe is fixed so verifications compare across jobs;
    it matches the quality benchmark's fine-tuning recipe (benchmarks/quality/jobs.py)."""

    holdout: float = 0.25  # share of the validation rows held out of selection
    seeds: int = 2  # fine-tuning seeds per arm; the spread of the improvement is over these
    epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 1e-3  # the middle of the quality benchmark's LR grid
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:
        if not (isinstance(self.holdout, int | float) and 0 < self.holdout < 1):
            raise ValueError(f"verify.holdout must be in (0, 1), got {self.holdout!r}")
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= 10):
            raise ValueError(f"verify.seeds must be an integer from 1 to 10, got {self.seeds!r}")
        for name in ("epochs", "batch_size", "lora_rank", "lora_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"verify.{name} must be an integer >= 1, got {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"verify.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"verify.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
