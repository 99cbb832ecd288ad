"""tov_engine: Train-on-Validation data selection (arXiv 2510.00386) as a plain library.

Importing the package is cheap and torch-free; torch and transformers load when a run starts.
"""

import importlib
from typing import Any

from tov_engine.config import JobConfig, LessSettings, LoraSettings, SelectionConfig, ToVConfig
from tov_engine.data.files import DatasetInfo, inspect_dataset, read_rows
from tov_engine.errors import (
    Cancelled,
    CheckpointError,
    ConfigError,
    DataError,
    EngineError,
    InsufficientMemory,
    ModelError,
)
from tov_engine.job import SelectionOutcome
from tov_engine.leakage import Leak, LeakageConfig, select_excluding
from tov_engine.progress import ProgressCallback, ProgressEvent
from tov_engine.run import run_multi_target, run_selection
from tov_engine.selection import Selection, select

# Heavy names (they import torch) load on first use, so `import tov_engine` stays cheap.
_LAZY = {
    "Shard": "tov_engine.methods.tov.staged",
    "StagedToV": "tov_engine.methods.tov.staged",
    "prepare_staged": "tov_engine.methods.tov.staged",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tov_engine' has no attribute {name!r}")


def preload() -> None:
    """Import the ML stack and every method's modules now (a worker does it before forking)."""
    from tov_engine.methods import MODULES

    for module in ("torch", "transformers", "peft", *MODULES):
        importlib.import_module(module)


__all__ = [
    "Cancelled",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetInfo",
    "EngineError",
    "InsufficientMemory",
    "JobConfig",
    "Leak",
    "LeakageConfig",
    "LessSettings",
    "LoraSettings",
    "ModelError",
    "ProgressCallback",
    "ProgressEvent",
    "Selection",
    "SelectionConfig",
    "SelectionOutcome",
    "Shard",
    "StagedToV",
    "ToVConfig",
    "inspect_dataset",
    "preload",
    "prepare_staged",
    "read_rows",
    "run_multi_target",
    "run_selection",
    "select",
    "select_excluding",
]
