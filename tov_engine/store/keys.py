"""The one fingerprint of the engine's stores: a stable sha256 of what determines their contents.

Checkpoint folders (manifest.json) and pool-cache entries (their names and manifests) are keyed by
`fingerprint` of the parts their contents depend on; a changed part gives a new key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Bump when a cache entry's layout or the numerics behind it change (3: keys from `fingerprint`;
# 4: long rows keep their response, the prompt cut from the left).
CACHE_FORMAT = 4


def fingerprint(*parts: Any, kind: str | None = None) -> str:
    """A stable sha256 of the parts' reprs, after `kind` (what the key is of) when given."""
    head = [] if kind is None else [kind]
    return hashlib.sha256(json.dumps(head + [repr(p) for p in parts]).encode()).hexdigest()


def model_identity(model: str | Path) -> dict[str, Any]:
    """What identifies a local model folder cheaply: its path and every file's size and mtime.

    Hashing the weights of an 8B model would cost seconds a job; a file rewritten in place changes
    its mtime, which is enough to invalidate entries built from the old files.
    """
    root = Path(model).resolve()
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    )
    return {"path": str(root), "files": files}
