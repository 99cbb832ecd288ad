"""tov_plan: plans about a job made before anything loads.

Both the API and the engine import it: it knows no torch, no service and no engine. `memory` is
standard library only; the dry run (`tokens`, `plan`, `cache`, `cost`, `estimate`) adds numpy,
`tokenizers` and jinja2.
"""

from tov_plan.memory import (
    Advice,
    MemoryEstimate,
    Workload,
    estimate_peak_memory,
    model_shape,
    refusal_message,
)

__all__ = [
    "Advice",
    "MemoryEstimate",
    "Workload",
    "estimate_peak_memory",
    "model_shape",
    "refusal_message",
]
