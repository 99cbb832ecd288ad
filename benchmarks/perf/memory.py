"""Peak resident memory of a whole ToV job as the pool grows, each size in a fresh process.

    python -m benchmarks.perf.memory --model DIR --pool FILE --validation FILE
prints one JSON line: {"rows", "peak_rss_mb", "rss_after_imports_mb"}.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path


def _rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not getrusage's ru_maxrss: on Linux ru_maxrss keeps the
    parent's RSS at fork across exec, so a child of a big benchmark process would report that."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    args = parser.parse_args()
    import torch
    import transformers  # noqa: F401  (counted in the baseline, not in the growth)

    from tov_engine import JobConfig, SelectionConfig, ToVConfig, run_selection

    torch.set_num_threads(2)
    baseline = _rss_mb()
    config = JobConfig(
        device="cpu",
        tov=ToVConfig(rounds=1, base_size=64, batch_size=16),
        selection=SelectionConfig(budget=0.1),
    )
    with tempfile.TemporaryDirectory(prefix="tov-perf-mem-") as cache:
        out = run_selection(
            pool_path=args.pool,
            validation_path=args.validation,
            model=args.model,
            config=config,
            cache_dir=cache,
        )
    json.dump(
        {
            "rows": int(out.stats["rows"]),
            "loss_tokens": int(out.stats["loss_tokens"]),
            "peak_rss_mb": _rss_mb(),
            "rss_after_imports_mb": baseline,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
