"""Engine test helpers: small thread count, dataset writers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(2)  # the test machines are shared; more threads only add contention

WriteRows = Callable[[str, Iterable[Any]], Path]


@pytest.fixture
def write_jsonl(tmp_path: Path) -> WriteRows:
    """Write rows (dicts, or raw strings written as-is) to tmp_path/name, one per line."""

    def write(name: str, rows: Iterable[Any]) -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write
