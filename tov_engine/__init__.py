"""tov_engine: Train-on-Validation data selection (arXiv 2510.00386) as a plain library.

Importing the package is cheap and torch-free; torch and transformers load when a run starts.
"""

from tov_engine.config import JobConfig, LessSettings, LoraSettings, SelectionConfig, ToVConfig
from tov_engine.data import DatasetInfo, inspect_dataset, read_rows
from tov_engine.errors import (
    Cancelled,
    CheckpointError,
    ConfigError,
    DataError,
    EngineError,
    ModelError,
)
from tov_engine.multi import run_multi_target
from tov_engine.progress import ProgressCallback, ProgressEvent
from tov_engine.runner import SelectionOutcome, run_selection
from tov_engine.selection import Selection, select

__all__ = [
    "Cancelled",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetInfo",
    "EngineError",
    "JobConfig",
    "LessSettings",
    "LoraSettings",
    "ModelError",
    "ProgressCallback",
    "ProgressEvent",
    "Selection",
    "SelectionConfig",
    "SelectionOutcome",
    "ToVConfig",
    "inspect_dataset",
    "read_rows",
    "run_multi_target",
    "run_selection",
    "select",
]
